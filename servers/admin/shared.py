"""Admin changes that reach every process of a deployment: the components ``admin_set_enabled``
hides, and ``admin_reload``.

``Visibility`` is one process's side: what it hides, applied with fastmcp's enable/disable. How
a change travels is a ``Changes``:

- ``ThisProcess`` (no Redis: one process, or ``--workers N`` on an in-process queue): a change
  applies to the process that got the call only, and the answer says so.
- ``RedisChanges`` (the deployment's Redis, ``servers.deployment``): the hidden set lives in a
  Redis hash, so a process started later hides the same components at start-up, and a counter
  numbers the reloads. Every change is published on a channel every gateway process subscribes
  to; each applies it (hides, shows, or runs the same reload on the same config) and tells its
  own connected clients the lists changed. Pub/sub drops what is sent while a subscriber is
  away, so on every (re)subscription a process reads the hidden set and the counter again and
  catches up. Whenever Redis is reachable its hidden set is the truth.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Protocol

import anyio
from fastmcp import FastMCP
from fastmcp.exceptions import ToolError
from fastmcp.server.providers import Provider

from servers import deployment
from servers.replica import process_name
from servers.settings import GatewaySettings

logger = logging.getLogger(__name__)

THIS_PROCESS = (
    "applied by this process only: no Redis is configured, so other gateway processes "
    "(workers, replicas) keep their own state"
)
SENT = "sent to every replica via Redis; each applies it within a few seconds"
NOT_SENT = (
    "applied by this process only: Redis could not be reached, so the other replicas did NOT "
    "get it; call again when Redis is back (when it returns, every process, this one too, "
    "follows the state kept in Redis)"
)
RETRY_S = 1.0  # between attempts to subscribe again while Redis is away
CALL_BOUND_S = 5.0  # a tool call waits this long at most for Redis
KINDS = ("tools", "resources", "prompts")  # the lists a change can touch
MAX_MESSAGE_BYTES = 64_000  # a change is a few hundred bytes; anything larger is dropped

Announce = Callable[[set[str]], Awaitable[None]]
Reload = Callable[[], Awaitable[set[str]]]


@dataclass(frozen=True)
class Spot:
    """Where a hidden component is: its list kind and fastmcp key (the same in every process)."""

    kind: str
    key: str


class Visibility:
    """The components this process hides, by the name clients see."""

    def __init__(self, gateway: FastMCP) -> None:
        self.gateway = gateway
        self.hidden: dict[str, Spot] = {}

    def hide(self, component: str, spot: Spot) -> bool:
        """Hide it; False when it was hidden already."""
        if component in self.hidden:
            return False
        self.hidden[component] = spot
        self.gateway.disable(keys={spot.key})
        return True

    def show(self, component: str) -> Spot | None:
        """Show it again; None when it was not hidden."""
        spot = self.hidden.pop(component, None)
        if spot is not None:
            self.gateway.enable(keys={spot.key})
        return spot

    def follow(self, wanted: dict[str, Spot]) -> set[str]:
        """Hide exactly ``wanted``; the kinds of lists that changed."""
        kinds = set()
        for name in [name for name in self.hidden if name not in wanted]:
            kinds.add(self.show(name).kind)
        for name, spot in wanted.items():
            if self.hide(name, spot):
                kinds.add(spot.kind)
        return kinds


class Changes(Protocol):
    """How a change made in this process reaches the deployment's other processes. Each
    method returns what the answer says about them (``deployment``)."""

    async def hidden(self, component: str, spot: Spot) -> str: ...

    async def shown(self, component: str) -> str: ...

    async def reloaded(self) -> str: ...

    def lifespan(self) -> AbstractAsyncContextManager[None]:
        """Keep following the other processes' changes while the gateway runs."""


class ThisProcess:
    """No Redis: nothing to send, nothing to follow."""

    async def hidden(self, component: str, spot: Spot) -> str:
        return THIS_PROCESS

    async def shown(self, component: str) -> str:
        return THIS_PROCESS

    async def reloaded(self) -> str:
        return THIS_PROCESS

    @asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        yield


def spot_of(data: dict) -> Spot:
    """The spot a change or hidden entry names; ValueError when it is not one of ours."""
    if data["kind"] not in KINDS:
        raise ValueError("not a list kind")
    return Spot(data["kind"], str(data["key"]))


def parse_spots(entries: dict[bytes, bytes]) -> dict[str, Spot]:
    """The hidden set as kept in Redis; entries that are not ours are left out."""
    wanted = {}
    for name, value in entries.items():
        try:
            wanted[name.decode()] = spot_of(json.loads(value))
        except (ValueError, KeyError, TypeError):
            logger.warning("shared admin state: a malformed hidden entry was ignored")
    return wanted


