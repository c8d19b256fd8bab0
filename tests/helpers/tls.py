"""Throw-away certificates made with `openssl`: a CA, a server certificate for the names a
test connects to, and a client certificate for mutual TLS."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

from tests.helpers.tools import require_command

_EC = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(
        [require_command("openssl", "openssl"), *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        timeout=60,
    )


def _sign(directory: Path, name: str, extensions: str) -> None:
    """`name`.key and `name`.crt, signed by the CA in `directory`."""
    _openssl("req", "-new", *_EC, "-keyout", f"{name}.key", "-out", f"{name}.csr",
             "-subj", f"/CN={name}", cwd=directory)  # fmt: skip
    (directory / f"{name}.ext").write_text(extensions)
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", f"{name}.crt", "-days", "2",
             "-extfile", f"{name}.ext", cwd=directory)  # fmt: skip


def make_certificates(
    directory: Path, names: Sequence[str] = ("IP:127.0.0.1", "DNS:localhost")
) -> Path:
    """A throw-away CA (ca.crt) and a server certificate (server.crt, server.key) for
    `names` (subjectAltName entries); the CA's path."""
    directory.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", "-new", *_EC, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
             "-subj", "/CN=user-service test CA",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=directory)  # fmt: skip
    _sign(
        directory,
        "server",
        f"subjectAltName={','.join(names)}\nbasicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    return directory / "ca.crt"


def make_client_certificate(directory: Path) -> Path:
    """A client certificate from the CA that make_certificates left in `directory`, with its
    key in one PEM file (as `tlsCertificateKeyFile` takes it); that file's path."""
    _sign(
        directory,
        "client",
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=clientAuth\n",
    )
    pem = directory / "client.pem"
    pem.write_text((directory / "client.crt").read_text() + (directory / "client.key").read_text())
    return pem
