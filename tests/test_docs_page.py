"""GET /docs in a real browser: Debian's headless Chromium, driven over the DevTools protocol.

The page must render every documented operation from files the service serves itself
(no request leaves 127.0.0.1), run without a script error or a CSP violation, and a
"Try it out" GET must come back 200. The screenshot lands in the test's temporary
directory; SAVE_SCREENSHOTS=1 also writes tests/screenshots/docs.png, the one the README
shows.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from base64 import b64decode
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.helpers import ROOT
from tests.helpers.api import DOCUMENT
from tests.helpers.servers import terminate
from tests.helpers.service import ServiceProcess
from tests.helpers.tools import require_command

# The subject is the HTTP layer, not the database driver: one run, on the first driver.
pytestmark = pytest.mark.one_driver

SCREENSHOT = ROOT / "tests" / "screenshots" / "docs.png"
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
    "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
    "--window-size=1280,1700", "--hide-scrollbars",
)  # fmt: skip
WAIT_SECONDS = 60.0  # generous: two cores shared with the rest of the suite


class DevTools:
    """One page's DevTools session: commands by id, events kept for the test to read."""

    def __init__(self, socket: aiohttp.ClientWebSocketResponse) -> None:
        self._socket = socket
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.events: list[dict[str, Any]] = []
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for message in self._socket:
            data = json.loads(message.data)
            future = self._waiting.pop(data.get("id", 0), None)
            if future is not None:
                future.set_result(data)
            elif "method" in data:
                self.events.append(data)

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        ident = next(self._ids)
        future = self._waiting[ident] = asyncio.get_running_loop().create_future()
        await self._socket.send_str(json.dumps({"id": ident, "method": method, "params": params}))
        reply = await asyncio.wait_for(future, WAIT_SECONDS)
        assert "error" not in reply, reply
        result: dict[str, Any] = reply["result"]
        return result

    async def evaluate(self, expression: str) -> Any:
        result = await self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        assert "exceptionDetails" not in result, result
        return result["result"].get("value")

    async def wait_for(self, expression: str, what: str) -> Any:
        """Poll a page expression until it is truthy; fail naming what never appeared."""
        deadline = asyncio.get_running_loop().time() + WAIT_SECONDS
        while True:
            value = await self.evaluate(expression)
            if value:
                return value
            if asyncio.get_running_loop().time() > deadline:
                pytest.fail(f"{what} did not appear within {WAIT_SECONDS}s")
            await asyncio.sleep(0.2)

    async def close(self) -> None:
        self._reader.cancel()
        await self._socket.close()


@pytest.fixture
def service(tmp_path: Path, test_env: dict[str, str]) -> Iterator[ServiceProcess]:
    """The service with a few demo users, so "Try it out" shows a real page of them."""
    server = ServiceProcess(tmp_path / "service", {**test_env, "DOCS_ENABLED": "true"})
    subprocess.run(
        [sys.executable, "-m", "service", "seed", "--users", "3", "--orders-per-user", "1"],
        cwd=ROOT, env=server.env, check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    server.start()
    yield server
    server.stop()


@pytest.fixture
def devtools_port(tmp_path: Path) -> Iterator[int]:
    """A headless Chromium with a fresh profile; its DevTools port on 127.0.0.1."""
    profile = tmp_path / "chromium-profile"
    log_path = tmp_path / "chromium.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                require_command("chromium", "chromium"),
                *CHROMIUM_FLAGS,
                f"--user-data-dir={profile}",
                "about:blank",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        port_file = profile / "DevToolsActivePort"  # "port\npath", written once listening
        deadline = time.monotonic() + WAIT_SECONDS
        while not (port_file.is_file() and port_file.read_text().count("\n") >= 1):
            assert process.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, "chromium never opened its DevTools port"
            time.sleep(0.1)
        yield int(port_file.read_text().splitlines()[0])
    finally:
        terminate(process, timeout=20)


@pytest.fixture
async def browser(devtools_port: int) -> AsyncIterator[DevTools]:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{devtools_port}/json/list") as reply:
            targets = await reply.json(content_type=None)
        page = next(target for target in targets if target["type"] == "page")
        socket = await session.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0)
        devtools = DevTools(socket)
        yield devtools
        await devtools.close()


