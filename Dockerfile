# user-service: gunicorn + aiohttp workers. Build: docker build -t user-service .
# Checked without Docker by `make image-test` (buildah + podman, see README "Deploying").

# --- build: wheels of exactly the locked runtime dependencies, and of the service ----------
FROM python:3.13-slim-trixie AS build
WORKDIR /src
# requirements.lock (`make lock`) pins every runtime dependency with its hashes: pip refuses
# anything else, so the image holds what CI tested. Every one has a wheel on PyPI or is pure
# Python, so no compiler is needed. The one sdist (quantile-python) builds in an environment
# pip fetches for it, as the service's wheel below does: the base has pip but no setuptools
# (python's images ship none since 3.12). Behind a TLS-inspecting proxy, give pip its CA for
# these steps only (never in a layer): `--secret id=pip.conf,src=FILE --secret
# id=build-ca.crt,src=CA` with `cert = /run/secrets/build-ca.crt` in FILE; without them pip
# uses its defaults.
COPY requirements.lock ./
RUN --mount=type=secret,id=pip.conf,target=/etc/pip.conf --mount=type=secret,id=build-ca.crt \
    pip wheel --no-cache-dir --require-hashes --wheel-dir /wheels \
        -r requirements.lock
COPY pyproject.toml setup.cfg README.md ./
COPY service ./service
RUN --mount=type=secret,id=pip.conf,target=/etc/pip.conf --mount=type=secret,id=build-ca.crt \
    pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# --- runtime: no compilers, no wheels, no dev dependencies, not root ----------------------
FROM python:3.13-slim-trixie AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    SERVICE_ENV=production \
    METRICS_DIR=/tmp/user-service-metrics
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --no-create-home --shell /usr/sbin/nologin app
# The wheels are mounted from the build stage for this step only, so no layer keeps them;
# exactly those wheels, nothing from an index, then a consistency check; then the Swagger UI
# files /docs never serves go (about 10 MB).
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --no-deps /wheels/*.whl \
    && pip check \
    && python -c "from service.http.handlers.docs import prune_unserved_assets; prune_unserved_assets()"
WORKDIR /app
# The TOML defaults ship inside the wheel (service/settings/); SERVICE_CONFIG_DIR may point
# at a mounted directory instead.
COPY gunicorn.conf.py ./
USER 10001:10001
EXPOSE 8000 8001
# Only what the image has: Python's standard library, no curl. The port is the server's
# (PORT, 8000 in production).
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as r; r.urlopen('http://127.0.0.1:%s/health/live' % os.environ.get('PORT', '8000'), timeout=2)"]
CMD ["gunicorn", "--config", "/app/gunicorn.conf.py"]
