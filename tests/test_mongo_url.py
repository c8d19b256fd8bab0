"""MONGO_URL as PyMongo reads it (service/settings/mongo_url.py): a URL PyMongo cannot use, or
an option the service refuses, stops start-up with one line naming MONGO_URL and exit code 2,
under `python -m service` and gunicorn, never showing the password; the URLs it accepts
reach a real server, over TLS with a client certificate, and through SRV and TXT records
served by a DNS server of the test's own (tests/helpers/netns.py)."""

from __future__ import annotations

import json
import os
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient
from pymongo.errors import ServerSelectionTimeoutError

from service.settings.loading import load_settings
from service.settings.model import ConfigError
from tests.helpers.netns import network_namespace
from tests.helpers.servers import MongoServer
from tests.helpers.service import ServiceProcess, run_service, service_command
from tests.helpers.tls import make_certificates, make_client_certificate

PASSWORD = "pw-Qm7Zt4"
# Never resolved: a name under .invalid has no DNS answer anywhere (RFC 6761), so accepting
# one shows that start-up looked nothing up.
NOWHERE = "cluster0.example.invalid"


def _refusal(url: str) -> str:
    with pytest.raises(ConfigError) as caught:
        load_settings({"SERVICE_ENV": "test", "MONGO_URL": url})
    message = str(caught.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    "url",
    [
        "mongodb://127.0.0.1:27017/?directConnection=true",
        f"mongodb://app:{PASSWORD}@db-0:27017,db-1:27017,db-2/users?replicaSet=rs0&authSource=admin",
        "mongodb://db/?replicaSet=rs0&w=majority&readConcernLevel=majority&wtimeoutMS=2000",
        "mongodb://db/?readPreference=primary&journal=true&w=2",
        "mongodb://db/?readPreferenceTags=",  # the empty tag set: any server, allowed with primary
        "mongodb://db/?retryWrites=true&retryReads=true",  # accepted; the service turns both off
        "mongodb://db:27017?tls=true&tlsAllowInvalidHostnames=false",
        f"mongodb+srv://{NOWHERE}",
        f"mongodb+srv://app:{PASSWORD}@{NOWHERE}/users?w=majority&readConcernLevel=majority",
        f"mongodb+srv://{NOWHERE}/?srvServiceName=mongo&srvMaxHosts=2&tls=false",
    ],
)
def test_urls_pymongo_takes_and_the_service_allows(url: str) -> None:
    assert load_settings({"SERVICE_ENV": "test", "MONGO_URL": url}).mongo.url == url


@pytest.mark.parametrize(
    ("url", "refused"),
    [
        ("mongodb://db/?readPreference=primaryPreferred", "readPreference=primaryPreferred"),
        ("mongodb://db/?readPreference=secondary", "readPreference=secondary"),
        ("mongodb://db/?readPreference=secondaryPreferred", "readPreference=secondaryPreferred"),
        ("mongodb://db/?readPreference=nearest&readPreferenceTags=dc:ny", "readPreference=nearest"),
        ("mongodb://db/?READPREFERENCE=nearest", "readPreference=nearest"),
        ("mongodb://db/?readPreferenceTags=dc:ny", "readPreferenceTags"),
        ("mongodb://db/?readPreferenceTags=dc:ny,rack:1&readPreferenceTags=", "readPreferenceTags"),
        ("mongodb://db/?w=0", "w=0"),
        ("mongodb://db/?W=0&wtimeoutMS=100", "w=0"),
        ("mongodb://db/?w=0&journal=true", "w=0"),  # PyMongo itself would refuse the pair
        ("mongodb://db/?journal=false", "journal=false"),
        ("mongodb://db/?w=majority&journal=false", "journal=false"),
        ("mongodb://db/?w=1&journal=false", "journal=false"),
        (f"mongodb+srv://{NOWHERE}/?readPreference=secondaryPreferred", "readPreference="),
        (f"mongodb+srv://{NOWHERE}/?w=0", "w=0"),
        (f"mongodb+srv://{NOWHERE}/?readPreferenceTags=dc:ny", "readPreferenceTags"),
    ],
)
def test_options_that_break_the_service_s_promises_are_refused_with_the_reason(
    url: str, refused: str
) -> None:
    message = _refusal(url)
    assert message.startswith(f"MONGO_URL: {refused}"), message
    assert " is refused: " in message
    if refused.startswith("read"):
        assert "primary only" in message
    elif refused == "w=0":
        assert "would still be answered as done" in message
    else:
        assert "can be lost" in message


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("mongodb://", "at least one hostname"),
        ("mongodb://db:abc", "Port contains non-digit"),
        ("mongodb://db:70000", "Port must be an integer"),
        ("http://db:27017", "URI scheme"),
        ("mongodb:/db", "URI scheme"),
        ("db:27017", "URI scheme"),
        ("mongodb://db/?bogus=1", "Unknown option"),
        ("mongodb://db/?readPreference=Secondary", "Not a valid read preference"),
        ("mongodb://db/?journal=maybe", "journal"),
        ("mongodb://db/?w=-1", "w must be"),
        ("mongodb://db/?wtimeoutMS=soon", "wtimeoutms"),
        ("mongodb://db/?maxStalenessSeconds=120", "maxStalenessSeconds"),
        ("mongodb://a,b/?directConnection=true", "multiple hosts"),
        ("mongodb://db/?ssl=true&tls=false", "conflicting values"),
        ("mongodb://db/?tls=true&tlsCAFile=/nonexistent/ca.pem", "TLS files"),
        ("mongodb://db/?tlsCAFile=/etc/ssl/x.pem&tls=false", "TLS"),
        ("mongodb://db/?srvMaxHosts=2", "srvMaxHosts"),
        ("mongodb://app@db/?authMechanism=MONGODB-X509&authSource=users", "$external"),
        ("mongodb://db/?authMechanism=BOGUS", "authmechanism"),
        (f"mongodb+srv://{NOWHERE}:27017", "port number"),
        ("mongodb+srv://a.example.invalid,b.example.invalid", "one, and only one"),
        (f"mongodb+srv://{NOWHERE}/?directConnection=true", "directConnection"),
        (f"mongodb+srv://{NOWHERE}/?bogus=1", "Unknown option"),
        (f"mongodb+srv://{NOWHERE}/?w=-1", "w must be"),
    ],
)
def test_a_url_pymongo_cannot_use_is_one_line_with_pymongo_s_reason(url: str, reason: str) -> None:
    message = _refusal(url)
    assert message.startswith("MONGO_URL: expected mongodb://"), message
    assert reason in message, message
    assert message.endswith("(value not shown)")


