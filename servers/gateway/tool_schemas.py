"""Tool input schemas for the SDK's Mcp-Param header check (SEP-2243), from a cache.

Over 2026-07-28 HTTP the SDK checks each ``tools/call``'s ``Mcp-Param-*`` headers against the
tool's input schema. Unless the server answers a synchronous schema lookup, the SDK finds the
schema by running the server's whole ``tools/list`` before every call, which lists every remote
backend, so even a local tool paid for (or hung on) the slowest backend. ``ToolSchemas`` answers
the lookup instead: backend tools from the backends' cached catalogs, the gateway's own tools
from the last listing (it records each one as it passes). The check itself is unchanged; a tool
not seen yet is not checked, exactly as the SDK does for a tool its listing lacks.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from fastmcp import FastMCP
from fastmcp.server.transforms import Transform
from fastmcp.tools import Tool

SchemaLookup = Callable[[str], Mapping[str, Any] | None]


class ToolSchemas(Transform):
    """Records the input schema of every tool the gateway lists; answers lookups by name.

    As a transform it sees each listing before later transforms (tool search) shorten it.
    """

    def __init__(self, *lookups: SchemaLookup) -> None:
        self._lookups = lookups
        self._listed: dict[str, Mapping[str, Any]] = {}

    def install(self, gateway: FastMCP) -> None:
        gateway.add_transform(self)
        # fastmcp 4.1 leaves this SDK hook unset; it is the documented seam for this lookup.
        gateway._mcp_server.get_tool_input_schema = self.lookup

    async def list_tools(self, tools: Sequence[Tool]) -> Sequence[Tool]:
        self._listed.update({tool.name: tool.parameters for tool in tools})
        return tools

    def lookup(self, name: str) -> Mapping[str, Any] | None:
        for lookup in self._lookups:
            schema = lookup(name)
            if schema is not None:
                return schema
        return self._listed.get(name)
