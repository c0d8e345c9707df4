# The gateway on the embedded default; see docker-compose.yml.
FROM python:3.11-slim
RUN pip install --no-cache-dir uv && useradd --create-home --uid 10001 gateway
WORKDIR /app
COPY pyproject.toml uv.lock ./
RUN uv sync --frozen --no-dev
COPY gateway.py ./
COPY servers ./servers
COPY pipelines ./pipelines
RUN mkdir /data && chown gateway /data
USER gateway
ENV GATEWAY_DATA_DIR=/data GATEWAY_HOST=0.0.0.0
EXPOSE 8000
CMD ["/app/.venv/bin/python", "gateway.py"]
