"""The interface every backend transport implements, and what the transports share.

A ``Link`` is how requests reach one backend: ``start`` and ``stop`` it with the gateway,
``supervise`` it while it runs (a process to keep alive, or nothing to do), open a ``session``
for one request, show its ``status``, ``forget`` what it learned after a failure. A link tells
its backend about its life through ``LinkEvents``: ``up`` when it can serve, ``down`` with the
reason when it cannot. ``links.make_link`` builds the right one from a config entry.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Literal, Protocol

import mcp_types
from fastmcp.server.dependencies import get_http_request
from mcp import ClientSession, MCPError
from mcp.client.session import IncomingMessage, LoggingFnT
from pydantic import ValidationError

from servers.settings import BackendConfig

ListKind = Literal["tools", "resources", "prompts"]
OnListChanged = Callable[[ListKind], None]

_LIST_CHANGED: dict[type, ListKind] = {
    mcp_types.ToolListChangedNotification: "tools",
    mcp_types.ResourceListChangedNotification: "resources",
    mcp_types.PromptListChangedNotification: "prompts",
}


# JSON-RPC error code (implementation-defined range) of an answer the gateway dropped unread
# because it was larger than the budget of its request.
ANSWER_TOO_LARGE = -32099


class LinkError(Exception):
    """A backend could not be reached or set up; the message is safe to show a client."""


@dataclass
class Exchange:
    """One request's traffic with a backend as its transport saw it: bytes received against the
    request's budget, and an answer that was not MCP at all (a redirect, an HTTP error page)."""

    limit: int
    received: int = 0
    over_limit: bool = False
    trouble: str | None = None


current_exchange: ContextVar[Exchange | None] = ContextVar("backend_exchange", default=None)


class LinkEvents(Protocol):
    """What a link tells its backend: it can serve now, or it cannot (and why)."""

    def list_changed(self, kind: ListKind) -> None: ...

    async def link_up(self) -> None: ...

    async def link_down(self, reason: str) -> None: ...


class Link(Protocol):
    """One backend transport: started and stopped with the gateway, supervised while it runs,
    one session per request."""

    restarts: int

    def status(self) -> dict: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def supervise(self) -> None:
        """Keep the transport alive while the backend runs (cancelled when it stops)."""
        ...

    def forget(self) -> None:
        """After a failure: drop what was learned about the backend (it may have changed)."""
        ...

    def session(self, on_log: LoggingFnT | None) -> AbstractAsyncContextManager[ClientSession]:
        """A session ready for one request, set up within the link's own budgets; raises
        LinkError (with the reason) when the backend cannot be reached."""
        ...


class RelayingSession(ClientSession):
    """A client session that passes results on as the backend sent them.

    The SDK checks a tool result against the tool's output schema, which on a fresh session
    first costs a ``tools/list`` round trip; the end client runs the same check itself.
    """

    async def validate_tool_result(self, name: str, result: mcp_types.CallToolResult) -> None:
        return None


async def negotiate(session: ClientSession) -> mcp_types.DiscoverResult | None:
    """Agree on a protocol era: the modern one when the server offers it (returns its
    discovery result), else the initialize handshake (returns None)."""
    try:
        return await session.discover()
    except (MCPError, ValidationError):
        await session.initialize()
        return None


def notice_handler(on_list_changed: OnListChanged) -> Callable[[IncomingMessage], Awaitable[None]]:
    async def handle(message: IncomingMessage) -> None:
        kind = _LIST_CHANGED.get(type(message))
        if kind is not None:
            on_list_changed(kind)

    return handle


def static_headers(config: BackendConfig) -> dict[str, str]:
    """The headers every request to this backend carries: its own, and its bearer token."""
    headers = {name: value.get_secret_value() for name, value in config.headers.items()}
    if config.bearer_token_env:
        headers["Authorization"] = f"Bearer {os.environ[config.bearer_token_env]}"
    return headers


def forwarded_headers(names: list[str]) -> dict[str, str]:
    """The named headers of the client's current HTTP request (none outside HTTP)."""
    if not names:
        return {}
    try:
        request = get_http_request()
    except RuntimeError:
        return {}
    return {name: request.headers[name] for name in names if name in request.headers}
