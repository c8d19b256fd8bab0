"""GET /metrics: the samples turned into an aioprometheus registry and rendered, on the API
port or on a port of its own (`metrics.port`).

aioprometheus renders the exposition (text or protobuf, by the Accept header); the
registry is built afresh per scrape from the summed samples, because its collectors hold
one process's values (see `samples` for why they are not recorded into directly).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import AsyncIterator, Mapping
from typing import Any

from aiohttp import web
from aioprometheus import histogram as aioprometheus_histogram
from aioprometheus.collectors import Counter, Gauge, Histogram, Registry
from aioprometheus.renderer import render

from service.http.responses import name_server
from service.observability.metric_specs import BUCKET_PARTS, LATENCY_BUCKETS, SPEC_BY_NAME, SPECS
from service.observability.metrics import METRICS, Metrics
from service.observability.samples import Labels, decode_key
from service.settings.model import SETTINGS


def _new_collectors(registry: Registry) -> dict[str, Any]:
    collectors: dict[str, Any] = {}
    for spec in SPECS:
        if spec.kind == "counter":
            collectors[spec.name] = Counter(spec.name, spec.doc, registry=registry)
        elif spec.kind == "gauge":
            collectors[spec.name] = Gauge(spec.name, spec.doc, registry=registry)
        else:
            collectors[spec.name] = Histogram(
                spec.name, spec.doc, registry=registry, buckets=LATENCY_BUCKETS
            )
    return collectors


def registry_from(samples: Mapping[str, float]) -> Registry:
    """An aioprometheus registry holding these samples.

    A histogram is stored as one count per bucket (each observation in one) and a sum;
    here the buckets become cumulative and the +Inf bucket, which is the count, their
    total. Deriving the count keeps `le="+Inf"` == `_count` even when a scrape reads a
    file between a worker's additions.
    """
    registry = Registry()
    collectors = _new_collectors(registry)
    histograms: dict[tuple[str, Labels], dict[str, float]] = defaultdict(dict)
    for key, value in samples.items():
        name, part, labels = decode_key(key)
        if SPEC_BY_NAME[name].kind == "histogram":
            histograms[(name, labels)][part] = value
        else:
            collectors[name].set(dict(labels), value)
    for (name, labels), parts in histograms.items():
        merged = aioprometheus_histogram.Histogram(*LATENCY_BUCKETS)
        running = 0
        for bound, part in zip(merged.buckets, BUCKET_PARTS, strict=True):
            running += int(parts.get(part, 0.0))
            merged.buckets[bound] = running
        merged.observations = running
        merged.sum = parts.get("sum", 0.0)
        collectors[name].set_value(dict(labels), merged)
    return registry


def exposition(metrics: Metrics, accepts: list[str]) -> tuple[bytes, dict[str, str]]:
    """The body and headers of a scrape, in the format the Accept headers ask for."""
    metrics.sample_process()
    registry = registry_from(metrics.samples())
    if metrics.build_info:
        doc = "The running build: version, MongoDB driver, Python (value always 1)."
        Gauge("user_service_build_info", doc, registry=registry).set(metrics.build_info, 1)
    content, headers = render(registry, accepts)
    return content, dict(headers)


async def metrics_handler(request: web.Request) -> web.Response:
    content, headers = exposition(request.app[METRICS], request.headers.getall("Accept", []))
    return web.Response(body=content, headers=headers)


async def metrics_server_ctx(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: serve GET /metrics on `metrics.port` when it is set, apart from the API.

    Every gunicorn worker binds the port with SO_REUSEPORT; whichever the kernel picks
    answers for all of them, as on the API port.
    """
    settings = app[SETTINGS]
    if settings.metrics.port == 0:
        yield
        return
    scrape = web.Application()
    scrape[METRICS] = app[METRICS]
    scrape.router.add_get("/metrics", metrics_handler)
    scrape.on_response_prepare.append(name_server)
    runner = web.AppRunner(scrape, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, settings.server.host, settings.metrics.port, reuse_port=True)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    yield
    await runner.cleanup()