@pytest.mark.parametrize(
    "url",
    [
        f"mongodb://app:{PASSWORD}/x@db:27017",  # an unescaped / in the password
        f"mongodb://app:{PASSWORD}?x@db:27017",
        f"mongodb://app:{PASSWORD}%@db:27017",
        f"mongodb://app:{PASSWORD}:x@db:27017",
        f"mongodb://app:{PASSWORD}@db:abc",
        f"mongodb://app:{PASSWORD}@db:27017/?readPreference=secondary",
        f"mongodb://app:{PASSWORD}@db/?authMechanism=MONGODB-X509",
        f"mongodb://{PASSWORD}@db/?authMechanism=BOGUS",
        f"mongodb://db/?{PASSWORD}=1",
        f"mongodb://db/?authMechanismProperties=AWS_SESSION_TOKEN:{PASSWORD},X",
        f"mongodb+srv://app:{PASSWORD}@{NOWHERE}:1",
        f"mongodb+srv://app:{PASSWORD}/x@{NOWHERE}",
        f"http://app:{PASSWORD}@db:27017",
    ],
)
def test_no_message_quotes_the_password(url: str) -> None:
    assert "Qm7Zt4" not in _refusal(url)


def test_settings_never_print_the_mongo_password() -> None:
    url = f"mongodb://app:{PASSWORD}@db:27017/?replicaSet=rs0"
    settings = load_settings({"SERVICE_ENV": "test", "MONGO_URL": url})
    assert PASSWORD not in repr(settings)


def test_tls_files_are_loaded_at_start_up(tmp_path: Path) -> None:
    ca = make_certificates(tmp_path)
    client = make_client_certificate(tmp_path)
    good = f"mongodb://db/?tls=true&tlsCAFile={ca}&tlsCertificateKeyFile={client}"
    assert load_settings({"SERVICE_ENV": "test", "MONGO_URL": good}).mongo.url == good
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("not a certificate\n")
    for bad in (f"tlsCAFile={not_pem}", f"tlsCAFile={ca}&tlsCertificateKeyFile={not_pem}"):
        message = _refusal(f"mongodb://db/?tls=true&{bad}")
        assert message.startswith("MONGO_URL: expected mongodb://"), message


BAD_AT_START_UP = [
    ("mongodb://", "at least one hostname"),
    (f"mongodb://app:{PASSWORD}@db:abc/users", "Port"),
    ("http://db:27017", "URI scheme"),
    (f"mongodb://app:{PASSWORD}@db/?readPreference=secondary", "readPreference=secondary"),
    (f"mongodb+srv://app:{PASSWORD}@{NOWHERE}/?w=0", "w=0"),
]


@pytest.mark.parametrize("kind", ["python -m service", "gunicorn"])
@pytest.mark.parametrize(("url", "reason"), BAD_AT_START_UP)
def test_a_bad_url_stops_start_up_with_one_line_and_exit_2(
    kind: str, url: str, reason: str
) -> None:
    # gunicorn reads settings in its master (gunicorn.conf.py): no worker ever starts.
    env = {**os.environ, "SERVICE_ENV": "test", "MONGO_URL": url, "WEB_CONCURRENCY": "2"}
    result = run_service(env, kind=kind)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("user-service: configuration error: MONGO_URL: "), lines[0]
    assert reason in lines[0]
    assert "Traceback" not in result.stderr
    assert "Qm7Zt4" not in result.stderr + result.stdout
    assert "Booting worker" not in result.stderr


