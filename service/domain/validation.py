"""Request bodies to validated Structs (schemas.py): strict JSON, every problem named.

`parse_body` reports every offending field (msgspec alone stops at the first), each as a
JSON Pointer, so a client can fix a request in one round trip.
"""

from __future__ import annotations

import bisect
import functools
import json
import re
import unicodedata
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, get_args

import msgspec
from msgspec import Struct

from service.domain.errors import InvalidInput
from service.domain.schemas import NON_EMPTY, Name

_PATH_IN_MESSAGE = re.compile(r" - at `\$(?P<path>[^`]*)`$")
_PATH_PART = re.compile(r"\.([^.\[]+)|\[(\d+)\]")


def _pointer(prefix: str, message: str) -> tuple[str, str]:
    """Split msgspec's "... - at `$.items[0].sku`" into a JSON Pointer and the message."""
    match = _PATH_IN_MESSAGE.search(message)
    if match is None:
        return prefix, message
    parts = [key or index for key, index in _PATH_PART.findall(match.group("path"))]
    escaped = [part.replace("~", "~0").replace("/", "~1") for part in parts]
    return prefix + "".join(f"/{part}" for part in escaped), message[: match.start()]


def _json_number(text: str) -> int | float:
    """A number written with a fraction or exponent: an int when its value is a whole number.

    JSON has one number type, and JSON Schema, so the OpenAPI document, counts 1705.0 and
    17.05e2 as the integer 1705. Exact: 1e12 + 1e-9 stays a float and is refused where an
    integer belongs. Beyond 2**53 floats are not exact, and every integer field is smaller.
    """
    value = float(text)
    if value.is_integer() and abs(value) < 2**53 and Decimal(text) == int(value):
        return int(value)
    return value


_DECODER = msgspec.json.Decoder(float_hook=_json_number)
# Every body here nests 3 deep at most (an order's items); decoding 10,000 levels would
# cost recursion and memory for nothing, so deeper bodies are refused before decoding.
MAX_JSON_DEPTH = 32
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*(?:"|$)', re.DOTALL)
_NOT_BRACKETS = bytes(byte for byte in range(256) if byte not in b"[]{}")
_OPENING = frozenset(b"[{")


def nests_deeper_than(body: bytes, limit: int) -> bool:
    """Whether the JSON text opens more than `limit` arrays/objects inside one another.

    Strings are cut out first, so brackets inside them do not count. A malformed body
    may count wrong, but then it is refused anyway.
    """
    return _nests_deeper(_JSON_STRING.sub(b"", body), limit)


def _nests_deeper(outside_strings: bytes, limit: int) -> bool:
    brackets = outside_strings.translate(None, _NOT_BRACKETS)
    depth = 0
    for byte in brackets:
        if byte in _OPENING:
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


def decode_json(body: bytes) -> Any:
    """Bytes to plain JSON values, or InvalidInput for anything that is not well-formed JSON.

    A key given twice in one object is refused too: decoders keep the last, other readers
    of the same text (a proxy, an audit log) may keep the first. Outside strings, a
    colon in JSON only ever ends a key, so comparing the colons with the keys decoded
    costs one byte count and a walk of the decoded value; only a body that differs is
    parsed again to name the duplicates.
    """
    outside_strings = _JSON_STRING.sub(b"", body)
    if _nests_deeper(outside_strings, MAX_JSON_DEPTH):
        raise InvalidInput(f"The body nests deeper than {MAX_JSON_DEPTH} levels.")
    try:
        data = _DECODER.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError):
        raise InvalidInput("The body is not well-formed UTF-8 JSON.") from None
    except RecursionError:
        raise InvalidInput("The body nests too deeply.") from None
    if outside_strings.count(b":") != _count_keys(data):
        errors = [
            {"pointer": pointer, "detail": "key given more than once in one object"}
            for pointer in duplicate_keys(body)
        ]
        raise InvalidInput("The body gives a key more than once.", errors=errors)
    return data


def _count_keys(value: Any) -> int:
    """How many keys the decoded objects hold; a flat loop, cheap beside the decode itself."""
    total = 0
    pending = [value]
    for item in pending:  # grows while it is walked: breadth first, no recursion
        kind = type(item)
        if kind is dict:
            total += len(item)
            pending.extend(item.values())
        elif kind is list:
            pending.extend(item)
    return total


@dataclass(frozen=True, slots=True)
class _Object:
    """A decoded JSON object, and the keys its text repeated."""

    members: dict[str, Any]
    repeated: list[str]


