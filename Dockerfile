# syntax=docker/dockerfile:1
# user-service: gunicorn + aiohttp workers. Build: docker build -t user-service .

# --- build: wheels for the service and its runtime dependencies only -----------------------
FROM python:3.11.7-slim-bookworm AS build
WORKDIR /src
# Wheels of C extensions (uvloop, hiredis, orjson, msgspec) are prebuilt on PyPI for this
# platform; the compiler is here only for the rare sdist-only dependency.
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential=12.9 \
    && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml setup.cfg README.md ./
COPY service ./service
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

# --- runtime: no compilers, no dev dependencies, not root -------------------------------
FROM python:3.11.7-slim-bookworm AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    SERVICE_ENV=production \
    METRICS_DIR=/tmp/user-service-metrics
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --no-create-home --shell /usr/sbin/nologin app
COPY --from=build /wheels /wheels
# The service's own wheel by path (exactly what was built); its dependencies from /wheels.
RUN pip install --no-cache-dir --no-index --find-links=/wheels /wheels/user_service-*.whl \
    && rm -rf /wheels
WORKDIR /app
# The TOML defaults ship inside the wheel (service/settings/); SERVICE_CONFIG_DIR may point
# at a mounted directory instead.
COPY gunicorn.conf.py ./
USER 10001:10001
EXPOSE 8000 8001
# Only what the image has: Python's standard library, no curl.
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request as r; r.urlopen('http://127.0.0.1:8000/health/live', timeout=2)"]
CMD ["gunicorn", "--config", "/app/gunicorn.conf.py"]
