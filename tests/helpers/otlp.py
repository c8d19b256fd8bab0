"""A real OTLP/HTTP trace receiver: what a collector's otlphttp receiver does with
`POST /v1/traces`, decoded with the specification's own protobufs (opentelemetry-proto).

It runs on a thread of the test process (http.server), so tests that block on a service
process do not stall it.
"""

from __future__ import annotations

import gzip
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as ProtoSpan
from opentelemetry.proto.trace.v1.trace_pb2 import Status

SERVER = ProtoSpan.SPAN_KIND_SERVER
CLIENT = ProtoSpan.SPAN_KIND_CLIENT
ERROR = Status.STATUS_CODE_ERROR


@dataclass(frozen=True)
class ReceivedSpan:
    """One exported span, ids in hex as in `traceparent` and in our log lines."""

    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    kind: int
    status: int
    attributes: dict[str, Any]
    events: tuple[str, ...]
    trace_state: str
    resource: dict[str, Any] = field(repr=False)


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    return None if kind is None else getattr(value, kind)


def decode(body: bytes) -> list[ReceivedSpan]:
    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    spans = []
    for resource_spans in request.resource_spans:
        resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                spans.append(
                    ReceivedSpan(
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex(),
                        name=span.name,
                        kind=span.kind,
                        status=span.status.code,
                        attributes={a.key: _value(a.value) for a in span.attributes},
                        events=tuple(event.name for event in span.events),
                        trace_state=span.trace_state,
                        resource=resource,
                    )
                )
    return spans


class OtlpReceiver:
    """Spans received so far, in arrival order; `endpoint` is OTEL_EXPORTER_OTLP_ENDPOINT."""

    def __init__(self, *, decode_spans: bool = True) -> None:
        """`decode_spans=False`: a sink (the bench's) that only counts the exports."""
        self.spans: list[ReceivedSpan] = []
        self.exports = 0
        self.content_types: set[str] = set()
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path != "/v1/traces":
                    self.send_error(404)
                    return
                spans = decode(body) if decode_spans else []
                receiver.received(self.headers.get("Content-Type", ""), spans)
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def received(self, content_type: str, spans: list[ReceivedSpan]) -> None:
        with self._lock:
            self.exports += 1
            self.content_types.add(content_type)
            self.spans.extend(spans)

    def trace(self, trace_id: str) -> list[ReceivedSpan]:
        with self._lock:
            return [span for span in self.spans if span.trace_id == trace_id]

    def wait_for(self, found: Callable[[OtlpReceiver], bool], timeout: float = 15.0) -> None:
        """Until `found(self)` holds (spans leave in batches, on the exporter's schedule)."""
        deadline = time.monotonic() + timeout
        while not found(self):
            if time.monotonic() > deadline:
                raise TimeoutError(f"not received within {timeout}s; got {self.spans}")
            time.sleep(0.05)


@contextmanager
def otlp_receiver(*, decode_spans: bool = True) -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver(decode_spans=decode_spans)
    receiver.start()
    try:
        yield receiver
    finally:
        receiver.stop()