def _remember_repeats(pairs: list[tuple[str, Any]]) -> _Object:
    seen: set[str] = set()
    repeated: list[str] = []
    for key, _ in pairs:
        if key in seen and key not in repeated:
            repeated.append(key)
        seen.add(key)
    return _Object(dict(pairs), repeated)


def duplicate_keys(body: bytes) -> list[str]:
    """The JSON Pointer of every key a well-formed JSON text repeats within one object."""
    pointers: list[str] = []

    def walk(value: Any, prefix: str) -> None:
        if isinstance(value, _Object):
            pointers.extend(f"{prefix}/{_escape(key)}" for key in value.repeated)
            for key, item in value.members.items():
                walk(item, f"{prefix}/{_escape(key)}")
        elif isinstance(value, list):
            for index, item in enumerate(value):
                walk(item, f"{prefix}/{index}")

    walk(json.loads(body, object_pairs_hook=_remember_repeats), "")
    return pointers


# Unicode's Default_Ignorable_Code_Point ranges (DerivedCoreProperties.txt): what a
# renderer draws as nothing (zero-width spaces and joiners, the BOM, soft hyphens,
# variation selectors, the Hangul fillers, tags), plus the blank Braille pattern.
_BLANK_RANGES = (
    (0x00AD, 0x00AD), (0x034F, 0x034F), (0x061C, 0x061C), (0x115F, 0x1160),
    (0x17B4, 0x17B5), (0x180B, 0x180F), (0x200B, 0x200F), (0x202A, 0x202E),
    (0x2060, 0x206F), (0x2800, 0x2800), (0x3164, 0x3164), (0xFE00, 0xFE0F),
    (0xFEFF, 0xFEFF), (0xFFA0, 0xFFA0), (0xFFF0, 0xFFF8), (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A), (0xE0000, 0xE0FFF),
)  # fmt: skip
_BLANK_STARTS = [start for start, _ in _BLANK_RANGES]
# Controls, surrogates, and every kind of space and separator. Private-use and unassigned
# code points count as visible: renderers draw them as a box.
_NOT_DRAWN = frozenset({"Cc", "Cs", "Zs", "Zl", "Zp"})
INVISIBLE_NAME = "needs at least one visible character"


def has_visible_character(text: str) -> bool:
    """Whether some character of `text` draws something; a name of none shows as nothing."""
    for char in text:
        if unicodedata.category(char) in _NOT_DRAWN:
            continue
        code = ord(char)
        index = bisect.bisect_right(_BLANK_STARTS, code) - 1
        if index < 0 or code > _BLANK_RANGES[index][1]:
            return True
    return False


@functools.cache
def _name_fields(kind: type[Struct]) -> frozenset[str]:
    """The fields of `kind` typed `Name`, which must show at least one visible character."""
    return frozenset(
        field.encode_name
        for field in msgspec.structs.fields(kind)
        if field.type == Name or Name in get_args(field.type)
    )


def parse_body[T: Struct](body: bytes, kind: type[T]) -> T:
    """Validate a JSON object against `kind`, naming every offending field at once."""
    data = decode_json(body)
    if not isinstance(data, dict):
        raise InvalidInput(
            "The body must be a JSON object.", errors=[{"pointer": "", "detail": "not an object"}]
        )
    errors: list[dict[str, str]] = []
    if not data and kind in NON_EMPTY:
        errors.append({"pointer": "", "detail": "empty object: send at least one field"})
    fields = {field.encode_name: field for field in msgspec.structs.fields(kind)}
    for name in data:
        if name not in fields:
            errors.append({"pointer": f"/{_escape(name)}", "detail": "unknown field"})
    for name, field in fields.items():
        if name not in data:
            if field.required:
                errors.append({"pointer": f"/{_escape(name)}", "detail": "required"})
            continue
        try:
            value = msgspec.convert(data[name], field.type)
        except msgspec.ValidationError as exc:
            pointer, detail = _pointer(f"/{_escape(name)}", str(exc))
            errors.append({"pointer": pointer, "detail": detail})
            continue
        if name in _name_fields(kind) and not has_visible_character(value):
            errors.append({"pointer": f"/{_escape(name)}", "detail": INVISIBLE_NAME})
    if errors:
        raise InvalidInput("The request body is invalid.", errors=errors)
    return msgspec.convert(data, kind)


def _escape(name: str) -> str:
    return name.replace("~", "~0").replace("/", "~1")
