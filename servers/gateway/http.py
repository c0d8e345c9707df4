"""How uvicorn serves the gateway: one place for the server's options, shared by the single
process and the `--workers N` supervisor.

Connections are bounded before any request reaches the app: h11 parses HTTP/1.1 (it trims header
whitespace as HTTP requires), a request head larger than ``limits.max_header_bytes`` gets 431
as soon as that many bytes have arrived (the rest is never read), a head not complete within
``limits.header_timeout_s`` of its first byte (slowloris) or of the connection's start closes
the connection, an idle keep-alive connection closes after ``limits.keep_alive_s``, and beyond
``limits.max_connections`` connections and requests at once uvicorn answers 503.
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from servers.settings import GatewaySettings, LimitSettings

# Room above the head limit for h11's own buffer bound, so the 431 below is sent first.
H11_SLACK_BYTES = 4096


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a bounded request head: 431 past ``max_head_bytes`` and a
    closed connection when the head is not complete within ``head_timeout_s``. Class
    attributes, set by ``configure`` in every process (uvicorn builds one per connection)."""

    max_head_bytes = 65_536
    head_timeout_s = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_bytes = 0
        self._head_deadline: asyncio.TimerHandle | None = None
        self._arm_head_deadline()

    def data_received(self, data: bytes) -> None:
        if self.conn.their_state is h11.IDLE:
            self._head_bytes += len(data)
            if self._head_bytes > self.max_head_bytes and b"\r\n\r\n" not in data:
                self._refuse_large_head()
                return
        super().data_received(data)
        self._arm_head_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_deadline()
        super().connection_lost(exc)

    def _arm_head_deadline(self) -> None:
        """Start the head clock while a request head is awaited; stop it once one is in."""
        if self.transport.is_closing():
            return
        if self.conn.their_state is h11.IDLE:
            if self._head_deadline is None:
                self._head_deadline = self.loop.call_later(self.head_timeout_s, self._head_late)
        else:
            self._head_bytes = 0
            self._disarm_head_deadline()

    def _disarm_head_deadline(self) -> None:
        deadline = getattr(self, "_head_deadline", None)
        if deadline is not None:
            deadline.cancel()
            self._head_deadline = None

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # The keep-alive timer now bounds the wait for the next request's first byte.
        self._disarm_head_deadline()

    def _head_late(self) -> None:
        self._head_deadline = None
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self.logger.info("closing a connection whose request head was late (slow client)")
            self.transport.abort()

    def _refuse_large_head(self) -> None:
        """431 and FIN, stop reading; drop the connection shortly after (the client can read
        the answer, and what it still sends is never read)."""
        self._disarm_head_deadline()
        body = (
            b'{"error": "request header fields too large: at most '
            + str(self.max_head_bytes).encode()
            + b' bytes of request line and headers"}'
        )
        self.transport.write(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
            b"content-type: application/json\r\nconnection: close\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )
        self.transport.pause_reading()
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(1.0, self.transport.abort)


def configure(limits: LimitSettings) -> None:
    """Set the connection limits of this process's protocol class (each worker calls it)."""
    GuardedH11Protocol.max_head_bytes = limits.max_header_bytes
    GuardedH11Protocol.head_timeout_s = limits.header_timeout_s


def uvicorn_options(settings: GatewaySettings) -> dict[str, Any]:
    """uvicorn.run keyword arguments for these settings (besides the app and workers); the
    protocol's limits are set by ``configure``, which create_app calls in every worker."""
    return {
        "host": settings.host,
        "port": settings.port,
        "timeout_graceful_shutdown": 5,
        "log_level": "info",
        "access_log": settings.access_log,
        "http": GuardedH11Protocol,
        "h11_max_incomplete_event_size": settings.limits.max_header_bytes + H11_SLACK_BYTES,
        "timeout_keep_alive": settings.limits.keep_alive_s,
        "limit_concurrency": settings.limits.max_connections,
        # Only used by the --workers supervisor (uvicorn's default, 5 s, kills a worker still
        # starting on a loaded machine).
        "timeout_worker_healthcheck": settings.worker_healthcheck_timeout_s,
    }
