"""Run one sub-server on its own, for development: stdio by default, or HTTP.

uv run python -m servers.sql                                  # stdio
uv run python -m servers.sql --transport http --port 8001     # http://127.0.0.1:8001/mcp
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from fastmcp import FastMCP

from servers.settings import GatewaySettings


def run_alone(factory: Callable[[GatewaySettings], FastMCP], argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(factory.__doc__ or "").strip() or None)
    parser.add_argument("--transport", choices=["stdio", "http"], default="stdio")
    parser.add_argument("--host", default=None, help="HTTP address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="HTTP port (default 8000)")
    parser.add_argument("--config", type=Path, default=None, help="JSON config file")
    args = parser.parse_args(argv)
    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    settings = GatewaySettings.load(args.config, **overrides)
    server = factory(settings)
    if args.transport == "stdio":
        server.run(transport="stdio", show_banner=False)
    else:
        server.run(transport="http", host=settings.host, port=settings.port, show_banner=False)
