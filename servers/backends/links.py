"""Connections to remote MCP backends: how a request reaches a backend and how fast.

``HttpLink`` keeps one pool of keep-alive HTTP connections per backend and learns the backend's
protocol era once. Each request then gets a fresh MCP session over that pool: on the stateless
2026-07-28 era that costs no round trip (the discovery result is adopted), so a proxied call is
one HTTP request on a warm connection, two callers never share session state, and each request's
progress and log messages belong to it alone. A backend that restarts is simply reconnected by
the pool. A handshake-era (2025-11-25) backend gets the initialize handshake per request: still
isolated, slower.

``StdioLink`` supervises one subprocess per backend: started on first use, restarted with a
doubling backoff after it exits, stopped (and its process tree killed) when the gateway stops.
All callers share its one session, which multiplexes concurrent requests; log messages reach the
caller when only one request is in flight, the gateway's log otherwise.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Literal

import anyio
import httpx2
import mcp_types
from fastmcp.server.dependencies import get_http_request
from mcp import ClientSession, MCPError, StdioServerParameters
from mcp.client.session import IncomingMessage, LoggingFnT
from mcp.client.sse import sse_client
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from pydantic import ValidationError

from servers.settings import BackendConfig

logger = logging.getLogger("gateway.backends")

ListKind = Literal["tools", "resources", "prompts"]
OnListChanged = Callable[[ListKind], None]

_LIST_CHANGED: dict[type, ListKind] = {
    mcp_types.ToolListChangedNotification: "tools",
    mcp_types.ResourceListChangedNotification: "resources",
    mcp_types.PromptListChangedNotification: "prompts",
}


class LinkError(Exception):
    """A backend could not be set up; the message is safe to show a client."""


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


def _notice_handler(on_list_changed: OnListChanged) -> Callable[[IncomingMessage], Awaitable[None]]:
    async def handle(message: IncomingMessage) -> None:
        kind = _LIST_CHANGED.get(type(message))
        if kind is not None:
            on_list_changed(kind)

    return handle


class SharedConnections(httpx2.AsyncBaseTransport):
    """Keep-alive connections to one backend, shared by every session and HTTP client built on
    them. Clients closing do not close them; ``close_connections`` does, when the gateway stops,
    and the next request after that opens new ones."""

    # Idle connections are dropped a little before the 5 s after which common servers (uvicorn,
    # node) close them, so a request is never sent on a connection the server is closing.
    LIMITS = httpx2.Limits(keepalive_expiry=4.0)

    def __init__(self) -> None:
        self._pool: httpx2.AsyncHTTPTransport | None = None

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        if self._pool is None:
            self._pool = httpx2.AsyncHTTPTransport(limits=self.LIMITS)
        return await self._pool.handle_async_request(request)

    async def aclose(self) -> None:
        return None

    async def close_connections(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.aclose()


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


class HttpLink:
    """A Streamable-HTTP (or SSE) backend: pooled connections, one fresh session per request."""

    def __init__(self, config: BackendConfig, on_list_changed: OnListChanged) -> None:
        assert config.url is not None
        self.url = config.url
        self._config = config
        self._sse = config.transport == "sse" or (
            config.transport is None and config.url.rstrip("/").endswith("/sse")
        )
        self._connections = SharedConnections()
        self._timeout = httpx2.Timeout(config.timeout_s, connect=config.connect_timeout_s)
        self._headers = static_headers(config)
        self._client = self._http_client(self._headers)
        self._on_message = _notice_handler(on_list_changed)
        self._era: Literal["unknown", "modern", "handshake"] = (
            "handshake" if self._sse else "unknown"
        )
        self._discovered: mcp_types.DiscoverResult | None = None

    def _http_client(self, headers: dict[str, str]) -> httpx2.AsyncClient:
        return httpx2.AsyncClient(
            transport=self._connections, headers=headers, timeout=self._timeout
        )

    def status(self) -> dict:
        protocol = {"unknown": "unknown", "modern": "2026-07-28", "handshake": "2025-11-25"}
        return {"transport": "sse" if self._sse else "http", "protocol": protocol[self._era]}

    async def start(self) -> None:
        """Nothing to start: connections open on first use."""

    async def stop(self) -> None:
        await self._connections.close_connections()
        self.forget()

    def forget(self) -> None:
        """After a failure: learn the era again next time (the backend may have changed)."""
        if not self._sse:
            self._era, self._discovered = "unknown", None

    def _streams(self, client: httpx2.AsyncClient):
        if self._sse:
            return sse_client(
                self.url,
                headers=dict(client.headers),
                timeout=self._config.connect_timeout_s,
                sse_read_timeout=self._config.timeout_s,
                httpx_client_factory=lambda **_: self._http_client(dict(client.headers)),
            )
        return streamable_http_client(self.url, http_client=client)

    @asynccontextmanager
    async def session(self, on_log: LoggingFnT | None) -> AsyncIterator[ClientSession]:
        """A session ready for one request; ``on_log`` receives the backend's log messages."""
        async with AsyncExitStack() as stack:
            extra = forwarded_headers(self._config.forward_headers)
            client = self._client
            if extra:
                client = await stack.enter_async_context(
                    self._http_client({**self._headers, **extra})
                )
            read, write = await stack.enter_async_context(self._streams(client))
            session = await stack.enter_async_context(
                RelayingSession(
                    read,
                    write,
                    read_timeout_seconds=self._config.timeout_s,
                    logging_callback=on_log,
                    message_handler=self._on_message,
                    log_level="debug",
                )
            )
            with anyio.fail_after(self._config.connect_timeout_s):
                if self._era == "modern":
                    session.adopt(self._discovered)
                elif self._era == "handshake":
                    await session.initialize()
                else:
                    self._discovered = await negotiate(session)
                    self._era = "modern" if self._discovered else "handshake"
            yield session


