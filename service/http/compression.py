"""gzip for large responses: negotiated per RFC 9110 §12.5.3, compressed once per body.

Hand-written rather than aiohttp's `enable_compression`, for two reasons. That compresses
on every request, while here a compressed body is remembered by its identity bytes, so a
cached representation served again costs a dictionary lookup (the cache hands out the same
bytes object each time, whose hash Python keeps). And it keeps the ETag,
while a strong ETag names one sequence of bytes (RFC 9110 §8.8.3): a gzip body is another
representation and gets its own strong tag, the identity tag with `-gzip` inside the
quotes. Preconditions read either tag as the same resource state (`identity_tag`).

Never compressed: bodies under `compression.min_bytes`, 204 and 304 answers, and HEAD
(whose answer describes the identity representation, so it costs no compression).
"""

from __future__ import annotations

import re
import sys
import zlib
from collections import OrderedDict

from aiohttp import web

from service.http.responses import add_vary
from service.settings.model import CompressionSettings

_GZIP_SUFFIX = '-gzip"'
_GZIP_CODINGS = frozenset({"gzip", "x-gzip"})
_QVALUE = re.compile(r"0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?")
# Compressed bodies kept, counted with the identity bytes they are keyed by. A user with
# 100 orders is about 25 KB, so this holds the few hundred hottest representations.
_MEMO_BYTES = 8 * 1024 * 1024
_MEMO_ENTRY_BYTES = _MEMO_BYTES // 64
_ACCEPT_MEMO_ENTRIES = 64  # distinct Accept-Encoding values remembered (clients send few)


def coded_tag(etag: str) -> str:
    """The ETag of the gzip representation: `"u1-5"` becomes `"u1-5-gzip"`."""
    return etag[:-1] + _GZIP_SUFFIX if etag.endswith('"') else etag


def identity_tag(tag: str) -> str:
    """The identity representation's tag for a tag a client holds, coded or not."""
    return tag[: -len(_GZIP_SUFFIX)] + '"' if tag.endswith(_GZIP_SUFFIX) else tag


def _quality(parameters: str) -> float:
    """An element's q (1 when absent); a malformed q counts as 0: not acceptable."""
    for parameter in parameters.split(";"):
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "q":
            value = value.strip()
            return float(value) if _QVALUE.fullmatch(value) else 0.0
    return 1.0


def accepts_gzip(header: str) -> bool:
    """Whether an Accept-Encoding field value admits gzip: named with q > 0, or by `*`."""
    named: float | None = None
    anything: float | None = None
    for element in header.split(","):
        coding, _, parameters = element.partition(";")
        coding = coding.strip().lower()
        if coding in _GZIP_CODINGS:
            named = max(named or 0.0, _quality(parameters))
        elif coding == "*":
            anything = _quality(parameters)
    if named is not None:
        return named > 0
    return anything is not None and anything > 0


class Compression:
    """The negotiation and the memo of compressed bodies; one per app (per process)."""

    def __init__(self, settings: CompressionSettings) -> None:
        # Disabled is a threshold no body reaches: one comparison either way.
        self._min_bytes = settings.min_bytes if settings.enabled else sys.maxsize
        self._level = settings.level
        self._accepts: dict[str, bool] = {}
        self._memo: OrderedDict[bytes, bytes] = OrderedDict()
        self._memo_bytes = 0

    def eligible(self, size: int) -> bool:
        """Whether a body this large is compressed for clients that accept gzip."""
        return size >= self._min_bytes

    def wants_gzip(self, request: web.BaseRequest) -> bool:
        """Whether this request gets gzip for an eligible body (never for HEAD)."""
        header = request.headers.get("Accept-Encoding")
        if header is None or request.method == "HEAD":
            return False
        accepted = self._accepts.get(header)
        if accepted is None:
            if len(self._accepts) >= _ACCEPT_MEMO_ENTRIES:
                self._accepts.clear()
            accepted = self._accepts[header] = accepts_gzip(header)
        return accepted

    def gzip(self, body: bytes, *, remember: bool = True) -> bytes:
        """The body gzip-coded, from the memo when these exact bytes were coded before."""
        coded = self._memo.get(body)
        if coded is not None:
            self._memo.move_to_end(body)
            return coded
        # Deterministic (zlib writes no timestamp), so the coded tag stays a strong one.
        coded = zlib.compress(body, self._level, wbits=31)
        size = len(body) + len(coded)
        if remember and size <= _MEMO_ENTRY_BYTES:
            self._memo[body] = coded
            self._memo_bytes += size
            while self._memo_bytes > _MEMO_BYTES:
                old_body, old_coded = self._memo.popitem(last=False)
                self._memo_bytes -= len(old_body) + len(old_coded)
        return coded

    def apply(self, request: web.BaseRequest, response: web.StreamResponse) -> None:
        """In the request middleware: mark an eligible answer as varying, and gzip it when asked.

        Runs for every response, so the common cases leave after a length check: 204 and
        304 have no body, and nothing else sets Content-Encoding.
        """
        if not isinstance(response, web.Response):
            return
        body = response.body
        if not isinstance(body, bytes) or len(body) < self._min_bytes:
            return
        headers = response.headers
        add_vary(headers, "Accept-Encoding")  # on both representations, for shared caches
        if not self.wants_gzip(request):
            return
        # Always smaller: JSON above min_bytes compresses several-fold. Deciding without
        # compressing keeps a 304 (which has no body) naming the same tag a 200 would.
        # Only representations with an ETag are served again byte for byte; pages and
        # scrapes would only push those out of the memo.
        etag = headers.get("ETag")
        response.body = self.gzip(body, remember=etag is not None)
        headers["Content-Encoding"] = "gzip"
        if etag is not None:
            headers["ETag"] = coded_tag(etag)


COMPRESSION = web.AppKey("compression", Compression)
