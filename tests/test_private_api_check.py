""".ci/check_private_api.py, run as `make lint` runs it, on small packages named `service`."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.helpers import ROOT

CHECK = ROOT / ".ci" / "check_private_api.py"


def check(tmp_path: Path, files: dict[str, str]) -> tuple[int, list[str]]:
    """The check's exit status and its lines, paths relative to the package's parent."""
    package = tmp_path / "service"
    for name, text in {"__init__.py": "", **files}.items():
        path = package / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
    result = subprocess.run(
        [sys.executable, str(CHECK), str(package)], capture_output=True, text=True, check=False
    )
    assert result.stderr == ""
    return result.returncode, [
        line.removeprefix(f"{tmp_path}/") for line in result.stdout.splitlines()
    ]


FOUND = [
    pytest.param(
        "from aiohttp.web_urldispatcher import _InfoDict\n",
        "1: imports a private name: aiohttp.web_urldispatcher._InfoDict",
        id="another package's private name",
    ),
    pytest.param(
        "import pymongo._csot\n",
        "1: imports a private module: import pymongo._csot",
        id="another package's private module",
    ),
    pytest.param(
        "from _thread import allocate_lock\n",
        "1: imports from a private module: _thread",
        id="a private stdlib module",
    ),
    pytest.param(
        "from service.other import _helper\n",
        "1: imports a private name: service.other._helper",
        id="our own module's private name",
    ),
    pytest.param(
        "from .other import _helper\n",
        "1: imports a private name: service.other._helper",
        id="our own private name, imported relatively",
    ),
    pytest.param(
        """
        from aiohttp import web

        def server_of(runner: web.AppRunner) -> object:
            return runner._server
        """,
        "4: reads a private attribute of another object: runner._server",
        id="another package's object's private attribute",
    ),
    pytest.param(
        """
        def forget(other: object) -> None:
            print(other._batch)
        """,
        "2: reads a private attribute of another object: other._batch",
        id="our own object's private attribute",
    ),
    pytest.param(
        """
        class Series:
            def started(self) -> None:
                with self._metrics._lock:
                    pass
        """,
        "3: reads a private attribute of another object: self._metrics._lock",
        id="a private attribute of an object self holds",
    ),
    pytest.param(
        """
        class Base:
            def _make_server(self) -> object: ...

        class Runner(Base):
            def _make_server(self) -> object:
                return super()._make_server()
        """,
        "6: reads a private attribute of another object: super()._make_server",
        id="a base class's private method through super()",
    ),
    pytest.param(
        """
        def mark(handler: object) -> None:
            handler._ours = True
        """,
        "2: writes a private attribute of another object: handler._ours",
        id="writing another object's private attribute",
    ),
    pytest.param(
        """
        def ours(handler: object) -> bool:
            return getattr(handler, "_ours", False)
        """,
        "2: getattr() of a private attribute of another object: handler._ours",
        id="getattr of a private attribute",
    ),
    pytest.param(
        """
        def mark(handler: object) -> None:
            setattr(handler, "_ours", True)
        """,
        "2: setattr() of a private attribute of another object: handler._ours",
        id="setattr of a private attribute",
    ),
    pytest.param(
        """
        import pymongo.lock

        pymongo.lock.wait_for = print
        """,
        "3: assigns into another package: pymongo.lock.wait_for",
        id="assignment into another package's module",
    ),
    pytest.param(
        """
        from pymongo import lock

        def patch() -> None:
            lock.wait_for, x = print, 1
        """,
        "4: assigns into another package: pymongo.lock.wait_for",
        id="assignment into an imported module, unpacked",
    ),
    pytest.param(
        """
        import mimetypes

        mimetypes.types_map[".card"] = "text/plain"
        """,
        "3: assigns into another package: mimetypes.types_map",
        id="assignment into a stdlib module's dict",
    ),
    pytest.param(
        """
        from aiohttp import web

        web.Response.charset = "utf-8"
        """,
        "3: assigns into another package: aiohttp.web.Response.charset",
        id="assignment into another package's class",
    ),
    pytest.param(
        """
        import pymongo

        setattr(pymongo.lock, "wait_for", print)
        """,
        "3: assigns into another package: setattr(pymongo.lock, ...)",
        id="setattr on another package's module",
    ),
    pytest.param(
        """
        from aiohttp import web

        class Representation(web.StreamResponse):
            pass
        """,
        "3: class Representation derives from another package's class aiohttp.web.StreamResponse",
        id="deriving another package's class",
    ),
    pytest.param(
        """
        from aiohttp.worker import GunicornUVLoopWebWorker as Base

        class Worker(Base):
            pass
        """,
        "3: class Worker derives from another package's class "
        "aiohttp.worker.GunicornUVLoopWebWorker",
        id="deriving another package's class imported under another name",
    ),
    pytest.param(
        """
        import logging

        class OurHandler(logging.StreamHandler):
            pass
        """,
        "3: class OurHandler derives from another package's class logging.StreamHandler",
        id="deriving a stdlib class outside the allowed bases",
    ),
    pytest.param(
        """
        from typing import Any

        class Object(dict[str, Any]):
            pass
        """,
        "3: class Object derives from another package's class builtins.dict",
        id="deriving a builtin container",
    ),
    pytest.param(
        """
        from service.seam import Server

        class OurServer(Server):
            pass
        """,
        "3: class OurServer derives from another package's class aiohttp.web.Server",
        id="deriving another package's class re-exported by our module",
    ),
]


@pytest.mark.parametrize(("code", "finding"), FOUND)
def test_finds(tmp_path: Path, code: str, finding: str) -> None:
    seam = "from aiohttp.web import Server\n\n__all__ = ['Server']\n"
    status, lines = check(tmp_path, {"seam.py": seam, "mod.py": code})
    assert lines == [f"service/mod.py:{finding}"]
    assert status == 1


ALLOWED = [
    pytest.param(
        """
        from __future__ import annotations

        def describe(value: object) -> str:
            return f"{type(value).__name__} {value.__class__} {value.__dict__}"
        """,
        id="dunders",
    ),
    pytest.param(
        """
        from typing import Any

        def public(point: Any) -> object:
            fields = point._fields, point._field_defaults, point._asdict()
            return point._replace(x=1), point._make([1, 2]), fields
        """,
        id="namedtuple's documented API",
    ),
    pytest.param(
        """
        import threading

        class Metrics:
            def __init__(self) -> None:
                self._lock = threading.Lock()
                setattr(self, "_store", {})

            @classmethod
            def build(cls) -> object:
                return cls._default, getattr(cls, "_default")

            def count(self) -> None:
                def inner() -> None:
                    with self._lock:
                        self._store.clear()

                inner()
        """,
        id="self's and cls's private attributes",
    ),
    pytest.param(
        """
        from aiohttp import web
        from service.other import helper

        def handle(app: web.Application, settings: object) -> web.Response:
            app["key"] = 1
            settings.value = 2
            setattr(settings, "name", 3)
            return web.Response(text=helper())

        def rename(type: object) -> None:  # a parameter named like a builtin
            type.name = "ours"
        """,
        id="public names and assignments into our own objects",
    ),
    pytest.param(
        """
        import abc
        import enum
        import logging
        import typing
        from typing import Generic, NamedTuple, Protocol, TypedDict, TypeVar

        import msgspec
        from msgspec import Struct

        T = TypeVar("T")

        class Schema(Struct, forbid_unknown_fields=True): ...
        class Position(msgspec.Struct, frozen=True): ...
        class Point(NamedTuple): ...
        class Row(TypedDict): ...
        class Backend(Protocol): ...
        class Box(Generic[T]): ...
        class Listed(typing.Protocol[T]): ...
        class Base(abc.ABC): ...
        class Kind(enum.Enum): ...
        class Level(enum.IntEnum): ...
        class Oops(Exception): ...
        class Bad(ValueError): ...
        class Ours(logging.Handler): ...
        class Only(logging.Filter): ...
        class Json(logging.Formatter): ...
        class Plain: ...
        class Derived(Plain): ...
        """,
        id="declarative and documented bases, our own classes",
    ),
    pytest.param(
        """
        from service.other import Base
        from service.seam import CommandListener

        class Ours(Base): ...
        class Timer(CommandListener): ...
        """,
        id="our own module's class, an allowed base through our re-export",
    ),
]


@pytest.mark.parametrize("code", ALLOWED)
def test_allows(tmp_path: Path, code: str) -> None:
    seam = "from pymongo.monitoring import CommandListener\n"
    status, lines = check(tmp_path, {"seam.py": seam, "mod.py": code})
    assert lines == []
    assert status == 0


def test_reports_every_finding_of_a_package_in_order(tmp_path: Path) -> None:
    status, lines = check(
        tmp_path,
        {
            "b.py": "def f(x: object) -> object:\n    return x._y\n",
            "a/__init__.py": "",
            "a/c.py": "from .. import _private\nfrom ._d import e\n",
        },
    )
    assert lines == [
        "service/a/c.py:1: imports a private name: service._private",
        "service/a/c.py:2: imports from a private module: service.a._d",
        "service/b.py:2: reads a private attribute of another object: x._y",
    ]
    assert status == 1