class StdioLink:
    """A backend run as a subprocess over stdio, supervised: one shared session, restarted with
    a doubling backoff after a crash, its process tree stopped with the gateway."""

    def __init__(self, config: BackendConfig, on_list_changed: OnListChanged) -> None:
        assert config.command is not None
        self._config = config
        self._params = StdioServerParameters(
            command=config.command,
            args=list(config.args),
            env=dict(config.env) or None,
            cwd=config.cwd,
        )
        self._on_message = _notice_handler(on_list_changed)
        self._listeners: list[LoggingFnT] = []
        self._session: ClientSession | None = None
        self._ready: anyio.Event | None = None
        self._wanted: anyio.Event | None = None
        self._era = "unknown"
        self.restarts = 0
        self.last_exit: str | None = None
        self.next_start_at: float | None = None

    def status(self) -> dict:
        running = self._session is not None
        status: dict = {"transport": "stdio", "protocol": self._era, "running": running}
        status["restarts"] = self.restarts
        if self.last_exit:
            status["last_exit"] = self.last_exit
        if not running and self.next_start_at is not None:
            status["restart_in_s"] = round(max(0.0, self.next_start_at - time.monotonic()), 2)
        return status

    def forget(self) -> None:
        """Nothing to forget: the supervisor notices a dead process by itself."""

    async def start(self) -> None:
        self._ready = anyio.Event()
        self._wanted = anyio.Event()

    async def stop(self) -> None:
        self._session = None
        self._ready = self._wanted = None

    async def supervise(self) -> None:
        """Run the subprocess from first use until the gateway stops, restarting it when it
        exits. Runs in the gateway's task group; cancelling it stops the process tree."""
        assert self._wanted is not None
        await self._wanted.wait()
        backoff = self._config.restart_backoff_s
        while True:
            started = time.monotonic()
            try:
                await self._serve_once()
                self.last_exit = "the process exited"
            except Exception as exc:  # a failed start or a broken pipe: restart all the same
                self.last_exit = f"failed to start or stopped unexpectedly ({type(exc).__name__})"
                logger.warning("stdio backend %s stopped: %r", self._params.command, exc)
            self._session = None
            waiting, self._ready = self._ready, anyio.Event()
            waiting.set()  # callers waiting for this attempt look again (and wait for the next)
            if time.monotonic() - started > self._config.restart_backoff_max_s:
                backoff = self._config.restart_backoff_s  # it ran a good while: start over
            self.restarts += 1
            self.next_start_at = time.monotonic() + backoff
            await anyio.sleep(backoff)
            backoff = min(backoff * 2, self._config.restart_backoff_max_s)

    async def _serve_once(self) -> None:
        """Start the process, agree on an era, serve until its output ends."""
        forward, received = anyio.create_memory_object_stream[object](0)
        async with (
            stdio_client(self._params, errlog=sys.stderr) as (read, write),
            RelayingSession(
                received,  # type: ignore[arg-type]
                write,
                read_timeout_seconds=self._config.timeout_s,
                logging_callback=self._route_log,
                message_handler=self._on_message,
                log_level="debug",
            ) as session,
            anyio.create_task_group() as group,
        ):
            # The session reads through this pump, which ends when the process's output does.
            group.start_soon(_pump, read, forward)
            with anyio.fail_after(self._config.connect_timeout_s):
                discovered = await negotiate(session)
            self._era = "2026-07-28" if discovered else "2025-11-25 (handshake)"
            self._session = session
            assert self._ready is not None
            self._ready.set()

    @asynccontextmanager
    async def session(self, on_log: LoggingFnT | None) -> AsyncIterator[ClientSession]:
        """The shared session, once the process runs (starting it on first use)."""
        if self._wanted is None or self._ready is None:
            raise RuntimeError("the gateway is not running")
        self._wanted.set()
        with anyio.fail_after(self._config.connect_timeout_s):
            while self._session is None:
                await self._ready.wait()
        listener = on_log or _ignore_log
        self._listeners.append(listener)
        try:
            yield self._session
        finally:
            self._listeners.remove(listener)

    async def _route_log(self, params: mcp_types.LoggingMessageNotificationParams) -> None:
        if len(self._listeners) == 1:
            await self._listeners[0](params)
        else:
            logger.info("stdio backend log (%s): %s", params.level, params.data)


async def _ignore_log(params: mcp_types.LoggingMessageNotificationParams) -> None:
    return None


async def _pump(source, sink) -> None:
    """Copy the process's messages to the session; return when the process's output ends."""
    async with sink:
        async for item in source:
            await sink.send(item)
