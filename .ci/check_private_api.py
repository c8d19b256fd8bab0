"""Fail where a package leans on what was never promised to it.

    python .ci/check_private_api.py service

Prints `path:line: reason` for each finding and exits 1 if there is any. A finding is:

- an underscore name imported, from anywhere (`from aiohttp.web_urldispatcher import
  _InfoDict`, `import x._y`, `from service.x import _helper`): a module's private names
  are its own, ours included;
- an underscore attribute read or written on anything but `self` or `cls` (`x._y`,
  `getattr(x, "_y")`): another object's private state, whichever package's class it is;
- an assignment into another package's module or class (`pymongo.lock.wait_for = ...`,
  `setattr(module, ...)`): a monkeypatch;
- a class deriving from another package's class (the standard library counts), except the
  bases in ALLOWED_BASES: overriding a library's machinery relies on how it calls itself.

Dunders are fine, and so is namedtuple's documented API (`_replace`, `_asdict`, ...).
Standard library only; the checked package is parsed, never imported.
"""

from __future__ import annotations

import ast
import builtins
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

# Public despite the underscore: collections.namedtuple documents them.
NAMEDTUPLE_API = frozenset({"_replace", "_asdict", "_fields", "_make", "_field_defaults"})

# Other packages' classes that are meant to be derived from: deriving declares a type or
# implements a published interface, and none of the library's own behaviour is overridden.
ALLOWED_BASES = frozenset(
    {
        "builtins.object",
        # Declarative: the class body is the declaration the library reads.
        "msgspec.Struct",
        "typing.NamedTuple",
        "typing.TypedDict",
        "typing.Protocol",
        "typing.Generic",
        "abc.ABC",
        "enum.Enum",
        "enum.IntEnum",
        "enum.StrEnum",
        "enum.Flag",
        "enum.IntFlag",
        # logging's documented extension points: its docs tell you to subclass them and
        # override `emit`, `filter` or `format`, and logging calls nothing else of ours.
        "logging.Handler",
        "logging.Filter",
        "logging.Formatter",
        # Callback interfaces whose methods are empty stubs for us to fill: PyMongo accepts a
        # listener only as an instance of these; asyncio's transports call a protocol's methods.
        "pymongo.monitoring.CommandListener",
        "pymongo.monitoring.ServerListener",
        "pymongo.monitoring.ServerHeartbeatListener",
        "pymongo.monitoring.TopologyListener",
        "pymongo.monitoring.ConnectionPoolListener",
        "asyncio.Protocol",
        "asyncio.BufferedProtocol",
        "asyncio.DatagramProtocol",
    }
    # Exceptions: deriving one names an error; raising and catching it is the whole protocol.
    | {
        f"builtins.{name}"
        for name, value in vars(builtins).items()
        if isinstance(value, type) and issubclass(value, BaseException)
    }
)

ATTRIBUTE_FUNCTIONS = frozenset({"getattr", "setattr", "hasattr", "delattr"})
OWNERS = frozenset({"self", "cls"})


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


@dataclass(frozen=True)
class Module:
    path: Path
    name: str  # dotted: service.observability.metrics
    package: str  # what its relative imports are relative to
    tree: ast.Module
    # local name -> the dotted name it was imported as (`web` -> `aiohttp.web`)
    imports: dict[str, str]
    defined: frozenset[str]  # names bound at module level other than by import


def load(root: Path) -> dict[str, Module]:
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        is_package = parts[-1] == "__init__"
        name = ".".join(parts[:-1] if is_package else parts)
        tree = ast.parse(path.read_text(), str(path))
        package = name if is_package else name.rpartition(".")[0]
        modules[name] = Module(
            path, name, package, tree, imported_names(tree, package), defined_names(tree)
        )
    return modules


def absolute(node: ast.ImportFrom, package: str) -> str:
    """The module an ImportFrom reads, relative imports made absolute."""
    if node.level == 0:
        return node.module or ""
    base = package.split(".")
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def imported_names(tree: ast.Module, package: str) -> dict[str, str]:
    names = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    names[alias.asname] = alias.name
                else:
                    top = alias.name.partition(".")[0]
                    names[top] = top
        elif isinstance(node, ast.ImportFrom):
            module = absolute(node, package)
            for alias in node.names:
                names[alias.asname or alias.name] = f"{module}.{alias.name}"
    return names


def defined_names(tree: ast.Module) -> frozenset[str]:
    names = set()
    for node in tree.body:
        if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
    return frozenset(names)


def dotted(node: ast.expr) -> tuple[str, list[str]] | None:
    """`a.b.c` as ("a", ["b", "c"]); None for anything that is not names and attributes."""
    attributes = []
    while isinstance(node, ast.Attribute):
        attributes.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return node.id, attributes[::-1]


def changed_attributes(target: ast.expr) -> Iterator[ast.Attribute]:
    """The attributes an assignment target changes: `a.b` in `a.b = ...`, `a.b[k] = ...`
    and `x, a.b = ...`."""
    if isinstance(target, ast.Tuple | ast.List):
        for element in target.elts:
            yield from changed_attributes(element)
    elif isinstance(target, ast.Starred | ast.Subscript):
        yield from changed_attributes(target.value)
    elif isinstance(target, ast.Attribute):
        yield target


