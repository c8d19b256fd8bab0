"""Traces when an OTLP endpoint is set (`settings.tracing`; README, Tracing): the SDK's
provider made with the app, its OTLP/HTTP exporter started per worker (`tracing_ctx`), and
MongoDB commands as spans. With tracing off nothing here is built or called.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from aiohttp import web
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Span, Tracer, get_current_span

if TYPE_CHECKING:
    from pymongo.monitoring import CommandListener

# At shutdown the last spans get this long to leave. The SDK's flush honours no timeout
# (open-telemetry/opentelemetry-python#4568) and an unreachable collector holds an export
# for OTEL_EXPORTER_OTLP_TIMEOUT (10 s): it runs on a daemon thread, waited for this long
# at most, so a collector that is down never holds a worker's exit.
FLUSH_SECONDS = 1.0
DEFAULT_SERVICE_NAME = "user-service"


def create_tracer_provider() -> TracerProvider:
    """The SDK's provider: the resource (OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES) and
    the sampler (OTEL_TRACES_SAMPLER, _ARG) as the SDK reads them, "user-service" when no
    service name is given. No processor yet: `tracing_ctx` adds it in the worker."""
    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE_NAME}))
    # We shut it down ourselves (tracing_ctx), within FLUSH_SECONDS; the SDK's atexit
    # shutdown would wait up to 30 s on a collector that is down.
    return TracerProvider(resource=resource, shutdown_on_exit=False)


def create_tracer(provider: TracerProvider) -> Tracer:
    return provider.get_tracer("user-service")


async def tracing_ctx(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: this worker's exporter (OTLP/HTTP, the SDK's OTEL_EXPORTER_OTLP_* and
    OTEL_BSP_* variables), started after the fork; at shutdown, after the drain, the last
    spans are flushed within FLUSH_SECONDS."""
    # Imported here, where tracing is on: the exporter brings protobuf and requests.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    provider = app[TRACER_PROVIDER]
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    yield
    closing = threading.Thread(target=provider.shutdown, name="otel-shutdown", daemon=True)
    closing.start()
    await asyncio.to_thread(closing.join, FLUSH_SECONDS)


def mongo_command_tracer(tracer: Tracer) -> CommandListener:
    """A CLIENT span per MongoDB command, on either driver: the client's own listener, not
    `PymongoInstrumentor().instrument()`, which registers it for every client in the
    process. Never the query values (the contrib's capture_statement stays off)."""
    from opentelemetry.instrumentation.pymongo import CommandTracer  # only with tracing on

    return CommandTracer(tracer, request_hook=_current_database_conventions)


def _current_database_conventions(span: Span, event: Any) -> None:
    """The contrib names a span `{database}.{command}` with the older attributes (the
    current ones only under OTEL_SEMCONV_STABILITY_OPT_IN=database): the current name,
    `{operation} {collection}`, and attributes are added beside them."""
    name = event.command_name
    attributes: dict[str, str | int] = {
        "db.system.name": "mongodb",
        "db.operation.name": name,
        "db.namespace": event.database_name,
    }
    collection = event.command.get(name)
    if isinstance(collection, str):
        attributes["db.collection.name"] = collection
        span.update_name(f"{name} {collection}")
    else:
        span.update_name(name)
    if event.connection_id is not None:
        attributes["server.address"], attributes["server.port"] = event.connection_id
    span.set_attributes(attributes)


def record_retry(operation: str, error_class: str) -> None:
    """A retry policy hook: the wait before a retry, as an event on the request's span
    (each try is its own command span)."""
    get_current_span().add_event(
        "db.retry", {"db.operation.name": operation, "error.type": error_class}
    )


TRACER_PROVIDER = web.AppKey("tracer_provider", TracerProvider)
TRACER = web.AppKey("tracer", Tracer)
