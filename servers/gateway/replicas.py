"""What the admin tools see of a deployment: the live gateway processes and their recent calls.

With the deployment's Redis (``servers.deployment``) every gateway process (each uvicorn worker
of each replica) keeps an entry there, renewed every ``audit.heartbeat_s`` with a time to live
of three beats: its label (``servers.replica.process_name``), host, pid, start, version and its
backends' states. It also pushes each call record (already redacted, naming its replica) to one
list capped at ``audit.recent``. ``admin_status`` lists the live processes and
``admin_recent_calls`` reads that list. Without Redis, or while it cannot be reached, both answer
from this process and say so (``scope``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
from collections import deque
from contextlib import asynccontextmanager, suppress
from dataclasses import asdict
from datetime import UTC, datetime

import anyio

from servers import deployment
from servers.gateway.audit import Audit, CallRecord
from servers.health import Health, project_version
from servers.replica import process_name
from servers.settings import GatewaySettings

log = logging.getLogger("gateway.replicas")
MISSED_BEATS = 3
THIS_PROCESS = "this process"
DEPLOYMENT = "deployment"
NO_REDIS = "no shared Redis is configured (GATEWAY_PIPELINES__TASKS_URL is memory://)"
UNREACHABLE = "the deployment's Redis cannot be reached"


def _redis_errors() -> tuple[type[BaseException], ...]:
    from redis.exceptions import RedisError

    return (RedisError, OSError, TimeoutError)


class Replicas:
    """This process's heartbeat and call records in Redis, and the deployment read back."""

    def __init__(self, settings: GatewaySettings, audit: Audit, health: Health) -> None:
        self.audit = audit
        self.health = health
        self.settings = settings.audit
        self.timeout_s = settings.ready_timeout_s  # each read or write of Redis, at most
        self.redis = deployment.connect(settings, timeout_s=self.timeout_s)
        self.entries_key = deployment.key(settings, "replicas")
        self.entry_prefix = deployment.key(settings, "replica")
        self.recent_key = deployment.key(settings, "recent")
        self.pending: deque[str] = deque(maxlen=self.settings.recent)
        self.started = datetime.now(UTC).isoformat(timespec="seconds")
        self.wake: asyncio.Event | None = None
        self.pushing: asyncio.Lock | None = None  # one flush at a time: no record pushed twice
        self.runner: asyncio.Task | None = None
        self.users = 0
        self.reachable = True
        if self.redis is not None:
            audit.listeners.append(self._queue)

    def _queue(self, record: CallRecord) -> None:
        self.pending.append(json.dumps(asdict(record), ensure_ascii=True))
        if self.wake is not None:
            self.wake.set()

    @asynccontextmanager
    async def lifespan(self, server=None):
        """Beat and push while the gateway serves (one runner however many overlapping
        lifespans); remove this process's entry when the last one ends."""
        if self.redis is None:
            yield {}
            return
        self.users += 1
        if self.runner is None:
            self.wake, self.pushing = asyncio.Event(), asyncio.Lock()
            self.runner = asyncio.create_task(self._run())
        try:
            yield {}
        finally:
            self.users -= 1
            if self.users == 0 and self.runner is not None:
                self.runner.cancel()
                with anyio.CancelScope(shield=True):
                    with suppress(asyncio.CancelledError, Exception):
                        await self.runner
                    self.runner = self.wake = self.pushing = None
                    await self._leave()

    async def _run(self) -> None:
        """Beat every heartbeat_s; push call records as they come."""
        loop = asyncio.get_running_loop()
        next_beat = 0.0
        while True:
            if loop.time() >= next_beat:
                await self._beat()
                next_beat = loop.time() + self.settings.heartbeat_s
            with suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), max(0.01, next_beat - loop.time()))
            self.wake.clear()
            await self.flush()

    def entry(self) -> dict:
        backends = self.health.metrics().get("backends", {})
        return {
            "replica": process_name(),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": self.started,
            "version": project_version(),
            "backends": {
                name: "up" if numbers.get("up") else "down" for name, numbers in backends.items()
            },
            "heartbeat": datetime.now(UTC).isoformat(timespec="seconds"),
        }

    async def _beat(self) -> None:
        name = process_name()
        ttl = max(1, round(self.settings.heartbeat_s * MISSED_BEATS))
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.set(f"{self.entry_prefix}:{name}", json.dumps(self.entry()), ex=ttl)
                pipe.sadd(self.entries_key, name)
                await pipe.execute()
            self._reached(True)
        except _redis_errors() as exc:
            self._reached(False, exc)

    async def _leave(self) -> None:
        name = process_name()
        try:
            with anyio.fail_after(self.timeout_s):
                await self.redis.delete(f"{self.entry_prefix}:{name}")
                await self.redis.srem(self.entries_key, name)
        except _redis_errors():
            pass

    def _reached(self, ok: bool, exc: BaseException | None = None) -> None:
        if ok and not self.reachable:
            log.warning("deployment view: the deployment's Redis answers again")
        elif not ok and self.reachable:
            log.warning(
                "deployment view: the deployment's Redis cannot be reached (%s); admin_status "
                "and admin_recent_calls describe this process only until it answers",
                type(exc).__name__,
            )
        self.reachable = ok

    async def flush(self) -> bool:
        """Push the records not pushed yet (newest first in the list); False if Redis failed
        (they stay queued, up to ``audit.recent`` of them)."""
        if self.redis is None:
            return False
        if self.pushing is None:  # outside the lifespan (a test): no runner to race with
            return await self._push()
        async with self.pushing:
            return await self._push()

    async def _push(self) -> bool:
        if not self.pending:
            return True
        batch = list(self.pending)
        try:
            with anyio.fail_after(self.timeout_s):
                async with self.redis.pipeline(transaction=False) as pipe:
                    pipe.lpush(self.recent_key, *batch)
                    pipe.ltrim(self.recent_key, 0, self.settings.recent - 1)
                    await pipe.execute()
        except _redis_errors() as exc:
            self._reached(False, exc)
            return False
        for _ in batch:  # records queued meanwhile stay
            if self.pending:
                self.pending.popleft()
        self._reached(True)
        return True

    async def processes(self) -> dict:
        """Which process answered and, with Redis, every live one of the deployment."""
        answered = process_name()
        if self.redis is None:
            return {"answered_by": answered, "scope": THIS_PROCESS, "note": NO_REDIS}
        try:
            with anyio.fail_after(self.timeout_s):
                names = sorted(n.decode() for n in await self.redis.smembers(self.entries_key))
                values = (
                    await self.redis.mget([f"{self.entry_prefix}:{n}" for n in names])
                    if names
                    else []
                )
                gone = [n for n, v in zip(names, values, strict=True) if v is None]
                if gone:
                    await self.redis.srem(self.entries_key, *gone)
        except _redis_errors() as exc:
            self._reached(False, exc)
            return {"answered_by": answered, "scope": THIS_PROCESS, "note": UNREACHABLE}
        live = [json.loads(v) for v in values if v is not None]
        return {"answered_by": answered, "scope": DEPLOYMENT, "live": live}

    async def recent_calls(
        self, limit: int, tool: str | None, client: str | None, errors_only: bool
    ) -> dict:
        """Newest first, from every process of the deployment (or this one, saying so)."""
        answered = process_name()

        def this_process(note: str) -> dict:
            calls = self.audit.recent_calls(limit, tool, client, errors_only)
            return {"scope": THIS_PROCESS, "answered_by": answered, "note": note, "calls": calls}

        if self.redis is None:
            return this_process(NO_REDIS)
        raw = None
        if await self.flush():
            try:
                with anyio.fail_after(self.timeout_s):
                    raw = await self.redis.lrange(self.recent_key, 0, self.settings.recent - 1)
            except _redis_errors() as exc:
                self._reached(False, exc)
        if raw is None:
            return this_process(UNREACHABLE)
        calls = []
        for item in raw:
            record = json.loads(item)
            if tool is not None and record.get("name") != tool:
                continue
            if client is not None and record.get("client") != client:
                continue
            if errors_only and record.get("outcome") == "ok":
                continue
            calls.append(record)
            if len(calls) >= limit:
                break
        return {"scope": DEPLOYMENT, "answered_by": answered, "calls": calls}
