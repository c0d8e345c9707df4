"""Remote MCP backends: one proxy per entry of the ``mcpServers`` config.

Each backend is reached through fastmcp's ``ProxyClient`` with bounded connect and request
timeouts, so a backend that is down or hung costs at most its timeout, never the default 300 s.
The client's own HTTP headers (Authorization, Cookie, ...) are never forwarded to a backend; a
backend gets only the headers its config names.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import anyio
from fastmcp import FastMCP
from fastmcp.client.transports import ClientTransport, SSETransport, StdioTransport
from fastmcp.client.transports.http import StreamableHttpTransport
from fastmcp.server import create_proxy
from fastmcp.server.providers.proxy import ProxyClient

from servers.settings import BackendConfig


def transport_for(config: BackendConfig) -> ClientTransport:
    """The client transport an mcpServers entry describes."""
    if config.command:
        return StdioTransport(
            command=config.command,
            args=list(config.args),
            env=dict(config.env) or None,
            cwd=str(config.cwd) if config.cwd else None,
        )
    headers = {name: value.get_secret_value() for name, value in config.headers.items()}
    if config.transport == "sse" or (config.transport is None and config.url.endswith("/sse")):
        return SSETransport(config.url, headers=headers)
    return StreamableHttpTransport(config.url, headers=headers)


@dataclass
class Backend:
    """A configured backend: its proxy server and what we last saw of it."""

    name: str
    config: BackendConfig
    client: ProxyClient
    server: FastMCP
    last_check: dict = field(default_factory=dict)

    async def check(self) -> dict:
        """Ask the backend for its tools; report up or down, never raise."""
        timeout_s = self.config.connect_timeout_s + self.config.timeout_s
        started = time.perf_counter()
        try:
            with anyio.fail_after(timeout_s):
                async with self.client.new() as client:
                    tools = await client.list_tools()
            state = {"status": "up", "tools": len(tools)}
        except TimeoutError:
            state = {"status": "down", "error": f"no answer within {timeout_s:g} s"}
        except Exception as exc:  # any failure to reach it means down; say which kind
            state = {"status": "down", "error": type(exc).__name__}
        state["checked_ms"] = round((time.perf_counter() - started) * 1000, 1)
        self.last_check = state
        return state


def create_backend(name: str, config: BackendConfig) -> Backend:
    """The proxy for one mcpServers entry, with bounded timeouts and no header forwarding."""
    client = ProxyClient(
        transport_for(config),
        forward_incoming_headers=False,
        timeout=config.timeout_s,
        init_timeout=config.connect_timeout_s,
    )
    return Backend(name, config, client, create_proxy(client, name=name, mask_error_details=True))