class TlsMongoServer(MongoServer):
    """SecantusDB speaking TLS only, with a certificate for `names`, and (if told to)
    refusing clients without a certificate from the same CA."""

    def __init__(self, directory: Path, *, require_client_certificate: bool) -> None:
        super().__init__(directory)
        self.require_client_certificate = require_client_certificate

    def command(self) -> list[str]:
        d = self.directory
        tls = ["--tls-cert-file", str(d / "server.crt"), "--tls-key-file", str(d / "server.key")]
        if self.require_client_certificate:
            tls += ["--tls-ca-file", str(d / "ca.crt"), "--tls-require-client-cert"]
        return [*super().command(), *tls]


def _round_trip(base: str) -> None:
    """The service answers ready, creates a user and reads it back."""
    body = json.dumps({"name": "Tls", "email": "tls@example.com"}).encode()
    headers = {"Content-Type": "application/json"}
    request = urllib.request.Request(f"{base}/users", data=body, headers=headers)  # noqa: S310
    with urllib.request.urlopen(request, timeout=10) as created:  # noqa: S310 - http
        assert created.status == 201
        user = json.load(created)
    with urllib.request.urlopen(f"{base}/users/{user['id']}", timeout=10) as read:  # noqa: S310
        assert json.load(read)["user"]["email"] == "tls@example.com"


def test_the_service_reaches_a_tls_server_with_a_client_certificate(
    test_env: dict[str, str], tmp_path: Path
) -> None:
    ca = make_certificates(tmp_path / "secantus")
    client = make_client_certificate(tmp_path / "secantus")
    server = TlsMongoServer(tmp_path / "secantus", require_client_certificate=True)
    server.start()
    try:
        tls = f"tls=true&tlsCAFile={ca}"
        plain = f"mongodb://127.0.0.1:{server.port}/?directConnection=true&"
        # The server does refuse a client that shows no certificate.
        anonymous: MongoClient[dict[str, Any]] = MongoClient(
            f"{plain}{tls}", serverSelectionTimeoutMS=1000
        )
        with anonymous, pytest.raises(ServerSelectionTimeoutError):
            anonymous.admin.command("ping")
        url = f"{plain}{tls}&tlsCertificateKeyFile={client}&w=majority&readConcernLevel=majority"
        env = {**test_env, "MONGO_URL": url, "SHUTDOWN_DRAIN_SECONDS": "0"}
        service = ServiceProcess(tmp_path / "service", env)
        service.start()  # returns once /health/ready answers 200
        try:
            _round_trip(service.url)
        finally:
            service.stop()
    finally:
        server.stop()


_ROUND_TRIP_INSIDE = """
import sys
from tests.helpers.service import wait_answered
from tests.test_mongo_url import _round_trip
wait_answered(sys.argv[1] + "/health/ready", timeout=30)
_round_trip(sys.argv[1])
"""
_READY_STATUS = """
import sys, urllib.error, urllib.request
from tests.helpers.service import wait_answered
wait_answered(sys.argv[1] + "/health/live", timeout=30)
try:
    urllib.request.urlopen(sys.argv[1] + "/health/ready", timeout=5)
    print(200)
except urllib.error.HTTPError as error:
    print(error.code)
"""


def test_mongodb_srv_is_resolved_by_the_driver_not_at_start_up(
    test_env: dict[str, str], tmp_path: Path
) -> None:
    """SRV and TXT records from a DNS server inside a namespace of the test's own; TLS, which
    mongodb+srv:// turns on, from the test's CA. The service starts before there is any DNS
    at all (start-up looks nothing up), is not ready without it, and is once it answers."""
    with network_namespace(tmp_path / "netns") as namespace:
        directory = tmp_path / "secantus"
        ca = make_certificates(directory, names=("DNS:node0.db.test", "IP:127.0.0.1"))
        server = TlsMongoServer(directory, require_client_certificate=False)
        namespace.spawn(server.command(), directory / "secantusd.log")
        namespace.wait_for_port(server.port)
        url = f"mongodb+srv://cluster0.db.test/?tlsCAFile={ca}&w=majority"
        env = {**os.environ, **test_env, "PORT": "8080", "HOST": "127.0.0.1", "MONGO_URL": url,
               "SHUTDOWN_DRAIN_SECONDS": "0"}  # fmt: skip
        namespace.spawn(service_command("python -m service"), tmp_path / "service.log", env)
        base = "http://127.0.0.1:8080"
        assert namespace.python(_READY_STATUS, base).strip() == "503"
        namespace.start_dns(
            [
                f"--srv-host=_mongodb._tcp.cluster0.db.test,node0.db.test,{server.port}",
                "--txt-record=cluster0.db.test,replicaSet=secantus&authSource=admin",
                "--host-record=node0.db.test,127.0.0.1",
            ]
        )
        namespace.python(_ROUND_TRIP_INSIDE, base)
        queries = (namespace.directory / "dnsmasq.log").read_text()
        assert "query[SRV] _mongodb._tcp.cluster0.db.test" in queries
        assert "query[TXT] cluster0.db.test" in queries
