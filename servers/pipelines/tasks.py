"""Background runs: the tasks extension (in-process or Redis, shared with task workers) and
what ``start_run``, ``get_run`` and ``cancel_run`` need of it."""

import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from fastmcp import FastMCP
from fastmcp.exceptions import ToolError
from fastmcp.tools import Tool
from fastmcp.utilities.tasks import TaskConfig
from fastmcp_tasks import TasksExtension
from mcp.shared.exceptions import MCPError

from servers.settings import GatewaySettings

# Clients that speak the tasks extension get a task; they poll it, backing off up to this.
BACKGROUND = TaskConfig(mode="optional", poll_interval=timedelta(milliseconds=200))


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
        return await super().intercept_tool_call(params, context, call_next)


def tasks_extension(settings: GatewaySettings, namespace: str | None = None) -> PipelineTasks:
    """The background-run queue from settings: in-process (memory://, private to this server)
    or Redis, shared by name with worker processes. ``namespace``: where the pipelines server
    is mounted on the server the extension is added to."""
    url = settings.pipelines.tasks_url.get_secret_value()
    name = settings.pipelines.tasks_name
    if url.startswith("memory://"):
        name = f"{name}-{uuid.uuid4().hex[:8]}"
    return PipelineTasks(
        namespace=namespace,
        url=url,
        name=name,
        concurrency=settings.pipelines.tasks_concurrency,
    )


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
    try:
        return await handler(tasks_root(tasks), run_id)
    except MCPError:
        raise ToolError(
            f"There is no background run {run_id!r} (runs are kept for a while after they "
            "end). Start one with start_run."
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
