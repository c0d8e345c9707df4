"""One remote backend: its link, circuit breaker, last known good catalog and health.

A backend is ``starting`` from the gateway's start until its first catalog is fetched (or it
fails), then ``up`` or ``down`` with the reason. A request (``Backend.request``) is bounded by
the link's set-up budget and the call timeout, its answer by a byte budget, counted by the
breaker and refused at once while the circuit is open. A down backend is pinged in the
background on a short, growing, capped interval, so one that returns is used again within
moments. The catalog is fetched once, then served from memory: refreshed on a timer, when the
backend says a list changed, and when it comes back; while it is down its last catalog stays on
offer for a grace period. ``provider.BackendsProvider`` offers the components to clients.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import Any, Literal, TypeVar

import anyio
from anyio.abc import TaskGroup
from mcp import ClientSession, MCPError

from servers.backends.calls import ProxiedCalls
from servers.backends.catalog import Catalog, catalog_state, fetch_catalog
from servers.backends.circuit import CircuitBreaker
from servers.backends.errors import (
    AnswerTooLarge,
    BackendUnavailable,
    backend_answer,
    describe_failure,
)
from servers.backends.link import ANSWER_TOO_LARGE, Exchange, ListKind, current_exchange
from servers.backends.links import make_link
from servers.backends.relay import CallerRelay
from servers.settings import BackendConfig

logger = logging.getLogger("gateway.backends")

T = TypeVar("T")
State = Literal["stopped", "starting", "up", "down"]


async def _ping(session: ClientSession) -> None:
    await session.send_ping()


class Backend(ProxiedCalls):
    """One mcpServers entry: its link, circuit breaker, last known good catalog and health.
    ``max_response_bytes`` bounds one answer (the catalog has ``max_catalog_bytes``)."""

    def __init__(
        self,
        name: str,
        config: BackendConfig,
        on_change: Callable[[Backend, set[ListKind]], Awaitable[None]],
        max_response_bytes: int = 5_000_000,
    ) -> None:
        self.name = name
        self.config = config
        self.max_response_bytes = max_response_bytes
        self.breaker = CircuitBreaker(config.circuit_failures, config.circuit_reset_s)
        answer_bytes = max(max_response_bytes, config.max_catalog_bytes)
        self.link = make_link(config, self, answer_bytes)
        self.catalog: Catalog | None = None
        self.catalog_serial = 0
        self.healthy: bool | None = None  # None: not reached yet since it started
        self.unhealthy_since: float | None = None
        self.last_error: str | None = None
        self.counters = {"requests": 0, "failures": 0, "refused": 0, "refreshes": 0, "probes": 0}
        self._on_change = on_change
        self._offered = False
        self._changes_announced = 0  # list_changed notifications the backend sent
        self._changes_fetched = 0  # how many of them the current catalog reflects
        self._last_attempt = float("-inf")
        self._started_at: float | None = None
        self._settled = anyio.Event()  # set once the first fetch after start has ended
        self._group: TaskGroup | None = None
        self._scope: anyio.CancelScope | None = None
        self._closed: anyio.Event | None = None
        self._refreshing: anyio.Event | None = None
        self._wake: anyio.Event | None = None

    @property
    def state(self) -> State:
        if self.healthy is None:
            return "stopped" if self._started_at is None else "starting"
        return "up" if self.healthy else "down"

    # ----------------------------------------------------------------------------------------
    # Life cycle: started with the gateway, stopped with it; the link reports its own life.

    async def start(self, group: TaskGroup) -> None:
        """Start the background work in group, under a cancel scope of its own (so that
        ``close`` can end this backend alone): the link's supervision, the refresh and probe
        timer, a first fetch."""
        await self.link.start()
        self._started_at, self._settled = time.monotonic(), anyio.Event()
        self._closed = anyio.Event()
        await group.start(self._background)

    async def _background(self, *, task_status=anyio.TASK_STATUS_IGNORED) -> None:
        assert self._closed is not None
        try:
            with anyio.CancelScope() as self._scope:
                async with anyio.create_task_group() as own:
                    self._group, self._refreshing, self._wake = own, None, anyio.Event()
                    own.start_soon(self.link.supervise)
                    own.start_soon(self._maintain)
                    self._start_refresh()  # also with a catalog from an earlier run: is it up?
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
        """Stop the link and forget the backend's health: a stopped backend is not "up"."""
        self._group = self._wake = None
        await self.link.stop()
        self.healthy, self.unhealthy_since, self.last_error = None, None, None
        self._started_at = None
        self.breaker.record_success()

    async def settled(self) -> None:
        """Return once the first fetch since the start has ended (the backend up or down)."""
        await self._settled.wait()

    def list_changed(self, kind: ListKind) -> None:
        """The backend said a list changed: fetch the catalog again, soon."""
        self._changes_announced += 1
        if self._wake is not None:
            self._wake.set()

    async def link_up(self) -> None:
        """The link can serve (a process answered its start-up handshake)."""
        await self._succeeded()
        self._start_refresh()

    async def link_down(self, reason: str) -> None:
        """The link cannot serve (a process exited): down now, with the reason."""
        await self._failed(reason)

    # ----------------------------------------------------------------------------------------
    # Requests: bounded, counted by the breaker, refused while the circuit is open.

    async def request(
        self,
        send: Callable[[ClientSession], Awaitable[T]],
        relay: CallerRelay | None = None,
        *,
        budget: int | None = None,
        probe: bool = False,
    ) -> T:
        """Run ``send`` on a session with the backend: the session is set up within the link's
        own budget (connect timeout, or a process's start-up), ``send`` within timeout_s, and
        the answer may take ``budget`` bytes (default: max_response_bytes).

        Raises BackendUnavailable when the backend is not reached (or not called: open
        circuit), AnswerTooLarge past the budget, and the backend's own MCPError when it
        answers with one. A ``probe`` (background ping) goes through an open circuit.
        """
        self.counters["probes" if probe else "requests"] += 1
        if not probe and not self.breaker.allow():
            self.counters["refused"] += 1
            raise BackendUnavailable(self.unavailable_message())
        self._last_attempt = time.monotonic()
        exchange = Exchange(budget or self.max_response_bytes)
        token = current_exchange.set(exchange)
        try:
            async with self.link.session(relay.log if relay else None) as session:
                with anyio.fail_after(self.config.timeout_s):
                    result = await send(session)
        except Exception as error:
            raise await self._sort_out(error, exchange, quiet=probe) from None
        except BaseException:
            self.breaker.release_probe()
            raise
        finally:
            current_exchange.reset(token)
        await self._succeeded()
        return result

    async def _sort_out(self, error: Exception, exchange: Exchange, quiet: bool) -> Exception:
        """What a failed request raises: BackendUnavailable (the backend is down, and now
        counted so), AnswerTooLarge (its answer was over budget), or the backend's own error."""
        answer = backend_answer(error)
        too_large = answer is not None and answer.error.code == ANSWER_TOO_LARGE
        if exchange.over_limit or too_large:
            await self._succeeded()  # it answered; the answer was too large
            return AnswerTooLarge(self.name, exchange.limit)
        if answer is None or exchange.trouble:
            reason = exchange.trouble or describe_failure(error, self.config.timeout_s)
            logger.debug("backend %s request failed", self.name, exc_info=error)
            await self._failed(reason, quiet=quiet)
            return BackendUnavailable(self.unavailable_message())
        await self._succeeded()
        return answer

    def unavailable_message(self) -> str:
        reason = self.last_error or "not reached yet"
        if self.breaker.state == "open":
            return (
                f"backend {self.name!r} is unavailable ({reason}); after "
                f"{self.breaker.consecutive_failures} failures in a row the gateway stopped "
                f"calling it and pings it in the background; it is used again once it answers"
            )
        if self.state == "starting":
            return f"backend {self.name!r} is unavailable: it is still starting"
        return f"backend {self.name!r} is unavailable: {reason}"

    async def _failed(self, reason: str, quiet: bool = False) -> None:
        self.counters["failures"] += 0 if quiet else 1
        self.breaker.record_failure()
        self.last_error = reason
        if self.healthy is not False:
            self.unhealthy_since = time.monotonic()
        self.healthy = False
        self._settled.set()
        self.link.forget()
        if self._wake is not None:
            self._wake.set()
        (logger.debug if quiet else logger.warning)("backend %s: %s", self.name, reason)
        await self._check_offer()

    async def _succeeded(self) -> None:
        returned = self.healthy is False
        self.breaker.record_success()
        self.healthy, self.unhealthy_since, self.last_error = True, None, None
        if returned:  # back: its catalog may have changed while it was away
            self._start_refresh()
        await self._check_offer()

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

    @property
    def total_timeout_s(self) -> float:
        """Longest one request may take once the backend runs: connecting, then answering."""
        return self.config.connect_timeout_s + self.config.timeout_s

    async def catalog_for_listing(self) -> Catalog | None:
        """The catalog to list now. Waits only while the first fetch since the backend's start
        has not ended (it is starting, or up a moment before its catalog arrives; at most
        first_listing_wait_s from its start), or when it said its lists changed (within its
        timeouts); otherwise serves the cache and refreshes an old one in the background."""
        if self.catalog is None and self._started_at is not None and not self._settled.is_set():
            left = self._started_at + self.config.first_listing_wait_s - time.monotonic()
            with anyio.move_on_after(max(0.0, left)):
                await self._settled.wait()
        elif self.catalog is None and self.state == "stopped":  # not running: ask in this task
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
        limit = self.config.max_catalog_bytes
        try:
            catalog = await self.request(fetch_catalog, budget=limit)
        except AnswerTooLarge:
            await self._failed(f"its catalog is larger than {limit} bytes (max_catalog_bytes)")
            return
        except (BackendUnavailable, MCPError):
            return
        finally:
            self._settled.set()
        self._changes_fetched = announced
        changed = _changed_kinds(self.catalog, catalog)
        self.catalog = catalog
        self._offered = self.offered_catalog() is not None
        if changed:
            self.catalog_serial += 1
            await self._on_change(self, changed)

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

    def _next_check_in(self, probe_wait: float) -> float:
        now = time.monotonic()
        if self.state == "down":
            wait = probe_wait
        elif self.healthy and self.catalog is not None:
            wait = self.config.refresh_interval_s - (now - self.catalog.fetched_at)
        else:
            wait = self.config.refresh_interval_s
        if self.unhealthy_since is not None and self.offered_catalog() is not None:
            wait = min(wait, self.unhealthy_since + self.config.stale_grace_s - now)
        return min(max(wait, 0.05), self.config.refresh_interval_s)

    async def _maintain(self) -> None:
        """Refresh on a timer, ping a down backend on a short, growing, capped interval (its
        answer closes the circuit and brings the catalog back), notice when the grace ends."""
        probe_wait = self.config.probe_interval_s
        while True:
            with anyio.move_on_after(self._next_check_in(probe_wait)) as timer:
                assert self._wake is not None
                await self._wake.wait()
            self._wake = anyio.Event()
            if self.state == "down" and timer.cancelled_caught:
                await self._probe()
                probe_wait = min(probe_wait * 2, self.config.probe_interval_max_s)
            elif self.state != "down":
                probe_wait = self.config.probe_interval_s
                if self._behind() or self._next_check_in(probe_wait) <= 0.05:
                    await self.refresh()
            await self._check_offer()

    async def _probe(self) -> None:
        """Ping a down backend; its answer makes it up again (and refreshes its catalog)."""
        with suppress(BackendUnavailable, AnswerTooLarge, MCPError):
            await self.request(_ping, probe=True)

    # ----------------------------------------------------------------------------------------
    # Health, for /ready, admin status and metrics.

    def status(self) -> dict:
        """Everything an operator wants to know, as plain data (no secrets, no host paths)."""
        now = time.monotonic()
        status: dict[str, Any] = {"status": self.state}
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
        if self.state == "starting":
            status["starting_for_s"] = round(now - (self._started_at or now), 1)
        elif self.state == "stopped":
            status["error"] = "not running"
        elif not self.healthy:
            status["error"] = self.last_error
            status["down_for_s"] = round(now - (self.unhealthy_since or now), 1)
        return status

    def metrics(self) -> dict[str, float]:
        """Numbers for a metrics exporter: gauges and counters, one flat dict."""
        states = {"closed": 0, "half_open": 1, "open": 2}
        catalog = self.catalog.counts() if self.catalog else {}
        return {
            "up": 1.0 if self.state == "up" else 0.0,
            "starting": 1.0 if self.state == "starting" else 0.0,
            "circuit_state": float(states[self.breaker.state]),
            "circuit_opened_total": float(self.breaker.times_opened),
            "consecutive_failures": float(self.breaker.consecutive_failures),
            "catalog_tools": float(catalog.get("tools", 0)),
            "catalog_offered": 1.0 if self.offered_catalog() is not None else 0.0,
            **{f"{name}_total": float(value) for name, value in self.counters.items()},
            "restarts_total": float(self.link.restarts),
        }


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
