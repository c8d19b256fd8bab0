"""GET /openapi.json, the document built once at start-up from the route table; and GET
/docs, Swagger UI for it, every file served by the service itself.

The Swagger UI files come from the pinned `swagger-ui-bundle-v2` wheel (its version is the
Swagger UI version), so the page works without the internet and changes only when the pin
does. Only the few files the page loads are served, by name; the page's own start-up
script is a file too, so the Content-Security-Policy can forbid inline scripts.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web
from swagger_ui_bundle import swagger_ui_path

from service.domain.errors import NotFound
from service.http.responses import raw_json_response

OPENAPI_DOCUMENT = web.AppKey("openapi_document", bytes)

# URLs are relative, so the page also works behind a proxy that adds a path prefix.
_PAGE = b"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>user-service API</title>
<link rel="stylesheet" href="docs/swagger-ui.css">
<link rel="icon" type="image/png" href="docs/favicon-32x32.png">
</head>
<body>
<div id="swagger-ui"></div>
<script src="docs/swagger-ui-bundle.js"></script>
<script src="docs/start.js"></script>
</body>
</html>
"""
# validatorUrl: null, or Swagger UI would send the document to a public validator.
_START = b"""window.ui = SwaggerUIBundle({
  url: "openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  displayRequestDuration: true,
  persistAuthorization: false,
  validatorUrl: null,
});
"""
_CONTENT_TYPES = {
    "swagger-ui.css": "text/css",
    "swagger-ui-bundle.js": "text/javascript",
    "favicon-32x32.png": "image/png",
    "favicon-16x16.png": "image/png",
}
# Swagger UI sets style attributes, hence 'unsafe-inline' for styles only.
_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
_REVALIDATE = {"Cache-Control": "no-cache"}  # cheap 304s, and a new pin shows at once


async def document(request: web.Request) -> web.Response:
    return raw_json_response(request.app[OPENAPI_DOCUMENT])


async def page(request: web.Request) -> web.Response:
    return web.Response(
        body=_PAGE,
        content_type="text/html",
        charset="utf-8",
        headers={**_REVALIDATE, "Content-Security-Policy": _POLICY},
    )


async def asset(request: web.Request) -> web.StreamResponse:
    name = request.match_info["asset"]
    if name == "start.js":
        return web.Response(body=_START, content_type="text/javascript", headers=_REVALIDATE)
    content_type = _CONTENT_TYPES.get(name)
    if content_type is None:
        raise NotFound("No such documentation file.")
    path = Path(str(swagger_ui_path)) / name
    return web.FileResponse(path, headers={**_REVALIDATE, "Content-Type": content_type})


def prune_unserved_assets(directory: Path | None = None) -> list[str]:
    """Delete the Swagger UI files this page never serves (source maps and the other
    bundles, about 10 MB): the image build calls it, to keep the image its size."""
    folder = directory or Path(str(swagger_ui_path))
    removed = []
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.name not in _CONTENT_TYPES:
            path.unlink()
            removed.append(path.name)
    return removed
