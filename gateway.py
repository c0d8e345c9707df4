"""The gateway: one MCP endpoint composing the sql, pipelines and admin servers and every remote
backend of the mcpServers config, each under its own namespace.

    uv run gateway.py                          # http://127.0.0.1:8000/mcp, embedded default
    uv run gateway.py --config gateway.json    # settings and mcpServers from a JSON file
    uv run gateway.py --transport stdio        # for desktop clients that start it themselves
"""

import argparse
import sys
from pathlib import Path

import uvicorn
from fastmcp import FastMCP
from pydantic import ValidationError
from starlette.applications import Starlette

from servers import admin, pipelines, sql
from servers.backends import create_backend
from servers.health import Health
from servers.pipeline_registry import PipelineError
from servers.settings import GatewaySettings
from servers.sql_engine import Engine

INSTRUCTIONS = """\
A data gateway. Namespaces: sql_* (read-only SQL over a DuckDB database; start with \
sql_list_tables), pipelines_* (vetted Hamilton dataflows; start with pipelines_list_pipelines), \
admin_* (service status), and one per remote backend ({backends})."""


def create_gateway(settings: GatewaySettings) -> FastMCP:
    """Compose the sub-servers and backends described by settings into one server."""
    engine = Engine.open(settings)
    health = Health(timeout_s=settings.ready_timeout_s)
    backends = {
        name: create_backend(name, config)
        for name, config in settings.backends.items()
        if config.enabled
    }
    gateway = FastMCP(
        "gateway",
        instructions=INSTRUCTIONS.format(backends=", ".join(f"{b}_*" for b in backends) or "none"),
        mask_error_details=True,
    )
    gateway.mount(sql.create_server(settings, engine), namespace="sql")
    gateway.mount(pipelines.create_server(settings, engine), namespace="pipelines")
    gateway.mount(admin.create_server(settings, health), namespace="admin")
    health.add("sql", "mount", engine.health)
    health.add("pipelines", "mount", engine.health)
    for name, backend in backends.items():
        gateway.mount(backend.server, namespace=name)
        health.add(name, "backend", backend.check)
    return gateway


def create_app(settings: GatewaySettings, gateway: FastMCP | None = None) -> Starlette:
    """The gateway as an ASGI app: Streamable HTTP at /mcp, /health, /ready, Host checking."""
    gateway = gateway or create_gateway(settings)
    return gateway.http_app(
        path="/mcp", host_origin_protection=True, allowed_hosts=settings.allowed_hosts
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, help="JSON file with settings and mcpServers")
    parser.add_argument("--transport", choices=["http", "stdio"], default="http")
    parser.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to listen on (default 8000)")
    args = parser.parse_args(argv)
    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    try:
        settings = GatewaySettings.load(args.config, **overrides)
        gateway = create_gateway(settings)
    except (ValueError, ValidationError, PipelineError, FileNotFoundError) as exc:
        print(f"gateway: cannot start: {exc}", file=sys.stderr)
        return 2
    if args.transport == "stdio":
        gateway.run(transport="stdio", show_banner=False)
    else:
        uvicorn.run(
            create_app(settings, gateway),
            host=settings.host,
            port=settings.port,
            timeout_graceful_shutdown=5,
            log_level="info",
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