class RedisChanges:
    """Changes sent and followed through the deployment's Redis."""

    def __init__(
        self,
        settings: GatewaySettings,
        visibility: Visibility,
        reload: Reload,
        announce: Announce,
    ) -> None:
        self.client = deployment.connect(settings)
        self.hash = deployment.key(settings, "admin", "hidden")
        self.counter = deployment.key(settings, "admin", "reloads")
        self.channel = deployment.key(settings, "admin", "changes")
        self.visibility, self.reload, self.announce = visibility, reload, announce
        # One per gateway (a process may build several, as tests do): never acts on its own.
        self.origin = f"{process_name()}-{secrets.token_hex(4)}"
        self.generation: int | None = None  # the last reload this process applied
        self.followed = anyio.Event()  # set once the first catch-up was tried

    async def _send(self, commands: Callable) -> list | None:
        """Run commands (one transaction); None when Redis cannot be reached."""
        from redis.exceptions import RedisError

        try:
            with anyio.fail_after(CALL_BOUND_S):
                async with self.client.pipeline(transaction=True) as pipe:
                    commands(pipe)
                    return await pipe.execute()
        except (RedisError, OSError, TimeoutError) as exc:
            logger.warning("shared admin state: Redis unreachable (%s)", type(exc).__name__)
            return None

    def _message(self, action: str, **fields) -> str:
        return json.dumps({"origin": self.origin, "action": action, **fields})

    async def hidden(self, component: str, spot: Spot) -> str:
        value = json.dumps({"kind": spot.kind, "key": spot.key})
        message = self._message("hide", component=component, kind=spot.kind, key=spot.key)
        done = await self._send(
            lambda pipe: pipe.hset(self.hash, component, value).publish(self.channel, message)
        )
        return SENT if done is not None else NOT_SENT

    async def shown(self, component: str) -> str:
        message = self._message("show", component=component)
        done = await self._send(
            lambda pipe: pipe.hdel(self.hash, component).publish(self.channel, message)
        )
        return SENT if done is not None else NOT_SENT

    async def reloaded(self) -> str:
        done = await self._send(lambda pipe: pipe.incr(self.counter))
        if done is None:
            return NOT_SENT
        generation = int(done[0])
        self.generation = max(self.generation or 0, generation)
        message = self._message("reload", generation=generation)
        await self._send(lambda pipe: pipe.publish(self.channel, message))
        # Published or not, the counter moved: the others catch up when they next subscribe.
        return SENT

    async def catch_up(self) -> None:
        """Follow the hidden set and the reload counter as Redis has them now."""
        entries = await self.client.hgetall(self.hash)
        generation = int(await self.client.get(self.counter) or 0)
        kinds = self.visibility.follow(parse_spots(entries))
        if self.generation is not None and generation > self.generation:
            kinds |= await self._reload()
        self.generation = generation
        if kinds:
            await self.announce(kinds)

    async def _reload(self) -> set[str]:
        try:
            return await self.reload()
        except ToolError as exc:  # the config is bad here: the old one stays
            logger.warning("shared admin state: a reload was not applied: %s", exc)
        except Exception as exc:  # a part failed: keep following the others' changes
            logger.warning("shared admin state: a reload failed (%s)", type(exc).__name__)
        return set()

    async def receive(self, data: bytes) -> None:
        """Apply a change another process published."""
        if len(data) > MAX_MESSAGE_BYTES:
            return
        try:
            change = json.loads(data)
            if change["origin"] == self.origin:
                return
            action = change["action"]
            if action == "hide":
                spot = spot_of(change)
                kinds = (
                    {spot.kind} if self.visibility.hide(str(change["component"]), spot) else set()
                )
            elif action == "show":
                spot = self.visibility.show(str(change["component"]))
                kinds = {spot.kind} if spot else set()
            elif action == "reload":
                generation = int(change["generation"])
                if self.generation is not None and generation <= self.generation:
                    return
                kinds = await self._reload()
                self.generation = max(self.generation or 0, generation)
            else:
                return
        except (ValueError, KeyError, TypeError):
            logger.warning("shared admin state: a malformed change was ignored")
            return
        if kinds:
            await self.announce(kinds)

    async def follow(self) -> None:
        """Subscribe, apply each change, and catch up on every (re)subscription: redis-py
        reconnects a dropped subscription by itself, and Redis confirms each one."""
        from redis.exceptions import RedisError

        away = False
        while True:
            try:
                async with self.client.pubsub() as pubsub:
                    await pubsub.subscribe(self.channel)
                    while True:
                        message = await pubsub.get_message(timeout=1.0)
                        if message is None:
                            continue
                        if message["type"] == "subscribe":
                            await self.catch_up()
                            self.followed.set()
                            if away:
                                logger.warning("shared admin state: Redis is back, caught up")
                                away = False
                        elif message["type"] == "message":
                            await self.receive(message["data"])
            except (RedisError, OSError, TimeoutError) as exc:
                self.followed.set()
                if not away:
                    logger.warning(
                        "shared admin state: Redis unreachable (%s); this process keeps its "
                        "state and catches up when Redis is back",
                        type(exc).__name__,
                    )
                    away = True
            await anyio.sleep(RETRY_S)

    @asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        """Follow while the gateway runs; the first catch-up is awaited a few seconds at most,
        so a process that starts while components are hidden starts hiding them."""
        runner = asyncio.create_task(self.follow())
        with anyio.move_on_after(CALL_BOUND_S):
            await self.followed.wait()
        try:
            yield
        finally:
            runner.cancel()
            with anyio.CancelScope(shield=True):
                await asyncio.gather(runner, return_exceptions=True)
                await self.client.aclose()


class Following(Provider):
    """Offers nothing: runs ``changes.lifespan`` inside the gateway's (fastmcp closes provider
    lifespans with the server's)."""

    def __init__(self, changes: Changes) -> None:
        super().__init__()
        self.changes = changes

    def __repr__(self) -> str:
        return f"Following({type(self.changes).__name__})"

    @asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        async with self.changes.lifespan():
            yield


def changes_for(
    settings: GatewaySettings, visibility: Visibility, reload: Reload, announce: Announce
) -> Changes:
    """RedisChanges when the deployment has a Redis, otherwise ThisProcess."""
    if deployment.redis_url(settings) is None:
        return ThisProcess()
    return RedisChanges(settings, visibility, reload, announce)
