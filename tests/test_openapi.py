"""The OpenAPI document, judged by a real validator and by what the service really answers.

`python -m service openapi` prints the document for the configuration it runs with (no
server, no database), `openapi-spec-validator` must accept it, and it must declare what
the running service does: the 401 of protected reads, the response headers, formats,
examples and the links between operations.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from service.app import create_app
from service.http.openapi import build_document
from service.http.routes import ENDPOINTS
from service.settings.loading import load_settings
from tests.helpers.app import AiohttpClient, ready_client
from tests.helpers.servers import VENV_BIN
from tests.helpers.service import run_service

TOKEN = "openapi-writer-token-0123456789"
CONFIGURATIONS = {
    "open": {},
    "write tokens": {"API_TOKENS": TOKEN},
    "read and write tokens": {"API_TOKENS": TOKEN, "AUTH_READS": "true"},
}


def printed_document(env: dict[str, str]) -> dict[str, Any]:
    result = run_service({**os.environ, "SERVICE_ENV": "test", **env}, "openapi", timeout=60)
    assert result.returncode == 0, result.stderr
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def _operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
    ]


@pytest.mark.parametrize("env", CONFIGURATIONS.values(), ids=CONFIGURATIONS)
def test_the_printed_document_passes_openapi_spec_validator(
    env: dict[str, str], tmp_path: Path
) -> None:
    document = printed_document(env)
    path = tmp_path / "openapi.json"
    path.write_text(json.dumps(document))
    result = subprocess.run(
        [str(VENV_BIN / "openapi-spec-validator"), str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK" in result.stdout


async def test_the_printed_document_is_the_one_served(
    aiohttp_client: AiohttpClient, test_env: dict[str, str]
) -> None:
    env = {**test_env, "API_TOKENS": TOKEN, "AUTH_READS": "true"}
    client = await ready_client(aiohttp_client, create_app(load_settings(env)))
    served = await (await client.get("/openapi.json")).json()
    assert served == printed_document(env)


async def test_protected_reads_declare_their_401(
    aiohttp_client: AiohttpClient, test_env: dict[str, str]
) -> None:
    """AUTH_READS=true: the 401 a read answers without a token is in the document."""
    env = {**test_env, "API_TOKENS": TOKEN, "AUTH_READS": "true"}
    app: web.Application = create_app(load_settings(env))
    client = await ready_client(aiohttp_client, app)
    document = await (await client.get("/openapi.json")).json()
    for path in ("/users", "/users/someone", "/users/someone/orders", "/orders/some"):
        response = await client.get(path)
        assert response.status == 401
        template = path.replace("someone", "{user_id}").replace("some", "{order_id}")
        operation = document["paths"][template]["get"]
        assert "401" in operation["responses"], template
        assert operation["security"] == [{"bearer": []}]
        assert "WWW-Authenticate" in operation["responses"]["401"]["headers"]
    assert "bearer" in document["components"]["securitySchemes"]
    for probe in ("/health/live", "/health/ready"):
        assert "security" not in document["paths"][probe]["get"]
        assert "401" not in document["paths"][probe]["get"]["responses"]


def test_security_follows_the_configuration() -> None:
    def document(env: dict[str, str]) -> dict[str, Any]:
        return build_document(ENDPOINTS, load_settings({"SERVICE_ENV": "test", **env}))

    open_, writes, everything = (document(env) for env in CONFIGURATIONS.values())
    assert "securitySchemes" not in open_["components"]
    assert all("security" not in op for _, _, op in _operations(open_))
    assert all("401" not in op["responses"] for _, _, op in _operations(open_))
    for doc, reads_protected in ((writes, False), (everything, True)):
        for method, path, operation in _operations(doc):
            protected = not path.startswith("/health/") and (method != "GET" or reads_protected)
            assert ("security" in operation) == protected, (method, path)
            assert ("401" in operation["responses"]) == protected, (method, path)
            assert ("403" in operation["responses"]) == (protected and method != "GET")


def _header_names(response: dict[str, Any]) -> set[str]:
    return set(response.get("headers", {}))


def test_response_headers_are_declared() -> None:
    document = build_document(ENDPOINTS, load_settings({"SERVICE_ENV": "test"}))
    paths = document["paths"]
    for _, _, operation in _operations(document):
        for status, response in operation["responses"].items():
            assert "X-Request-ID" in _header_names(response), (operation["operationId"], status)
            if status == "503":
                assert "Retry-After" in _header_names(response)
    for path, method in (("/users", "post"), ("/users/{user_id}/orders", "post")):
        assert "Location" in _header_names(paths[path][method]["responses"]["201"])
    for path, method in (
        ("/users/{user_id}", "get"),
        ("/users/{user_id}", "patch"),
        ("/orders/{order_id}", "get"),
    ):
        assert "ETag" in _header_names(paths[path][method]["responses"]["200"])
    assert "ETag" in _header_names(paths["/users/{user_id}"]["get"]["responses"]["304"])
    for name, header in document["components"]["headers"].items():
        assert header["schema"]["examples"], name


def _properties(schema: dict[str, Any]) -> dict[str, dict[str, Any]]:
    properties: dict[str, dict[str, Any]] = schema.get("properties", {})
    return properties


def test_timestamps_are_date_times_and_every_scalar_has_an_example() -> None:
    document = build_document(ENDPOINTS, load_settings({"SERVICE_ENV": "test"}))
    components = document["components"]["schemas"]
    for kind in ("User", "Order"):
        for field in ("created_at", "updated_at"):
            if field in _properties(components[kind]):
                assert _properties(components[kind])[field]["format"] == "date-time"
    for kind, schema in components.items():
        for name, prop in _properties(schema).items():
            if prop.get("type") in ("string", "integer"):
                assert prop.get("examples"), f"{kind}.{name} has no example"
    for _, _, operation in _operations(document):
        for parameter in operation["parameters"]:
            if parameter["in"] == "path":
                assert parameter["schema"]["examples"][0].isalnum()


def test_links_lead_from_create_to_get_patch_and_orders() -> None:
    document = build_document(ENDPOINTS, load_settings({"SERVICE_ENV": "test"}))
    ids = {op["operationId"] for _, _, op in _operations(document)}
    created = document["paths"]["/users"]["post"]["responses"]["201"]["links"]
    assert {link["operationId"] for link in created.values()} >= {
        "get_user", "patch_user", "create_order", "list_orders",
    }  # fmt: skip
    fetched = document["paths"]["/users/{user_id}"]["get"]["responses"]["200"]["links"]
    assert fetched["patch_user"]["parameters"]["header.If-Match"] == "$response.header.ETag"
    ordered = document["paths"]["/users/{user_id}/orders"]["post"]["responses"]["201"]["links"]
    assert ordered["get_order"]["parameters"] == {"order_id": "$response.body#/id"}
    for _, _, operation in _operations(document):
        for response in operation["responses"].values():
            for link in response.get("links", {}).values():
                assert link["operationId"] in ids
