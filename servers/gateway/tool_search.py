"""Tool search instead of a flood of tools: above a threshold, the listing becomes a search.

When more tools are visible than ``tool_search.threshold``, ``tools/list`` offers fastmcp's BM25
``search_tools`` and a ``call_tool`` proxy instead of every tool. Both go through the gateway's
own catalog, so a tool hidden from a client (visibility, auth) is never found or called through
them; every tool also stays callable by name.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Annotated, Any

from fastmcp.exceptions import ToolError
from fastmcp.server.context import Context
from fastmcp.server.dependencies import get_context
from fastmcp.server.transforms.search import BM25SearchTransform
from fastmcp.tools import Tool, ToolResult

from servers.settings import ToolSearchSettings

SEARCH_TOOL = "search_tools"
CALL_TOOL = "call_tool"


class ToolSearch(BM25SearchTransform):
    """BM25 tool search that replaces the listing only when it is longer than the threshold."""

    def __init__(
        self,
        settings: ToolSearchSettings,
        shown: Callable[[Sequence[Tool]], Sequence[Tool]] = list,
    ) -> None:
        super().__init__(
            max_results=settings.max_results,
            search_tool_name=SEARCH_TOOL,
            call_tool_name=CALL_TOOL,
        )
        self.threshold = settings.threshold
        self.shown = shown  # what the calling client is shown of a list (scopes, unlisted)

    async def transform_tools(self, tools: Sequence[Tool]) -> Sequence[Tool]:
        if not self.threshold or len(tools) <= self.threshold:
            return tools
        # Visibility rules added after this transform have not been applied to ``tools`` yet,
        # nor the client's scopes: count what this client is actually shown.
        visible = await self.get_tool_catalog(get_context(), run_middleware=False)
        if len(self.shown(visible)) <= self.threshold:
            return tools
        return await super().transform_tools(tools)

    def _make_call_tool(self) -> Tool:
        """The call proxy, refusing what the caller may not see with a message that says so
        (fastmcp's raises NotFoundError, which the gateway masks)."""
        transform = self

        async def call_tool(
            name: Annotated[str, "The name of a tool found with search_tools"],
            arguments: Annotated[dict[str, Any] | None, "The tool's arguments"] = None,
            ctx: Context = None,  # type: ignore[assignment]
        ) -> ToolResult:
            """Call a tool found with search_tools, by name, with its arguments."""
            visible = {tool.name for tool in await transform.get_tool_catalog(ctx)}
            if name in (SEARCH_TOOL, CALL_TOOL) or name not in visible:
                raise ToolError(f"Unknown tool: {name!r}. Find tools with {SEARCH_TOOL}.")
            return await ctx.fastmcp.call_tool(name, arguments)

        return Tool.from_function(fn=call_tool, name=CALL_TOOL)
