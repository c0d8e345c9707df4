"""What clients ask of a backend (tool calls, resource reads, prompts), relayed through
``Backend.request`` and turned into fastmcp results or client-facing errors."""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from typing import Any

import mcp_types
from fastmcp.exceptions import PromptError, ResourceError, ToolError
from fastmcp.prompts import Message, PromptResult
from fastmcp.resources import ResourceContent, ResourceResult
from fastmcp.tools import ToolResult
from mcp import ClientSession, MCPError

from servers.backends.components import ParamHeaders
from servers.backends.errors import AnswerTooLarge, BackendUnavailable
from servers.backends.relay import CallerRelay

# Result metadata describing the backend connection itself, never passed to clients.
_CONNECTION_META = {
    mcp_types.PROTOCOL_VERSION_META_KEY,
    mcp_types.CLIENT_INFO_META_KEY,
    mcp_types.CLIENT_CAPABILITIES_META_KEY,
    mcp_types.SERVER_INFO_META_KEY,
}


def _client_meta(meta: dict[str, Any] | None) -> dict[str, Any] | None:
    kept = {key: value for key, value in (meta or {}).items() if key not in _CONNECTION_META}
    return kept or None


class ProxiedCalls:
    """The requests a client's use of a backend component makes (mixed into ``Backend``)."""

    name: str
    catalog_serial: int
    request: Callable[..., Awaitable[Any]]
    _behind: Callable[[], bool]
    _catch_up: Callable[[], Awaitable[None]]

    # ----------------------------------------------------------------------------------------
    # What the backend offers: tools, resources and prompts, relayed.

    async def call_tool(
        self, name: str, arguments: dict[str, Any], param_headers: ParamHeaders
    ) -> ToolResult:
        """Call the backend's tool ``name``. ``param_headers`` are its SEP-2243 annotations."""
        relay = CallerRelay.current()

        async def send(session: ClientSession) -> mcp_types.CallToolResult:
            if param_headers:  # mirror annotated arguments into Mcp-Param-* headers
                session._x_mcp_header_maps[name] = param_headers
            return await session.call_tool(
                name, arguments, progress_callback=relay.progress if relay else None
            )

        serial = self.catalog_serial
        try:
            result = await self.request(send, relay)
        except (BackendUnavailable, AnswerTooLarge) as error:
            raise ToolError(str(error)) from None
        except MCPError as error:
            raise ToolError(f"backend {self.name!r}: {error.error.message}") from None
        # A call that changed the backend's lists: refresh before answering, so the caller's
        # next listing shows the change, and tell the caller (others hear it from the provider).
        if self._behind():
            await self._catch_up()
        if relay is not None and self.catalog_serial != serial:
            await relay.lists_changed()
        return ToolResult(
            content=result.content,
            structured_content=result.structured_content,
            meta=_client_meta(result.meta),
            is_error=bool(result.is_error),
        )

    async def read_resource(self, uri: str) -> ResourceResult:
        relay = CallerRelay.current()
        try:
            result = await self.request(lambda session: session.read_resource(uri), relay)
        except (BackendUnavailable, AnswerTooLarge) as error:
            raise ResourceError(str(error)) from None
        except MCPError as error:
            raise ResourceError(f"backend {self.name!r}: {error.error.message}") from None
        contents = [
            ResourceContent(
                item.text
                if isinstance(item, mcp_types.TextResourceContents)
                else base64.b64decode(item.blob),
                mime_type=item.mime_type,
                meta=item.meta,
            )
            for item in result.contents
        ]
        return ResourceResult(contents=contents, meta=_client_meta(result.meta))

    async def get_prompt(self, name: str, arguments: dict[str, Any] | None) -> PromptResult:
        relay = CallerRelay.current()
        try:
            result = await self.request(
                lambda session: session.get_prompt(name, arguments or {}), relay
            )
        except (BackendUnavailable, AnswerTooLarge) as error:
            raise PromptError(str(error)) from None
        except MCPError as error:
            raise PromptError(f"backend {self.name!r}: {error.error.message}") from None
        return PromptResult(
            messages=[Message(content=m.content, role=m.role) for m in result.messages],
            description=result.description,
            meta=_client_meta(result.meta),
        )