_OPERATIONS = """[...document.querySelectorAll('.opblock')].map(block => [
    block.querySelector('.opblock-summary-method').textContent.trim(),
    block.querySelector('.opblock-summary-path').getAttribute('data-path')])"""
_BLOCK = "document.querySelector('#operations-users-list_users')"
_STATUS = f"{_BLOCK}.querySelector('.live-responses-table tr.response .response-col_status')"


async def test_the_docs_page_lists_every_operation_and_tries_one(
    service: ServiceProcess, browser: DevTools, tmp_path: Path
) -> None:
    for domain in ("Page", "Runtime", "Network", "Log"):
        await browser.send(f"{domain}.enable")
    await browser.send("Page.navigate", url=f"{service.url}/docs")
    expected = {
        (method.upper(), path) for path, item in DOCUMENT["paths"].items() for method in item
    }
    await browser.wait_for(
        f"document.querySelectorAll('.opblock').length >= {len(expected)}", "every operation"
    )
    rendered = {tuple(pair) for pair in await browser.evaluate(_OPERATIONS)}
    assert rendered == expected

    # "Try it out" on GET /users: expand, switch to editing, execute, read the status.
    await browser.evaluate(f"{_BLOCK}.querySelector('.opblock-summary-control').click()")
    await browser.wait_for(f"!!{_BLOCK}.querySelector('.try-out__btn')", "Try it out")
    await browser.evaluate(f"{_BLOCK}.querySelector('.try-out__btn').click()")
    await browser.wait_for(f"!!{_BLOCK}.querySelector('.execute')", "the Execute button")
    await browser.evaluate(f"{_BLOCK}.querySelector('.execute').click()")
    status = await browser.wait_for(f"{_STATUS} && {_STATUS}.textContent.trim()", "a response")
    assert status == "200"

    # The examples are the document's, not ones Swagger UI makes up from a pattern ("^A$").
    create = "document.querySelector('#operations-users-create_user')"
    await browser.evaluate(f"{create}.querySelector('.opblock-summary-control').click()")
    await browser.wait_for(
        f"{create}.innerText.includes('ada@example.com')", "the request body example"
    )
    shown = await browser.evaluate(f"{create}.innerText")
    assert '"id": "01ke6qvwe0mthc792r014fr2"' in shown  # the 201 example, a real id
    assert "2026-01-05T09:30:00.000Z" in shown
    await browser.evaluate(f"{create}.querySelector('.opblock-summary-control').click()")

    screenshot = b64decode((await browser.send("Page.captureScreenshot", format="png"))["data"])
    (tmp_path / "docs.png").write_bytes(screenshot)
    if os.environ.get("SAVE_SCREENSHOTS"):
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        SCREENSHOT.write_bytes(screenshot)

    requested = [
        event["params"]["request"]["url"]
        for event in browser.events
        if event["method"] == "Network.requestWillBeSent"
    ]
    assert requested, "the browser made no requests"
    outside = [url for url in requested if not url.startswith((service.url, "data:"))]
    assert outside == [], "the page fetched from outside the service"
    errors = [
        event["params"]
        for event in browser.events
        if event["method"] == "Runtime.exceptionThrown"
        or (event["method"] == "Log.entryAdded" and event["params"]["entry"]["level"] == "error")
    ]
    assert errors == []


def test_docs_are_off_unless_enabled(tmp_path: Path, test_env: dict[str, str]) -> None:
    """Production turns the page off by default; the route is then not there at all."""
    env = {
        **test_env, "SERVICE_ENV": "production", "API_TOKENS": "a-long-enough-write-token",
        "CACHE_BACKEND": "none", "METRICS_PORT": "0",
    }  # fmt: skip
    server = ServiceProcess(tmp_path / "service", env)
    server.start()
    try:
        for path in ("/docs", "/docs/swagger-ui.css"):
            with pytest.raises(urllib.error.HTTPError) as caught:
                urllib.request.urlopen(f"{server.url}{path}", timeout=10)  # noqa: S310 - http
            assert caught.value.code == 404
    finally:
        server.stop()
