"""Streamable-HTTP (and SSE) backends: pooled keep-alive connections, one fresh session per
request, every byte of an answer counted as it arrives.

``HttpLink`` keeps one pool of keep-alive HTTP connections per backend and learns the backend's
protocol era once. Each request then gets a fresh MCP session over that pool: on the stateless
2026-07-28 era that costs no round trip (the discovery result is adopted), so a proxied call is
one HTTP request on a warm connection, two callers never share session state, and each request's
progress and log messages belong to it alone. A backend that restarts is simply reconnected by
the pool. A handshake-era (2025-11-25) backend gets the initialize handshake per request.

``SharedConnections`` sees every response first: a redirect, an HTTP error or an answer that is
not MCP is noted on the request's ``Exchange`` (so the backend is down with that reason, not
"up"), and the body is counted as it streams in and cut off past the request's byte budget.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Literal

import anyio
import httpx2
import mcp_types
from mcp import ClientSession, MCPError
from mcp.client.session import LoggingFnT
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client

from servers.backends.link import (
    Exchange,
    LinkError,
    LinkEvents,
    RelayingSession,
    current_exchange,
    forwarded_headers,
    negotiate,
    notice_handler,
    static_headers,
)
from servers.settings import BackendConfig

MCP_CONTENT_TYPES = ("application/json", "text/event-stream")


class AnswerOverBudget(httpx2.StreamError):
    """The answer grew past its request's byte budget; the rest is not read."""


class _QuietOverBudget(logging.Filter):
    """The SDK logs an answer it could not read with a traceback; one cut off on purpose is
    reported by the backend instead (one line, with the limit)."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not isinstance(error, AnswerOverBudget)


logging.getLogger("mcp.client.streamable_http").addFilter(_QuietOverBudget())


class CountedStream(httpx2.AsyncByteStream):
    """A response body counted chunk by chunk against the request's ``Exchange``."""

    def __init__(self, inner: httpx2.AsyncByteStream, exchange: Exchange) -> None:
        self._inner, self._exchange = inner, exchange

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._inner:
            self._exchange.received += len(chunk)
            if self._exchange.received > self._exchange.limit:
                self._exchange.over_limit = True
                raise AnswerOverBudget(f"answer larger than {self._exchange.limit} bytes")
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


def trouble_with(request: httpx2.Request, response: httpx2.Response) -> str | None:
    """Why an answer to an MCP request is not MCP at all, or None when it may be."""
    if request.method != "POST":
        return None  # a standing stream's GET may be refused: the backend still serves
    status = response.status_code
    if 300 <= status < 400:
        return f"answered with a redirect (HTTP {status}), which the gateway does not follow"
    if status >= 500:
        return f"answered HTTP {status}"
    if status in (401, 403):
        return f"answered HTTP {status}: not authorised (check its headers or bearer_token_env)"
    content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
    if status == 200 and content_type not in MCP_CONTENT_TYPES:
        return f"answered with {content_type or 'no content type'}, not MCP"
    return None


class SharedConnections(httpx2.AsyncBaseTransport):
    """Keep-alive connections to one backend, shared by every session and HTTP client built on
    them. Clients closing do not close them; ``close_connections`` does, when the gateway stops,
    and the next request after that opens new ones. Answers are checked and counted against
    the current request's ``Exchange``."""

    # Idle connections are dropped a little before the 5 s after which common servers (uvicorn,
    # node) close them, so a request is never sent on a connection the server is closing.
    LIMITS = httpx2.Limits(keepalive_expiry=4.0)

    def __init__(self) -> None:
        self._pool: httpx2.AsyncHTTPTransport | None = None

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        if self._pool is None:
            self._pool = httpx2.AsyncHTTPTransport(limits=self.LIMITS)
        response = await self._pool.handle_async_request(request)
        exchange = current_exchange.get()
        if exchange is not None:
            exchange.trouble = exchange.trouble or trouble_with(request, response)
            response.stream = CountedStream(response.stream, exchange)
        return response

    async def aclose(self) -> None:
        return None

    async def close_connections(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.aclose()


class HttpLink:
    """A Streamable-HTTP (or SSE) backend: pooled connections, one fresh session per request."""

    def __init__(self, config: BackendConfig, events: LinkEvents) -> None:
        assert config.url is not None
        self.url = config.url
        self.restarts = 0
        self._config = config
        self._sse = config.transport == "sse" or (
            config.transport is None and config.url.rstrip("/").endswith("/sse")
        )
        self._connections = SharedConnections()
        self._timeout = httpx2.Timeout(config.timeout_s, connect=config.connect_timeout_s)
        self._headers = static_headers(config)
        self._client = self._http_client(self._headers)
        self._on_message = notice_handler(events.list_changed)
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

    async def supervise(self) -> None:
        """Nothing to supervise: the backend's first request tells whether it is up."""

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
            await self._agree(session)
            yield session

    async def _agree(self, session: ClientSession) -> None:
        """Agree on the era within the connect timeout; a backend that answers something
        other than MCP is a link failure, with what it answered."""
        budget = self._config.connect_timeout_s
        try:
            with anyio.fail_after(budget):
                if self._era == "modern":
                    session.adopt(self._discovered)
                elif self._era == "handshake":
                    await session.initialize()
                else:
                    self._discovered = await negotiate(session)
                    self._era = "modern" if self._discovered else "handshake"
            exchange = current_exchange.get()
            if exchange is not None:
                exchange.trouble = None  # agreed: whatever went wrong on the way is over
        except TimeoutError:
            raise LinkError(f"no answer within the {budget:g} s connect timeout") from None
        except MCPError as error:
            exchange = current_exchange.get()
            if exchange is not None and exchange.trouble:
                raise LinkError(exchange.trouble) from None
            if error.error.code == mcp_types.PARSE_ERROR:
                raise LinkError("answered with something that is not MCP") from None
            raise
