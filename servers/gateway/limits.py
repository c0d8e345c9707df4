"""Limits on what one client can ask: a token bucket of calls per client, a cap on the size of a
response, and (for HTTP) a cap on the size of a request body.

The rate limit applies to clients with an access token, each its own bucket; local clients
(stdio, in-memory, loopback HTTP without auth) are not limited. With the deployment's Redis
(``servers.deployment``) a client's bucket lives there, taken from atomically by one Lua script,
so burst and rate hold across every process of every replica. While Redis cannot be reached
(each attempt bounded by ``limits.shared_timeout_s``) every process falls back to its own bucket,
logs that once, and tries Redis again every ``limits.shared_retry_s``: a Redis outage never
refuses or holds up a call.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field
from typing import ClassVar

import anyio
import pydantic_core
from fastmcp.exceptions import PromptError, ResourceError, ToolError
from fastmcp.server.dependencies import get_access_token
from fastmcp.server.middleware import CallNext, Middleware, MiddlewareContext
from fastmcp.tools import ToolResult
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from servers import deployment
from servers.settings import GatewaySettings, LimitSettings

log = logging.getLogger("gateway.limits")

# KEYS[1]: the client's bucket; ARGV: rate per second, capacity. Refills by the time elapsed on
# Redis's own clock (one clock for every replica), takes one token, and returns the seconds to
# wait ("0": taken). An idle bucket expires once it would be full again.
TAKE = """
local rate, capacity = tonumber(ARGV[1]), tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'updated')
local tokens, updated = tonumber(state[1]), tonumber(state[2])
if tokens == nil or updated == nil then tokens, updated = capacity, now end
tokens = math.min(capacity, tokens + math.max(0, now - updated) * rate)
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = (1 - tokens) / rate end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.6f', tokens), 'updated',
  string.format('%.6f', now))
redis.call('PEXPIRE', KEYS[1], math.ceil(capacity / rate * 1000) + 1000)
return string.format('%.6f', wait)
"""


@dataclass
class TokenBucket:
    rate: float
    capacity: float
    tokens: float = -1.0
    updated: float = field(default_factory=time.monotonic)

    def take(self) -> float:
        """Take one token; returns 0 on success, else the seconds until one is available."""
        now = time.monotonic()
        if self.tokens < 0:
            self.tokens = self.capacity
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


class SharedBuckets:
    """Every client's bucket in the deployment's Redis; None from ``take`` when Redis cannot
    answer in time (the caller then uses its own bucket)."""

    def __init__(self, settings: GatewaySettings) -> None:
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        self.redis = deployment.connect(settings, timeout_s=settings.limits.shared_timeout_s)
        # One immediate retry (a connection Redis closed when it restarted), never a backoff.
        self.redis.set_retry(Retry(NoBackoff(), 1))
        self.script = self.redis.register_script(TAKE)
        self.prefix = deployment.key(settings, "rate")
        self.down_until = 0.0  # monotonic time before which Redis is not tried again
        self.outage = False

    @classmethod
    def of(cls, settings: GatewaySettings) -> SharedBuckets | None:
        """The deployment's buckets, or None for a single process without Redis."""
        return cls(settings) if deployment.redis_url(settings) else None

    async def take(self, client: str, limits: LimitSettings) -> float | None:
        if time.monotonic() < self.down_until:
            return None
        from redis.exceptions import RedisError

        name = f"{self.prefix}:{hashlib.sha256(client.encode()).hexdigest()[:32]}"
        try:
            with anyio.fail_after(limits.shared_timeout_s):
                wait = await self.script(keys=[name], args=[limits.rate_per_s, limits.rate_burst])
        except (RedisError, OSError, TimeoutError) as exc:
            self.down_until = time.monotonic() + limits.shared_retry_s
            if not self.outage:
                self.outage = True
                log.warning(
                    "rate limits: the deployment's Redis cannot be reached (%s); each process "
                    "limits calls with its own buckets until it answers",
                    type(exc).__name__,
                )
            return None
        if self.outage:
            self.outage = False
            log.warning("rate limits: the deployment's Redis answers again; limits are global")
        return float(wait)


class ClientLimits(Middleware):
    """Per-client rate limit on calls, reads and gets; size limit on responses."""

    def __init__(self, settings: LimitSettings, shared: SharedBuckets | None = None) -> None:
        self.settings = settings
        self.buckets: dict[str, TokenBucket] = {}  # this process's (without Redis, or its stand-in)
        self.shared = shared

    # max_body_bytes is fixed when the HTTP app is built.
    reloads: ClassVar[frozenset[str]] = frozenset(
        {
            "limits.rate_per_s",
            "limits.rate_burst",
            "limits.max_response_bytes",
            "limits.shared_timeout_s",
            "limits.shared_retry_s",
        }
    )
    lists: ClassVar[frozenset[str]] = frozenset()

    def check(self, new: GatewaySettings) -> LimitSettings | None:
        return None if new.limits == self.settings else new.limits

    async def apply(self, limits: LimitSettings) -> list[str]:
        self.settings = limits
        self.buckets.clear()
        return ["limits"]

    async def _check_rate(self, error: type[Exception]) -> None:
        token = get_access_token()
        if token is None or not self.settings.rate_per_s:
            return
        wait = None
        if self.shared is not None:
            wait = await self.shared.take(token.client_id, self.settings)
        if wait is None:
            bucket = self.buckets.get(token.client_id)
            if bucket is None:
                bucket = TokenBucket(self.settings.rate_per_s, float(self.settings.rate_burst))
                self.buckets[token.client_id] = bucket
            wait = bucket.take()
        if wait:
            raise error(
                f"Rate limit reached for client {token.client_id!r}: "
                f"{self.settings.rate_per_s:g} calls per second (bursts of "
                f"{self.settings.rate_burst}). Retry in {wait:.1f} s."
            )

    def _check_size(self, result, what: str, error: type[Exception]) -> None:
        size = len(pydantic_core.to_json(result, fallback=str))
        if size > self.settings.max_response_bytes:
            raise error(
                f"The response of {what} is {size} bytes, over the gateway's limit of "
                f"{self.settings.max_response_bytes}; ask for less (fewer rows or columns, a "
                "page, a summary)."
            )

    async def on_call_tool(self, context: MiddlewareContext, call_next: CallNext):
        await self._check_rate(ToolError)
        result = await call_next(context)
        if type(result) is ToolResult:  # not an input-required ask, not a task handle
            self._check_size(result, f"tool {context.message.name!r}", ToolError)
        return result

    async def on_read_resource(self, context: MiddlewareContext, call_next: CallNext):
        await self._check_rate(ResourceError)
        result = await call_next(context)
        self._check_size(result, f"resource {str(context.message.uri)!r}", ResourceError)
        return result

    async def on_get_prompt(self, context: MiddlewareContext, call_next: CallNext):
        await self._check_rate(PromptError)
        return await call_next(context)


class BodyLimit:
    """ASGI middleware: a request body over max_bytes gets 413, announced or streamed."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(send)
            return
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _TooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _TooLarge:
            if not started:
                await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        body = f'{{"error": "request body over the limit of {self.max_bytes} bytes"}}'.encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    pass
