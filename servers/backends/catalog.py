"""A backend's catalog: the tools, resources, templates and prompts it offers, as fetched.

The gateway keeps the last catalog that was fetched successfully ("last known good") and serves
listings from it, so a listing never waits for a healthy backend and a backend that goes down
keeps its tools for a grace period (stale-while-revalidate) instead of vanishing at once.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal

import mcp_types
from mcp import ClientSession, MCPError

MAX_PAGES = 50  # a backend paginating forever is cut off, not followed

CatalogState = Literal["fresh", "stale", "expired", "none"]


@dataclass(frozen=True)
class Catalog:
    """What one backend offered when last asked, in its own names."""

    tools: tuple[mcp_types.Tool, ...] = ()
    resources: tuple[mcp_types.Resource, ...] = ()
    templates: tuple[mcp_types.ResourceTemplate, ...] = ()
    prompts: tuple[mcp_types.Prompt, ...] = ()
    fetched_at: float = field(default_factory=time.monotonic, compare=False)

    def counts(self) -> dict[str, int]:
        return {
            "tools": len(self.tools),
            "resources": len(self.resources),
            "templates": len(self.templates),
            "prompts": len(self.prompts),
        }


def catalog_state(
    catalog: Catalog | None,
    *,
    now: float,
    refresh_interval_s: float,
    unhealthy_since: float | None,
    grace_s: float,
) -> CatalogState:
    """Fresh (recent, backend healthy), stale (old or backend down, still offered), expired
    (backend down longer than the grace period: no longer offered) or none."""
    if catalog is None:
        return "none"
    if unhealthy_since is not None:
        return "stale" if now - unhealthy_since <= grace_s else "expired"
    return "fresh" if now - catalog.fetched_at <= refresh_interval_s else "stale"


async def _all_pages(
    fetch: Callable[[mcp_types.PaginatedRequestParams | None], Awaitable], attribute: str
) -> tuple:
    items: list = []
    params = None
    for _ in range(MAX_PAGES):
        try:
            page = await fetch(params)
        except MCPError as exc:
            if exc.error.code == mcp_types.METHOD_NOT_FOUND:
                return ()
            raise
        items.extend(getattr(page, attribute))
        if not page.next_cursor:
            break
        params = mcp_types.PaginatedRequestParams(cursor=page.next_cursor)
    return tuple(items)


async def fetch_catalog(session: ClientSession) -> Catalog:
    """Ask a connected backend for everything it offers (what its capabilities announce)."""
    capabilities = session.server_capabilities or mcp_types.ServerCapabilities()
    tools = resources = templates = prompts = ()
    if capabilities.tools is not None:
        tools = await _all_pages(lambda p: session.list_tools(params=p), "tools")
    if capabilities.resources is not None:
        resources = await _all_pages(lambda p: session.list_resources(params=p), "resources")
        templates = await _all_pages(
            lambda p: session.list_resource_templates(params=p), "resource_templates"
        )
    if capabilities.prompts is not None:
        prompts = await _all_pages(lambda p: session.list_prompts(params=p), "prompts")
    return Catalog(tools=tools, resources=resources, templates=templates, prompts=prompts)
