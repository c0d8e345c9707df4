"""One remote backend: its link, circuit breaker, last known good catalog and health.

A request (``Backend.request``) is bounded by the entry's timeouts, counted by the breaker and
refused at once while the circuit is open. The catalog is fetched once, then served from memory:
refreshed in the background on a timer, when the backend says a list changed, and after a
failure (probing when the circuit lets it); while the backend is down its last catalog stays on
offer for a grace period. ``backends.BackendsProvider`` offers the components to clients.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import mcp_types
from anyio.abc import TaskGroup
from fastmcp.exceptions import PromptError, ResourceError, ToolError
from fastmcp.prompts import Message, PromptResult
from fastmcp.resources import ResourceContent, ResourceResult
from fastmcp.tools import ToolResult
from mcp import ClientSession, MCPError

from servers.backends.catalog import Catalog, catalog_state, fetch_catalog
from servers.backends.circuit import CircuitBreaker
from servers.backends.components import ParamHeaders
from servers.backends.errors import BackendUnavailable, backend_answer, describe_failure
from servers.backends.links import HttpLink, ListKind, StdioLink
from servers.backends.relay import CallerRelay
from servers.settings import BackendConfig

if TYPE_CHECKING:
    from servers.backends.openapi import RestLink

logger = logging.getLogger("gateway.backends")

T = TypeVar("T")

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


class Backend:
    """One mcpServers entry: its link, circuit breaker, last known good catalog and health."""

    def __init__(
        self,
        name: str,
        config: BackendConfig,
        on_change: Callable[[Backend, set[ListKind]], Awaitable[None]],
    ) -> None:
        self.name = name
        self.config = config
        self.breaker = CircuitBreaker(config.circuit_failures, config.circuit_reset_s)
        # fastmcp's OpenAPI machinery (about 0.5 s to import) loads only for a REST backend.
        from servers.backends.openapi import RestLink

        link_type = HttpLink if config.url else StdioLink if config.command else RestLink
        self.link: HttpLink | StdioLink | RestLink = link_type(config, self._list_changed)
        self.catalog: Catalog | None = None
        self.catalog_serial = 0
        self.healthy: bool | None = None  # None: never reached yet
        self.unhealthy_since: float | None = None
        self.last_error: str | None = None
        self.counters = {"requests": 0, "failures": 0, "refused": 0, "refreshes": 0}
        self._on_change = on_change
        self._offered = False
        self._changes_announced = 0  # list_changed notifications the backend sent
        self._changes_fetched = 0  # how many of them the current catalog reflects
        self._last_attempt = float("-inf")
        self._group: TaskGroup | None = None
        self._scope: anyio.CancelScope | None = None
        self._closed: anyio.Event | None = None
        self._refreshing: anyio.Event | None = None
        self._wake: anyio.Event | None = None

    # ----------------------------------------------------------------------------------------
    # Life cycle: started with the gateway, stopped with it.

    async def start(self, group: TaskGroup) -> None:
        """Start the background work in group, under a cancel scope of its own (so that
        ``close`` can end this backend alone): the stdio supervisor, the refresh timer, a
        first fetch."""
        await self.link.start()
        self._closed = anyio.Event()
        await group.start(self._background)

    async def _background(self, *, task_status=anyio.TASK_STATUS_IGNORED) -> None:
        assert self._closed is not None
        try:
            with anyio.CancelScope() as self._scope:
                async with anyio.create_task_group() as own:
                    self._group, self._refreshing, self._wake = own, None, anyio.Event()
                    if isinstance(self.link, StdioLink):
                        own.start_soon(self.link.supervise)
                    own.start_soon(self._maintain)
                    if self.catalog is None:
                        self._start_refresh()
                    task_status.started()
        finally:
            self._group = None
            self._closed.set()

    async def close(self) -> None:
        """End this backend alone while the gateway runs (removed or replaced by a reload):
        its background work is cancelled (a stdio process stops with its supervisor) and its
        link is closed."""
        if self._scope is not None:
            self._scope.cancel()
        if self._closed is not None:
            with anyio.CancelScope(shield=True):
                await self._closed.wait()
        await self.stop()

    async def stop(self) -> None:
        self._group = self._wake = None
        await self.link.stop()

    # ----------------------------------------------------------------------------------------
    # Requests: bounded, counted by the breaker, refused while the circuit is open.

    @property
    def total_timeout_s(self) -> float:
        return self.config.connect_timeout_s + self.config.timeout_s

    async def request(
        self, send: Callable[[ClientSession], Awaitable[T]], relay: CallerRelay | None = None
    ) -> T:
        """Run ``send`` on a session with the backend, within its timeouts.

        Raises BackendUnavailable when the backend is not reached (or not called: open circuit)
        and the backend's own MCPError when it answers with one.
        """
        self.counters["requests"] += 1
        if not self.breaker.allow():
            self.counters["refused"] += 1
            raise BackendUnavailable(self.unavailable_message())
        self._last_attempt = time.monotonic()
        try:
            with anyio.fail_after(self.total_timeout_s):
                async with self.link.session(relay.log if relay else None) as session:
                    result = await send(session)
        except Exception as error:
            answer = backend_answer(error)
            if answer is None:
                logger.debug("backend %s request failed", self.name, exc_info=error)
                await self._failed(describe_failure(error, self.total_timeout_s))
                raise BackendUnavailable(self.unavailable_message()) from None
            await self._succeeded()
            raise answer from None
        except BaseException:
            self.breaker.release_probe()
            raise
        await self._succeeded()
        return result

    def unavailable_message(self) -> str:
        reason = self.last_error or "not reached yet"
        if self.breaker.state == "open":
            return (
                f"backend {self.name!r} is unavailable ({reason}); after "
                f"{self.breaker.consecutive_failures} failures in a row the gateway stopped "
                f"calling it and tries again in {self.breaker.retry_in():.0f} s"
            )
        if self.healthy is None and self.last_error is None:
            return f"backend {self.name!r} is unavailable: it has not answered yet"
        return f"backend {self.name!r} is unavailable: {reason}"

    async def _failed(self, reason: str) -> None:
        self.counters["failures"] += 1
        self.breaker.record_failure()
        self.last_error = reason
        if self.healthy is not False:
            self.unhealthy_since = time.monotonic()
        self.healthy = False
        self.link.forget()
        if self._wake is not None:
            self._wake.set()
        logger.warning("backend %s: %s", self.name, reason)
        await self._check_offer()

    async def _succeeded(self) -> None:
        self.breaker.record_success()
        self.healthy, self.unhealthy_since, self.last_error = True, None, None
        await self._check_offer()

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
        except BackendUnavailable as error:
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
        except BackendUnavailable as error:
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
        except BackendUnavailable as error:
            raise PromptError(str(error)) from None
        except MCPError as error:
            raise PromptError(f"backend {self.name!r}: {error.error.message}") from None
        return PromptResult(
            messages=[Message(content=m.content, role=m.role) for m in result.messages],
            description=result.description,
            meta=_client_meta(result.meta),
        )

    # ----------------------------------------------------------------------------------------
    # The catalog: last known good, refreshed in the background, offered within a grace period.

    def offered_catalog(self) -> Catalog | None:
        """The catalog clients see: the last good one, unless the backend has been down for
        longer than the grace period."""
        state = self.catalog_state()
        return self.catalog if state in ("fresh", "stale") else None

    def catalog_state(self) -> str:
        return catalog_state(
            self.catalog,
            now=time.monotonic(),
            refresh_interval_s=self.config.refresh_interval_s,
            unhealthy_since=self.unhealthy_since,
            grace_s=self.config.stale_grace_s,
        )

    async def catalog_for_listing(self) -> Catalog | None:
        """The catalog to list now. Waits (within the timeouts) only when the backend has never
        been asked, or said its lists changed; otherwise serves the cache and refreshes an old
        one in the background."""
        if self.catalog is None and self.healthy is None and self.breaker.state != "open":
            with anyio.move_on_after(self.total_timeout_s):
                await self.refresh()
        elif self._behind():
            await self._catch_up()
        elif self.healthy and self.catalog_state() == "stale":
            self._start_refresh()
        return self.offered_catalog()

    async def refresh(self) -> None:
        """Fetch the catalog again; concurrent callers share one fetch."""
        done = self._start_refresh()
        if done is None:  # not running: fetch in this task
            await self._fetch()
        else:
            await done.wait()

    def _start_refresh(self) -> anyio.Event | None:
        if self._group is None:
            return None
        if self._refreshing is None:
            self._refreshing = anyio.Event()
            self._group.start_soon(self._refresh_task, self._refreshing)
        return self._refreshing

    async def _refresh_task(self, done: anyio.Event) -> None:
        try:
            await self._fetch()
        finally:
            self._refreshing = None
            done.set()

    async def _fetch(self) -> None:
        self.counters["refreshes"] += 1
        announced = self._changes_announced
        try:
            catalog = await self.request(fetch_catalog)
        except (BackendUnavailable, MCPError):
            return
        self._changes_fetched = announced
        changed = _changed_kinds(self.catalog, catalog)
        self.catalog = catalog
        self._offered = self.offered_catalog() is not None
        if changed:
            self.catalog_serial += 1
            await self._on_change(self, changed)

    def _list_changed(self, kind: ListKind) -> None:
        """The backend said a list changed: fetch the catalog again, soon."""
        self._changes_announced += 1
        if self._wake is not None:
            self._wake.set()

    def _behind(self) -> bool:
        """Whether the backend announced a change the catalog does not show yet."""
        return self._changes_fetched < self._changes_announced

    async def _catch_up(self) -> None:
        """Refresh until the catalog shows every announced change (within the timeouts)."""
        with anyio.move_on_after(self.total_timeout_s):
            while self._behind() and self.healthy is not False:
                await self.refresh()

    async def _check_offer(self) -> None:
        """Tell clients when the backend's components appear or disappear (grace period over,
        or the backend back)."""
        offered = self.offered_catalog() is not None
        if offered != self._offered:
            self._offered = offered
            if self.catalog is not None:
                await self._on_change(self, {"tools", "resources", "prompts"})

    def _next_check_in(self) -> float:
        now = time.monotonic()
        if self.healthy and self.catalog is not None:
            wait = self.config.refresh_interval_s - (now - self.catalog.fetched_at)
        elif self.breaker.state == "open":
            wait = self.breaker.retry_in()
        else:
            wait = self.config.circuit_reset_s - (now - self._last_attempt)
        if self.unhealthy_since is not None and self.offered_catalog() is not None:
            wait = min(wait, self.unhealthy_since + self.config.stale_grace_s - now)
        return min(max(wait, 0.05), self.config.refresh_interval_s)

    async def _maintain(self) -> None:
        """Refresh on a timer (and probe a down backend), and notice when the grace ends."""
        while True:
            with anyio.move_on_after(self._next_check_in()):
                assert self._wake is not None
                await self._wake.wait()
            self._wake = anyio.Event()
            if self._behind() or (self._next_check_in() <= 0.05 and self.breaker.state != "open"):
                await self.refresh()
            await self._check_offer()

    # ----------------------------------------------------------------------------------------
    # Health, for /ready, admin status and metrics.

    def status(self) -> dict:
        """Everything an operator wants to know, as plain data (no secrets, no host paths)."""
        now = time.monotonic()
        status: dict[str, Any] = {"status": "up" if self.healthy else "down"}
        status |= self.link.status()
        status["circuit"] = self.breaker.snapshot()
        catalog: dict[str, Any] = {"state": self.catalog_state()}
        if self.catalog is not None:
            catalog |= self.catalog.counts()
            catalog["age_s"] = round(now - self.catalog.fetched_at, 1)
        if self.unhealthy_since is not None and self.offered_catalog() is not None:
            left = self.unhealthy_since + self.config.stale_grace_s - now
            catalog["offered_for_s"] = round(max(0.0, left), 1)
        status["catalog"] = catalog
        if self.healthy is None:
            status["error"] = "not reached yet"
        elif not self.healthy:
            status["error"] = self.last_error
            status["down_for_s"] = round(now - (self.unhealthy_since or now), 1)
        return status

    def metrics(self) -> dict[str, float]:
        """Numbers for a metrics exporter: gauges and counters, one flat dict."""
        states = {"closed": 0, "half_open": 1, "open": 2}
        catalog = self.catalog.counts() if self.catalog else {}
        return {
            "up": 1.0 if self.healthy else 0.0,
            "circuit_state": float(states[self.breaker.state]),
            "circuit_opened_total": float(self.breaker.times_opened),
            "consecutive_failures": float(self.breaker.consecutive_failures),
            "catalog_tools": float(catalog.get("tools", 0)),
            "catalog_offered": 1.0 if self.offered_catalog() is not None else 0.0,
            **{f"{name}_total": float(value) for name, value in self.counters.items()},
            "restarts_total": float(self.link.restarts if isinstance(self.link, StdioLink) else 0),
        }

    async def check(self) -> dict:
        """Health check: asks the backend only if it has never been asked."""
        if self.healthy is None and self.breaker.state != "open":
            await self.refresh()
        return self.status()


def _changed_kinds(old: Catalog | None, new: Catalog) -> set[ListKind]:
    if old is None:
        return {"tools", "resources", "prompts"}
    changed: set[ListKind] = set()
    if old.tools != new.tools:
        changed.add("tools")
    if (old.resources, old.templates) != (new.resources, new.templates):
        changed.add("resources")
    if old.prompts != new.prompts:
        changed.add("prompts")
    return changed
