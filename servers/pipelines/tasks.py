"""Background runs: the tasks extension (in-process or Redis, shared with task workers) and
what ``start_run``, ``get_run`` and ``cancel_run`` need of it."""

import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from fastmcp import FastMCP
from fastmcp.exceptions import ToolError
from fastmcp.tools import Tool
from fastmcp.utilities.tasks import TaskConfig
from fastmcp_tasks import TasksExtension
from mcp.shared.exceptions import MCPError
from redis.exceptions import RedisError

from servers.settings import GatewaySettings

# Clients that speak the tasks extension get a task; they poll it, backing off up to this.
BACKGROUND = TaskConfig(mode="optional", poll_interval=timedelta(milliseconds=200))
QUEUE_DOWN = (
    "Background runs are unavailable: the queue cannot be reached. Try again in a moment, or "
    "use run_pipeline (it runs without the queue)."
)
# A run whose worker stopped (killed, lost) is delivered again, from the start, at most once.
MAX_ATTEMPTS = 2
WORKER_STOPPED = (
    "its worker stopped while running it (killed or lost); running it again from the start "
    f"on another worker (attempt 2 of {MAX_ATTEMPTS})"
)
WORKER_STOPPED_AGAIN = (
    "its worker stopped again while running it; the run is marked failed as soon as a worker "
    "takes it up"
)
STOPPED_TWICE = (
    f"Background run failed: its worker stopped {MAX_ATTEMPTS} times while running it (killed "
    "or lost, e.g. out of memory). Start it again with pipelines_start_run; if it keeps "
    "happening, narrow its inputs or ask an operator to check the task workers."
)
ATTEMPTS_TTL_S = 24 * 3600
logger = logging.getLogger(__name__)
T = TypeVar("T")


@contextmanager
def queue_errors() -> Iterator[None]:
    """Turn the queue's connection failures (Redis down, restarting, loading its data) into
    the ToolError a client can act on; the cause goes to the log, without the queue's URL."""
    try:
        yield
    except (RedisError, OSError) as exc:
        logger.warning("the background-run queue cannot be reached: %s", type(exc).__name__)
        raise ToolError(QUEUE_DOWN) from None


async def on_queue(call: Callable[[], Awaitable[T]]) -> T:
    """call(), once more when the queue failed it: after Redis restarts, each pooled connection
    fails its first command ("Connection closed by server") and reconnects on the next. Then
    the ToolError of ``queue_errors``."""
    try:
        return await call()
    except (RedisError, OSError):
        pass
    with queue_errors():
        return await call()


def reconnecting(url: str) -> str:
    """url with redis-py's one retry of a command whose connection failed: after Redis
    restarts, every pooled connection fails its next command ("Connection closed by server"),
    which would fail runs in flight; with the retry it reconnects and goes on."""
    if "retry_on_timeout=" in url:
        return url
    return url + ("&" if "?" in url else "?") + "retry_on_timeout=true"


def masked_url(url: str) -> str:
    """url with its password (and user name) replaced by ***, for logs."""
    parts = urlsplit(url)
    if parts.password is None and parts.username is None:
        return url
    host = parts.hostname or ""
    netloc = f"***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


async def queue_health(url: str) -> dict:
    """Readiness check of the Redis queue: up when it answers PING within a second."""
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
    try:
        await client.ping()
    except (RedisError, OSError):
        return {"status": "down", "error": "the queue cannot be reached"}
    finally:
        await client.aclose()
    return {"status": "up"}


