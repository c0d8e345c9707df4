# The gateway image: the gateway, the demo backend, the pipeline task worker and the optional
# Dask scheduler and workers (/app/.venv/bin/dask with --preload
# /app/servers/pipelines/dask_preload.py) all run from it (see docker-compose.yml). Runs as a non-root user; the database is read-only (the sample one
# is built into the image, your own is mounted read-only at /srv/data); everything the gateway
# writes (scratch, stored results, pipeline outputs and cache, audit log) goes to
# GATEWAY_DATA_DIR, a separate volume. No secret is in the image: they come from .env.
FROM python:3.11-slim
RUN pip install --no-cache-dir uv==0.* \
    && useradd --create-home --uid 10001 gateway
WORKDIR /app
ENV UV_LINK_MODE=copy UV_COMPILE_BYTECODE=1 PYTHONUNBUFFERED=1
COPY pyproject.toml uv.lock ./
RUN uv sync --frozen --no-dev --no-install-project
COPY gateway.py ./
COPY servers ./servers
COPY pipelines ./pipelines
COPY deploy ./deploy
# The sample database, owned by root: the gateway user can only read it.
RUN /app/.venv/bin/python -c "from pathlib import Path; from servers.sample_data import \
ensure_sample_database as build; build(Path('/srv/sample'))" \
    && chmod -R a-w /srv/sample \
    && mkdir -p /var/lib/gateway /srv/data && chown gateway /var/lib/gateway
USER gateway
ENV GATEWAY_DATA_DIR=/var/lib/gateway \
    GATEWAY_SQL__DATABASE=/srv/sample/nycflights13.duckdb \
    GATEWAY_HOST=0.0.0.0 \
    MPLCONFIGDIR=/tmp/matplotlib \
    HAMILTON_TELEMETRY_ENABLED=false
VOLUME /var/lib/gateway
EXPOSE 8000
CMD ["/app/.venv/bin/python", "gateway.py", "--workers", "2"]
