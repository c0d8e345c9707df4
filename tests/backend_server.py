"""A small MCP backend for the backend tests, run as a real subprocess (HTTP or stdio).

    python -m tests.backend_server --transport http --port 8123 [--handshake-only]
    python -m tests.backend_server                     # stdio
    python -m tests.backend_server --transport http --port 8123 --hostile redirect


It counts the MCP requests it receives over HTTP by method (GET /stats), can add a tool at
runtime and say so (list_changed), reports progress and logs, keeps per-session state, echoes
the headers it was sent, can crash on request and answer with any number of MiB (``huge``).
``--handshake-only`` makes it refuse the 2026-07-28 discovery (a handshake-era server).
``--hostile MODE`` serves a hostile backend instead (``tests.hostile_backend``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
from collections import Counter
from typing import Annotated

import mcp_types
from fastmcp import Context, FastMCP
from fastmcp.server.dependencies import get_http_headers
from fastmcp.server.middleware import Middleware
from mcp import MCPError
from pydantic import Field
from starlette.middleware import Middleware as StarletteMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse

LONG_TOOL = "summarise_every_departure_delay_for_each_carrier_over_the_whole_year"
SEEN: Counter[str] = Counter()


class CountRequests:
    """ASGI middleware: counts HTTP requests to /mcp by their Mcp-Method header."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["path"] == "/mcp" and scope["method"] == "POST":
            headers = dict(scope["headers"])
            SEEN[headers.get(b"mcp-method", b"(handshake era)").decode()] += 1
        await self.app(scope, receive, send)


class HandshakeOnly(Middleware):
    async def on_discover(self, context, call_next):
        raise MCPError(code=mcp_types.METHOD_NOT_FOUND, message="Method not found")


def create_server(handshake_only: bool = False) -> FastMCP:
    mcp = FastMCP("testbackend")
    if handshake_only:
        mcp.add_middleware(HandshakeOnly())

    @mcp.tool
    def echo(text: str) -> str:
        """Say it back."""
        return text

    @mcp.tool
    def pid() -> int:
        """This process's id."""
        return os.getpid()

    @mcp.tool
    async def remember(value: str, ctx: Context) -> str:
        """Keep a value in this session's state."""
        await ctx.set_state("value", value)
        return value

    @mcp.tool
    async def recall(ctx: Context) -> str | None:
        """The value this session kept, if any."""
        return await ctx.get_state("value")

    @mcp.tool
    async def slow(steps: int, ctx: Context, delay_s: float = 0.05) -> str:
        """Take a while, reporting progress and logging each step."""
        for step in range(steps):
            await ctx.report_progress(step + 1, steps, f"step {step + 1}")
            await ctx.info(f"working on step {step + 1}")
            await asyncio.sleep(delay_s)
        return f"{steps} steps done"

    @mcp.tool
    async def grow(name: str, ctx: Context, announce: bool = True) -> str:
        """Add a tool called ``name`` and (unless told not to) say the tool list changed."""
        mcp.add_tool(_echo_tool(name))
        if announce:
            await ctx.send_notification(mcp_types.ToolListChangedNotification())
        return name

    @mcp.tool
    def regional(
        region: Annotated[str, Field(json_schema_extra={"x-mcp-header": "Region"})],
    ) -> str:
        """A tool whose argument is mirrored into an Mcp-Param-Region header (SEP-2243)."""
        return region

    @mcp.tool
    def headers() -> dict[str, str]:
        """The HTTP headers this request arrived with."""
        return get_http_headers(include_all=True)

    @mcp.tool
    def crash() -> None:
        """Exit the process at once (for supervision tests)."""
        os._exit(3)

    @mcp.tool
    def huge(mib: int) -> str:
        """An answer of ``mib`` MiB."""
        return "x" * (mib * 1024 * 1024)

    @mcp.tool(name=LONG_TOOL)
    def long_named() -> str:
        """A tool whose namespaced name is longer than clients accept."""
        return "long"

    @mcp.resource("test://greeting")
    def greeting() -> str:
        return "hello from the backend"

    @mcp.resource("test://items/{item_id}")
    def item(item_id: str) -> dict:
        return {"id": item_id}

    @mcp.prompt
    def hello(name: str) -> str:
        return f"Say hello to {name}."

    @mcp.custom_route("/stats", methods=["GET"])
    async def stats(request: Request) -> JSONResponse:
        return JSONResponse(dict(SEEN))

    @mcp.custom_route("/health", methods=["GET"])
    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "pid": os.getpid()})

    return mcp


def _echo_tool(name: str):
    from fastmcp.tools import Tool

    def added(text: str) -> str:
        return text

    return Tool.from_function(added, name=name)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--transport", choices=["http", "sse", "stdio"], default="stdio")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--handshake-only", action="store_true")
    parser.add_argument("--hostile", help="serve a hostile backend (tests.hostile_backend)")
    args = parser.parse_args()
    if args.hostile:
        from tests.hostile_backend import serve

        return serve(args.hostile, args.port)
    server = create_server(args.handshake_only)
    if args.transport == "stdio":
        server.run(transport="stdio", show_banner=False)
    else:
        server.run(
            transport=args.transport,
            host="127.0.0.1",
            port=args.port,
            show_banner=False,
            log_level="warning",
            middleware=[StarletteMiddleware(CountRequests)],
        )


if __name__ == "__main__":
    main()
