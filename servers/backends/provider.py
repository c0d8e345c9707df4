"""Remote backends: every entry of the ``mcpServers`` config, offered through the gateway
without ever letting one slow or dead backend hold it up.

``BackendsProvider`` is the fastmcp provider that offers every backend's tools, resources,
templates and prompts from their cached catalogs (``backend.Backend``). A listing waits for a
backend only the first time it is asked for, and never beyond the backend's timeouts; a lookup
of a local tool never touches a backend at all. ``install_backends`` adds it to the gateway
together with the relay of list changes to connected clients.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar

import anyio
import anyio.abc
from fastmcp import FastMCP
from fastmcp.prompts import Prompt
from fastmcp.resources import Resource, ResourceTemplate
from fastmcp.server.providers import Provider
from fastmcp.tools import Tool
from fastmcp.utilities.components import FastMCPComponent
from fastmcp.utilities.versions import VersionSpec

from servers.backends.backend import Backend
from servers.backends.components import Index, UnavailableTool, build_index
from servers.backends.link import ListKind
from servers.backends.relay import ListChangedNotifier
from servers.health import Health
from servers.settings import BackendConfig, GatewaySettings


class BackendsProvider(Provider):
    """Offers every backend's components to the gateway from their cached catalogs.

    ``reserved`` names are never given to a backend component (the gateway's own tools);
    ``max_response_bytes`` bounds one answer of a backend; ``health`` (when given) gets a check
    per backend, kept in step when a reload adds or removes backends.
    """

    def __init__(
        self,
        configs: dict[str, BackendConfig],
        reserved: set[str],
        max_response_bytes: int = 5_000_000,
        health: Health | None = None,
        disabled: Iterable[str] = (),
    ) -> None:
        super().__init__()
        self.max_response_bytes = max_response_bytes
        self.backends = {name: self._build(name, config) for name, config in configs.items()}
        self.notifier = ListChangedNotifier()
        self.health = health
        for name in self.backends:
            self._register(name)
        self.disabled: set[str] = set()
        self._show_disabled(set(disabled))
        self._reserved = reserved
        self._index = Index()
        self._index_key: tuple | None = None
        # Longest namespace first, so "a_b" owns "a_b_x" rather than "a".
        self._by_prefix = sorted(self.backends.values(), key=lambda b: -len(b.name))
        self._users = 0
        self._group: anyio.abc.TaskGroup | None = None  # the running backends' task group
        self._runner: asyncio.Task | None = None
        self._stop: anyio.Event | None = None
        self._lifespan_lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"BackendsProvider({', '.join(self.backends)})"

    def _build(self, name: str, config: BackendConfig) -> Backend:
        return Backend(name, config, self._catalog_changed, self.max_response_bytes)

    def _register(self, name: str) -> None:
        if self.health is not None:
            self.health.add(name, "backend", self.health_check(name))

    def _show_disabled(self, names: set[str]) -> None:
        """Entries with ``enabled: false`` are reported as such (not started, not offered)."""
        if self.health is not None:
            for name in self.disabled - names - set(self.backends):
                self.health.checks.pop(name, None)
            for name in names:
                self.health.add(name, "backend", _disabled)
        self.disabled = names

    @asynccontextmanager
    async def lifespan(self):
        """Run the backends' background work while the gateway runs; stop it all after.

        fastmcp closes provider lifespans inside a shielded cancel scope, so a task group cannot
        stay open across the ``yield``: a runner task holds it, and is awaited on the way out.
        Overlapping lifespans (fastmcp can enter one per in-memory client, concurrently) share
        one runner, stopped when the last of them ends.
        """
        async with self._lifespan_lock:
            self._users += 1
            if self._runner is None:
                started, self._stop = anyio.Event(), anyio.Event()
                self._runner = asyncio.create_task(self._run(started, self._stop))
                await started.wait()
        try:
            yield
        finally:
            async with self._lifespan_lock:
                self._users -= 1
                if self._users == 0 and self._runner is not None:
                    self._stop.set()
                    await self._runner
                    self._runner = None

    async def _run(self, started: anyio.Event, stop: anyio.Event) -> None:
        try:
            async with anyio.create_task_group() as group:
                for backend in self.backends.values():
                    await backend.start(group)
                self._group = group
                started.set()
                await stop.wait()
                self._group = None
                self.notifier.close()
                group.cancel_scope.cancel()
        finally:
            self._group = None
            started.set()
            for backend in self.backends.values():
                await backend.stop()

    # ----------------------------------------------------------------------------------------
    # Reload (``servers.reload.Reloadable``): the mcpServers entries changed while it runs.

    reloads: ClassVar[frozenset[str]] = frozenset({"backends"})
    lists: ClassVar[frozenset[str]] = frozenset({"tools", "resources", "prompts"})

    def check(self, new: GatewaySettings) -> BackendChanges:
        """What applying the mcpServers of ``new`` (its enabled entries) would change, with the
        new backends built but not started; raises ValueError with the reason for an entry
        that cannot be built. Nothing changes until ``apply``."""
        wanted = {name: config for name, config in new.backends.items() if config.enabled}
        old = self.backends
        changes = BackendChanges(
            added=[name for name in wanted if name not in old],
            removed=[name for name in old if name not in wanted],
            replaced=[name for name in wanted if name in old and old[name].config != wanted[name]],
        )
        try:
            changes.built = {
                name: self._build(name, wanted[name]) for name in changes.added + changes.replaced
            }
        except (AssertionError, TypeError, ValueError) as exc:
            raise ValueError(f"mcpServers: {exc}") from None
        changes.order = list(wanted)
        changes.disabled = {name for name, config in new.backends.items() if not config.enabled}
        return changes

    async def apply(self, changes: BackendChanges) -> list[str]:
        """Offer the checked backends: new and replaced ones start (in the running gateway),
        removed and replaced ones are closed (a stdio process is stopped), their health checks
        follow. Returns one line per change (none when nothing changed). The caller tells
        connected clients the lists changed (``notifier.announce``), once for all it changed."""
        if not changes:
            self._show_disabled(changes.disabled)
            return []
        old = self.backends
        merged = {**old, **changes.built}
        self.backends = {name: merged[name] for name in changes.order}
        self._by_prefix = sorted(self.backends.values(), key=lambda b: -len(b.name))
        self._index_key = None  # rebuilt now, below
        if self._group is not None:
            for name in changes.added + changes.replaced:
                await self.backends[name].start(self._group)
        for name in changes.removed + changes.replaced:
            await old[name].close()
        if self.health is not None:
            for name in changes.removed:
                self.health.checks.pop(name, None)
            for name in changes.added:
                self._register(name)
        self._show_disabled(changes.disabled)
        self.index()
        summary = "; ".join(f"{k}: {', '.join(v)}" for k, v in changes.summary().items())
        return [f"backends ({summary})"]

    # ----------------------------------------------------------------------------------------
    # The index of offered components, rebuilt when a catalog or its offer changes.

    def index(self) -> Index:
        offers = [(b, b.offered_catalog()) for b in self.backends.values()]
        key = tuple((b.name, b.catalog_serial, c is not None) for b, c in offers)
        if key != self._index_key:
            self._index = build_index(
                [
                    (b, c, b.config.allow_tools, b.config.deny_tools)
                    for b, c in offers
                    if c is not None
                ],
                self._reserved,
            )
            self._index_key = key
        return self._index

    async def _catalog_changed(self, backend: Backend, kinds: set[ListKind]) -> None:
        self.index()
        await self.notifier.announce(kinds)

    async def _settle(self) -> None:
        """Let every backend's catalog be ready for a listing, all at once."""
        async with anyio.create_task_group() as group:
            for backend in self.backends.values():
                group.start_soon(backend.catalog_for_listing)

    def _owner(self, name: str) -> Backend | None:
        if name in self._reserved:
            return None  # the gateway's own, whatever a backend's key
        return next((b for b in self._by_prefix if name.startswith(f"{b.name}_")), None)

    def _owner_of_uri(self, uri: str) -> Backend | None:
        return next((b for b in self._by_prefix if f"://{b.name}/" in uri), None)

    def schema_for(self, name: str) -> dict[str, Any] | None:
        """A backend tool's input schema, from the cache (for Mcp-Param header checks)."""
        tool = self._index.tools.get(name)
        return tool.parameters if tool else None

    # ----------------------------------------------------------------------------------------
    # Provider interface.

    async def _list_tools(self) -> Sequence[Tool]:
        await self._settle()
        return list(self.index().tools.values())

    async def _get_tool(self, name: str, version: VersionSpec | None = None) -> Tool | None:
        backend = self._owner(name)
        if backend is None:
            return None  # a local tool: no backend is asked
        await backend.catalog_for_listing()
        tool = self.index().tools.get(name)
        if tool is None and backend.offered_catalog() is None:
            return UnavailableTool.of(backend, name)
        return tool

    async def _list_resources(self) -> Sequence[Resource]:
        await self._settle()
        return list(self.index().resources.values())

    async def _get_resource(self, uri: str, version: VersionSpec | None = None) -> Resource | None:
        backend = self._owner_of_uri(uri)
        if backend is None:
            return None
        await backend.catalog_for_listing()
        return self.index().resources.get(uri)

    async def _list_resource_templates(self) -> Sequence[ResourceTemplate]:
        await self._settle()
        return list(self.index().templates)

    async def _get_resource_template(
        self, uri: str, version: VersionSpec | None = None
    ) -> ResourceTemplate | None:
        backend = self._owner_of_uri(uri)
        if backend is None:
            return None
        await backend.catalog_for_listing()
        return next((t for t in self.index().templates if t.matches(uri) is not None), None)

    async def _list_prompts(self) -> Sequence[Prompt]:
        await self._settle()
        return list(self.index().prompts.values())

    async def _get_prompt(self, name: str, version: VersionSpec | None = None) -> Prompt | None:
        backend = self._owner(name)
        if backend is None:
            return None
        await backend.catalog_for_listing()
        return self.index().prompts.get(name)

    async def get_tasks(self) -> Sequence[FastMCPComponent]:
        return []  # proxied components never run as background tasks

    # ----------------------------------------------------------------------------------------
    # Health and metrics.

    def status(self, name: str) -> dict:
        backend = self.backends[name]
        status = backend.status()
        index = self.index()
        if name in index.renamed:
            status["renamed"] = index.renamed[name]
        if name in index.withheld:
            status["withheld_tools"] = index.withheld[name]
        if name in index.dropped:
            status["dropped"] = index.dropped[name]
        return status

    def health_check(self, name: str) -> Callable[[], Awaitable[dict]]:
        """The health check of one backend, for ``Health.add``: its state, waiting for a
        backend still starting only for most of the report's own budget (then it says
        "starting")."""

        async def check() -> dict:
            backend = self.backends.get(name)
            if backend is None:
                return {"status": "down", "error": "removed"}
            if backend.state == "starting" and self.health is not None:
                # Most of the report's budget, so a backend about to come up is shown up.
                with anyio.move_on_after(self.health.timeout_s * 0.75):
                    await backend.settled()
            return self.status(name)

        return check

    def metrics(self) -> dict[str, dict[str, float]]:
        """Per backend, the numbers a metrics exporter publishes (see ``Backend.metrics``)."""
        return {name: backend.metrics() for name, backend in self.backends.items()}


@dataclass
class BackendChanges:
    """A prepared change of the backends (``BackendsProvider.prepare``)."""

    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    built: dict[str, Backend] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)
    disabled: set[str] = field(default_factory=set)  # entries with enabled: false

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.replaced)

    def summary(self) -> dict[str, list[str]]:
        return {
            kind: names
            for kind, names in (
                ("added", self.added),
                ("removed", self.removed),
                ("replaced", self.replaced),
            )
            if names
        }


def install_backends(
    gateway: FastMCP, settings: GatewaySettings, reserved: set[str], health: Health
) -> BackendsProvider:
    """Offer the enabled MCP backends of ``settings`` through ``gateway``, with their
    list_changed relay, a health check each in ``health`` and their metrics. Returns the
    provider (for reloads)."""
    provider = BackendsProvider(
        {name: config for name, config in settings.backends.items() if config.enabled},
        reserved,
        max_response_bytes=settings.limits.max_response_bytes,
        health=health,
        disabled={name for name, config in settings.backends.items() if not config.enabled},
    )
    health.add_metrics("backends", provider.metrics)
    gateway.add_provider(provider)
    provider.notifier.install(gateway)
    return provider


async def _disabled() -> dict:
    return {"status": "disabled"}
