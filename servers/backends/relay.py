"""Notifications from backends to the gateway's own clients.

``CallerRelay`` carries one proxied request's progress and log messages to the client that made
the request, and only to it. ``ListChangedNotifier`` tells every connected client that the
gateway's tools, resources or prompts changed: handshake-era clients on their standing stream,
2026-era clients through ``subscriptions/listen`` (which the gateway then serves), and the client
whose request revealed the change on that request's own stream.
"""

from __future__ import annotations

import json
import logging
import weakref
from collections.abc import Iterator
from contextlib import contextmanager

import mcp_types
from fastmcp import FastMCP
from fastmcp.server.context import Context
from fastmcp.server.dependencies import fastmcp_request_ctx, get_context
from fastmcp.server.middleware import CallNext, Middleware, MiddlewareContext
from mcp.server.connection import Connection
from mcp.server.subscriptions import (
    InMemorySubscriptionBus,
    ListenHandler,
    PromptsListChanged,
    ResourcesListChanged,
    ToolsListChanged,
)

from servers.backends.link import ListKind
from servers.conventions import stateless_era

logger = logging.getLogger("gateway.backends")


_EVENTS = {
    "tools": ToolsListChanged,
    "resources": ResourcesListChanged,
    "prompts": PromptsListChanged,
}
_NOTIFICATIONS = {
    "tools": mcp_types.ToolListChangedNotification,
    "resources": mcp_types.ResourceListChangedNotification,
    "prompts": mcp_types.PromptListChangedNotification,
}
_ON_STANDING_STREAM = {
    "tools": lambda connection: connection.send_tool_list_changed(),
    "resources": lambda connection: connection.send_resource_list_changed(),
    "prompts": lambda connection: connection.send_prompt_list_changed(),
}


class CallerRelay:
    """Delivers one backend request's progress and log messages to the calling client.

    The backend's messages arrive on the backend session's receive task, not the caller's, so
    the caller's request context is captured here and put back around each delivery.
    """

    def __init__(self, context: Context) -> None:
        self._context = context
        self._request = context.request_context

    @classmethod
    def current(cls) -> CallerRelay | None:
        """A relay to the client of the request being handled, if any."""
        try:
            return cls(get_context())
        except RuntimeError:
            return None

    @contextmanager
    def _as_caller(self) -> Iterator[None]:
        token = fastmcp_request_ctx.set(self._request)
        try:
            yield
        finally:
            fastmcp_request_ctx.reset(token)

    async def progress(self, progress: float, total: float | None, message: str | None) -> None:
        try:
            with self._as_caller():
                await self._context.report_progress(progress, total, message)
        except Exception as exc:  # a client gone away must not break the backend session
            logger.debug("progress not relayed: %r", exc)

    async def lists_changed(self) -> None:
        """Tell a 2026-era caller on its own request that the lists changed: without a listen
        stream it has no other way to hear it (handshake-era callers hear it on their stream)."""
        request = self._request
        if request is None or not stateless_era(request.protocol_version):
            return
        try:
            with self._as_caller():
                for notification in _NOTIFICATIONS.values():
                    await self._context.send_notification(notification())
        except Exception as exc:  # the caller may be gone
            logger.debug("list_changed not sent to the caller: %r", exc)

    async def log(self, params: mcp_types.LoggingMessageNotificationParams) -> None:
        data = params.data
        if isinstance(data, dict) and isinstance(data.get("msg"), str):
            message, extra = data["msg"], data.get("extra")
        else:
            message, extra = (data if isinstance(data, str) else json.dumps(data)), None
        try:
            with self._as_caller():
                await self._context.log(
                    message, level=params.level, logger_name=params.logger, extra=extra
                )
        except Exception as exc:  # as above
            logger.debug("log message not relayed: %r", exc)


class ListChangedNotifier(Middleware):
    """Announces catalog changes to every connected client of the gateway.

    As middleware it notes each handshake-era connection that has a standing stream; it also
    serves ``subscriptions/listen`` for 2026-era clients. ``install`` wires both into a gateway.
    """

    def __init__(self) -> None:
        self._connections: weakref.WeakSet[Connection] = weakref.WeakSet()
        self._bus = InMemorySubscriptionBus()
        self._listen = ListenHandler(self._bus)

    def install(self, gateway: FastMCP) -> None:
        gateway.add_middleware(self)
        # fastmcp 4.1 does not serve subscriptions/listen itself; registering the SDK's handler
        # on the low-level server also makes discovery advertise listChanged.
        gateway._mcp_server.add_request_handler(
            "subscriptions/listen", mcp_types.SubscriptionsListenRequestParams, self._listen
        )

    async def on_request(self, context: MiddlewareContext, call_next: CallNext):
        request = context.fastmcp_context.request_context if context.fastmcp_context else None
        # The SDK makes a session per request; the connection behind it is the client's (the
        # same private attribute fastmcp's StatefulProxyClient keys on).
        connection = getattr(request.session, "_connection", None) if request else None
        if isinstance(connection, Connection) and connection.has_standalone_channel:
            self._connections.add(connection)
        return await call_next(context)

    def close(self) -> None:
        """End the open listen streams (at shutdown), so no client holds the server open."""
        self._listen.close()

    async def announce(self, kinds: set[ListKind]) -> None:
        """Tell every connected client that these lists changed; never raises."""
        for kind in sorted(kinds):
            await self._bus.publish(_EVENTS[kind]())
            for connection in list(self._connections):
                await _ON_STANDING_STREAM[kind](connection)  # best effort: never raises