class PipelineTasks(TasksExtension):
    """The tasks extension, consulted only for the pipelines' tools (named ``namespace_...``
    once mounted): no other tool runs as a task, and the extension looks every called tool up
    to learn whether it may, a lookup other calls need not pay for."""

    def __init__(self, *, namespace: str | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.prefix = f"{namespace}_" if namespace else ""

    async def intercept_tool_call(self, params, context, call_next):
        if not params.name.startswith(self.prefix):
            return await call_next()
        with queue_errors():
            return await super().intercept_tool_call(params, context, call_next)


def tasks_extension(
    settings: GatewaySettings, namespace: str | None = None, *, worker: bool = False
) -> PipelineTasks:
    """The background-run queue from settings: in-process (memory://, private to this server)
    or Redis, shared by name with worker processes. ``namespace``: where the pipelines server
    is mounted on the server the extension is added to. ``worker``: a task worker, which
    takes runs whatever ``tasks_in_gateway`` says (a gateway on Redis takes none without it:
    its queue's worker then has no slot, and only renews, schedules and reports)."""
    url = settings.pipelines.tasks_url.get_secret_value()
    name = settings.pipelines.tasks_name
    takes_runs = worker or settings.pipelines.tasks_in_gateway
    if url.startswith("memory://"):
        name = f"{name}-{uuid.uuid4().hex[:8]}"
        takes_runs = True  # nobody else could
    else:
        url = reconnecting(url)
    return PipelineTasks(
        namespace=namespace,
        url=url,
        name=name,
        concurrency=settings.pipelines.tasks_concurrency if takes_runs else 0,
        redelivery_timeout=timedelta(seconds=settings.pipelines.tasks_redelivery_s),
    )


def services(settings: GatewaySettings) -> dict[str, Callable[[], Awaitable[dict]]]:
    """Readiness checks of what background and Dask runs depend on, when configured: the Redis
    queue (``queue``) and the Dask scheduler (``dask_scheduler``)."""
    from servers.pipelines.engines import scheduler_health

    checks: dict[str, Callable[[], Awaitable[dict]]] = {}
    url = settings.pipelines.tasks_url.get_secret_value()
    if not url.startswith("memory://"):
        checks["queue"] = lambda: queue_health(url)
    if settings.pipelines.dask_scheduler:
        checks["dask_scheduler"] = lambda: scheduler_health(settings.pipelines.dask_scheduler)
    return checks


def tasks_root(tasks: TasksExtension) -> FastMCP:
    """The server the background-run extension is registered on, while it is running."""
    try:
        root = tasks.server
    except RuntimeError:  # not registered on any server
        root = None
    if root is None or root.docket is None:
        raise ToolError("Background runs are not available right now; use run_pipeline.")
    return root


async def registered_task(root: FastMCP, function: Callable[..., Any]) -> Tool:
    """run_pipeline as the root server registered it for background runs (namespaced)."""
    for component in await root.get_tasks():
        if getattr(component, "fn", None) is function:
            return component
    raise ToolError("Background runs are not available on this server; use run_pipeline.")


async def task_call(
    tasks: TasksExtension, run_id: str, handler: Callable[[FastMCP, str], Awaitable[Any]]
) -> Any:
    root = tasks_root(tasks)
    try:
        return await on_queue(lambda: handler(root, run_id))
    except MCPError:
        raise ToolError(
            f"There is no background run {run_id!r} in the queue: the id is wrong, or the "
            "queue lost it (a Redis restart without its data). Start the run again with "
            "start_run."
        ) from None


def run_status(task: Any) -> dict[str, Any]:
    status: dict[str, Any] = {"run_id": task.task_id, "status": task.status}
    if task.status == "working" and task.status_message:
        status["progress"] = task.status_message
    if task.status == "failed":
        status["error"] = task.status_message or "the run failed"
    if task.status == "completed" and task.result is not None:
        if task.result.get("isError"):
            status["status"] = "failed"
            status["error"] = " ".join(
                c.get("text", "") for c in task.result.get("content", [])
            ).strip()
        else:
            status["result"] = task.result.get("structuredContent")
    return status


async def begin_attempt() -> str:
    """Count this start of the current background run: a run whose worker stopped is
    delivered again, from the start. Returns "" on the first attempt, the note its progress
    carries on the retry; beyond MAX_ATTEMPTS the run fails (ToolError) instead. A queue
    that cannot count (Redis down) lets the run go on as a first attempt."""
    from docket.dependencies import current_execution

    try:
        execution = current_execution.get()
    except LookupError:  # not a docket run
        return ""
    if execution.docket.url.startswith("memory://"):  # in-process: it dies with its gateway
        return ""
    key = execution.docket.key(f"pipelines:attempts:{execution.key}")
    try:
        async with execution.docket.redis() as redis:
            attempt = int(await redis.incr(key))
            await redis.expire(key, ATTEMPTS_TTL_S)
    except (RedisError, OSError) as exc:
        logger.warning("could not count the attempts of a background run: %s", type(exc).__name__)
        return ""
    if attempt > MAX_ATTEMPTS:
        logger.warning("a background run failed: its worker stopped %d times", attempt - 1)
        raise ToolError(STOPPED_TWICE)
    if attempt > 1:
        logger.warning("a background run is retried (attempt %d): its worker stopped", attempt)
        return f"retry after its worker stopped (attempt {attempt} of {MAX_ATTEMPTS})"
    return ""


async def lost_worker_note(root: FastMCP, run_id: str) -> str | None:
    """What a working run's status says while its worker is gone (it stopped sending
    heartbeats) and the queue has not yet given the run to another: that it will be retried,
    or failed. None while its worker lives, or when the queue cannot tell."""
    from fastmcp_tasks.context import get_task_scope
    from fastmcp_tasks.keys import task_redis_prefix

    docket = root.docket
    if docket is None or docket.url.startswith("memory://"):  # in-process: its worker is here
        return None
    meta = docket.key(f"{task_redis_prefix(get_task_scope())}:{run_id}")
    window = docket.heartbeat_interval.total_seconds() * docket.missed_heartbeats
    async with docket.redis() as redis:
        task_key = await redis.get(meta)
        if not task_key:
            return None
        task_key = task_key.decode()
        state, worker = await redis.hmget(docket.runs_key(task_key), ["state", "worker"])
        if state != b"running" or not worker:
            return None
        seen = await redis.zscore(docket.workers_set, worker)
        if seen is not None and seen >= time.time() - window:
            return None
        attempts = await redis.get(docket.key(f"pipelines:attempts:{task_key}"))
    if attempts is not None and int(attempts) >= MAX_ATTEMPTS:
        return WORKER_STOPPED_AGAIN
    return WORKER_STOPPED
