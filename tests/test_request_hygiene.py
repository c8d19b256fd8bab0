"""What a hostile client must not get out of the service with cheap requests.

- a validation error list is capped (the first 20, plus how many more), so a 64 KB body of
  unknown keys cannot buy a 338 KB answer;
- several Authorization fields are ambiguous (which one did a proxy check?): 400;
- generated request ids are 128 random bits, telling nothing about how many requests a
  worker has served;
- an X-Forwarded-For hop reaches the access log only when it is an IP address.
"""

from __future__ import annotations

import itertools
import re
import subprocess
import sys

import pytest
from multidict import CIMultiDict

from service.app import create_app
from service.observability.request_ids import RequestIds
from service.settings.loading import load_settings
from tests.helpers import ROOT
from tests.helpers.api import checked
from tests.helpers.app import AiohttpClient, Client, access_lines, json_log_app
from tests.helpers.http import exchange

# The subject is the HTTP layer, not the database driver: one run, on the first driver.
pytestmark = pytest.mark.one_driver

WRITER = "writer-token-0123456789"


async def test_the_validation_error_list_is_capped(client: Client) -> None:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    keys = [digits[n // 1296] + digits[n // 36 % 36] + digits[n % 36] for n in range(7600)]
    body = ("{" + ",".join(f'"{key}":0' for key in keys) + "}").encode()
    assert len(body) < 64 * 1024
    response = await client.post("/users", data=body, headers={"Content-Type": "application/json"})
    assert response.status == 400
    raw = await response.read()
    assert len(raw) < 8 * 1024
    problem = await checked(response, "POST", "/users")
    assert len(problem["errors"]) == 20
    total = 7600 + 2  # every unknown key, and the two required fields missing
    assert problem["errors_omitted"] == total - 20
    assert f"{total - 20} more" in problem["detail"]
    few = await client.post("/users", json={"name": 1, "email": 2})
    few_problem = await checked(few, "POST", "/users")
    assert len(few_problem["errors"]) == 2
    assert "errors_omitted" not in few_problem


async def test_several_authorization_headers_are_refused(
    aiohttp_client: AiohttpClient, test_env: dict[str, str]
) -> None:
    app = create_app(load_settings({**test_env, "API_TOKENS": WRITER}))
    client = await aiohttp_client(app)
    port = client.port
    assert port is not None
    body = b'{"name": "Ada", "email": "ada@example.com"}'
    for second in (f"Bearer {WRITER}", "Bearer not-the-token-at-all", "Basic YTpi"):
        headers = [
            ("Authorization", f"Bearer {WRITER}"),
            ("Authorization", second),
            ("Content-Type", "application/json"),
        ]
        response = await exchange(port, "POST", "/users", headers, body)
        assert response.status == 400, second
        assert response.headers["Content-Type"] == "application/problem+json"
        assert b"Authorization" in response.body
    via_client = await client.post(
        "/users",
        data=body,
        headers=CIMultiDict(
            [
                ("Authorization", f"Bearer {WRITER}"),
                ("Authorization", f"Bearer {WRITER}"),
                ("Content-Type", "application/json"),
            ]
        ),
    )
    assert via_client.status == 400
    await checked(via_client, "POST", "/users")
    assert (await client.get("/users")).status == 200  # nothing was created
    assert (await (await client.get("/users")).json())["items"] == []
    one = await client.post(
        "/users",
        data=body,
        headers={"Authorization": f"Bearer {WRITER}", "Content-Type": "application/json"},
    )
    assert one.status == 201


def test_generated_request_ids_are_random() -> None:
    ids = RequestIds()
    fresh = [ids.fresh() for _ in range(2000)]
    assert all(re.fullmatch(r"[0-9a-f]{32}", rid) for rid in fresh)
    assert len(set(fresh)) == len(fresh)
    # No shared prefix and no counter: neighbours agree in about 1/16 of their digits.
    for a, b in itertools.pairwise(fresh):
        assert a[:8] != b[:8]
        assert abs(int(a, 16) - int(b, 16)) > 2**64
    ones = sum(bin(int(rid, 16)).count("1") for rid in fresh)
    assert 0.45 < ones / (128 * len(fresh)) < 0.55  # about half the bits set


_FORK_SCENARIO = """
import os
from service.observability.request_ids import RequestIds
ids = RequestIds()
ids.fresh()  # the parent has drawn a batch; the rest of it is the parent's to hand out
read, write = os.pipe()
pid = os.fork()
if pid == 0:
    os.write(write, ids.fresh().encode())
    os._exit(0)
os.close(write)
with os.fdopen(read) as pipe:
    child = pipe.read()
os.waitpid(pid, 0)
print(child, ids.fresh())
"""


def test_a_forked_child_does_not_hand_out_its_parents_next_ids() -> None:
    """In an interpreter of its own: forking pytest's threaded process could deadlock."""
    result = subprocess.run(
        [sys.executable, "-c", _FORK_SCENARIO], capture_output=True, text=True, check=True,
        timeout=30, cwd=ROOT,
    )  # fmt: skip
    child, parent = result.stdout.split()
    assert re.fullmatch(r"[0-9a-f]{32}", child)
    assert child != parent


async def test_request_ids_in_responses_share_no_prefix(client: Client) -> None:
    seen = [(await client.get("/health/live")).headers["X-Request-ID"] for _ in range(5)]
    assert len({rid[:16] for rid in seen}) == 5


async def test_forwarded_for_reaches_the_log_only_as_an_address(
    aiohttp_client: AiohttpClient, test_env: dict[str, str]
) -> None:
    settings = load_settings({**test_env, "TRUSTED_PROXIES": "127.0.0.1,10.0.0.0/8"})
    app = json_log_app(settings)
    client = await aiohttp_client(app)
    cases = {
        "203.0.113.9, 10.0.0.7": "203.0.113.9",
        "2001:db8::1": "2001:db8::1",
        "<script>alert(1)</script>": "127.0.0.1",
        "evil text, 10.0.0.7": "10.0.0.7",  # the nearest proxy we trust saw that much
        "203.0.113.9 injected=1, 10.0.0.7": "10.0.0.7",
        "203.0.113.9:4711": "127.0.0.1",
        " , ,": "127.0.0.1",
    }
    for forwarded in cases:
        response = await client.get("/health/live", headers={"X-Forwarded-For": forwarded})
        assert response.status == 200
    remotes = [line["remote"] for line in access_lines(app)]
    assert remotes == list(cases.values())