class Checker:
    def __init__(self, modules: dict[str, Module], own: str) -> None:
        self.modules = modules
        self.own = own

    def resolve(self, module: Module, node: ast.expr, builtin: bool = False) -> str | None:
        """The dotted name an expression refers to through imports (following our own
        modules' re-exports), and with `builtin` `builtins.x` for a builtin (only a module
        level name can shadow one: fine for a class's bases, not for any expression);
        None for a local or unknown one."""
        found = dotted(node)
        if found is None:
            return None
        head, attributes = found
        if head in module.imports:
            name = ".".join([module.imports[head], *attributes])
        elif builtin and head not in module.defined and hasattr(builtins, head):
            name = ".".join(["builtins", head, *attributes])
        else:
            return None
        return self.follow(name)

    def follow(self, name: str) -> str:
        """`service.storage.mongo.CommandListener` -> `pymongo.monitoring.CommandListener`
        when service.storage.mongo imported it from there."""
        for _ in range(len(self.modules) + 1):  # re-exports cannot chain longer than that
            parts = name.split(".")
            for cut in range(len(parts) - 1, 0, -1):
                module = self.modules.get(".".join(parts[:cut]))
                if module is not None:
                    origin = module.imports.get(parts[cut])
                    if origin is None:
                        return name
                    name = ".".join([origin, *parts[cut + 1 :]])
                    break
            else:
                return name
        return name

    def foreign(self, name: str | None) -> bool:
        return name is not None and name.partition(".")[0] != self.own

    def check(self, module: Module) -> Iterator[tuple[int, str]]:
        for node in ast.walk(module.tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if any(is_private(part) for part in alias.name.split(".")):
                        yield node.lineno, f"imports a private module: import {alias.name}"
            elif isinstance(node, ast.ImportFrom):
                source = absolute(node, module.package)
                if any(is_private(part) for part in source.split(".")):
                    yield node.lineno, f"imports from a private module: {source}"
                for alias in node.names:
                    if is_private(alias.name):
                        yield node.lineno, f"imports a private name: {source}.{alias.name}"
            elif isinstance(node, ast.Attribute):
                yield from self.attribute(node)
            elif isinstance(node, ast.Call):
                yield from self.call(module, node)
            elif isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign | ast.Delete):
                targets = (
                    node.targets if isinstance(node, ast.Assign | ast.Delete) else [node.target]
                )
                for target in targets:
                    for changed in changed_attributes(target):
                        name = self.resolve(module, changed)
                        if self.foreign(name):
                            yield node.lineno, f"assigns into another package: {name}"
            elif isinstance(node, ast.ClassDef):
                for base in node.bases:
                    expression = base.value if isinstance(base, ast.Subscript) else base
                    name = self.resolve(module, expression, builtin=True)
                    if self.foreign(name) and name not in ALLOWED_BASES:
                        yield (
                            node.lineno,
                            f"class {node.name} derives from another package's class {name}",
                        )

    def attribute(self, node: ast.Attribute) -> Iterator[tuple[int, str]]:
        if not is_private(node.attr) or node.attr in NAMEDTUPLE_API:
            return
        if isinstance(node.value, ast.Name) and node.value.id in OWNERS:
            return
        verb = "reads" if isinstance(node.ctx, ast.Load) else "writes"
        owner = ast.unparse(node.value)
        yield node.lineno, f"{verb} a private attribute of another object: {owner}.{node.attr}"

    def call(self, module: Module, node: ast.Call) -> Iterator[tuple[int, str]]:
        function = node.func
        if not (
            isinstance(function, ast.Name)
            and function.id in ATTRIBUTE_FUNCTIONS
            and function.id not in module.defined
            and len(node.args) >= 2
        ):
            return
        target, attribute = node.args[0], node.args[1]
        if function.id in ("setattr", "delattr"):
            name = self.resolve(module, target)
            if self.foreign(name):
                yield node.lineno, f"assigns into another package: {function.id}({name}, ...)"
                return
        if (
            isinstance(attribute, ast.Constant)
            and isinstance(attribute.value, str)
            and is_private(attribute.value)
            and not (isinstance(target, ast.Name) and target.id in OWNERS)
        ):
            owner = ast.unparse(target)
            yield (
                node.lineno,
                f"{function.id}() of a private attribute of another object: "
                f"{owner}.{attribute.value}",
            )


def main(arguments: list[str]) -> int:
    if not arguments:
        print("usage: check_private_api.py PACKAGE_DIR...", file=sys.stderr)
        return 2
    findings = []
    for argument in arguments:
        root = Path(argument)
        modules = load(root)
        checker = Checker(modules, root.resolve().name)
        for module in modules.values():
            for line, reason in checker.check(module):
                findings.append((str(module.path), line, reason))
    for path, line, reason in sorted(set(findings)):
        print(f"{path}:{line}: {reason}")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
