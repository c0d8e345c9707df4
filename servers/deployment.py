"""What the replicas of one deployment share: the Redis named by the background-run queue's URL
(``GATEWAY_PIPELINES__TASKS_URL``), when it is a ``redis://`` one. A single process without Redis
shares nothing and needs none of this.

Keys are prefixed with the queue's name (``GATEWAY_PIPELINES__TASKS_NAME``), so deployments that
share one Redis stay apart, as their queues do.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from servers.settings import GatewaySettings

if TYPE_CHECKING:
    import redis.asyncio


def redis_url(settings: GatewaySettings) -> str | None:
    """The deployment's Redis URL, or None for a single process (an in-process queue)."""
    url = settings.pipelines.tasks_url.get_secret_value()
    return None if url.startswith("memory://") else url


def key(settings: GatewaySettings, *parts: str) -> str:
    """A Redis key of this deployment: ``<queue name>:gateway:<parts>``."""
    return ":".join((settings.pipelines.tasks_name, "gateway", *parts))


def connect(settings: GatewaySettings, timeout_s: float = 2.0) -> redis.asyncio.Redis | None:
    """A client of the deployment's Redis (connections made on first use, each command bounded
    by timeout_s), or None without one. Callers catch ``redis.exceptions.RedisError`` and
    ``OSError`` and say what a client loses while Redis is down."""
    url = redis_url(settings)
    if url is None:
        return None
    import redis.asyncio as aioredis

    return aioredis.Redis.from_url(
        url,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry_on_timeout=True,
        health_check_interval=30,
    )
