"""The pipelines server: registered Hamilton dataflows as typed, cancellable, observable tools.

Runs happen in separate worker processes (``servers/pipelines/pool.py``), so the event loop
never blocks and a run that passes its deadline or is cancelled is killed, not abandoned.
Progress is reported node by node. Run tools are background-task capable: clients that speak
the tasks extension get a task, others a synchronous run; ``start_run``, ``get_run`` and
``cancel_run`` give any client background runs.

Run alone: ``uv run python -m servers.pipelines`` (stdio) or ``... --transport http --port 8002``.
"""

import datetime as dt
import logging
import shutil
import time
import uuid
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

import anyio
from fastmcp import Context, FastMCP
from fastmcp.exceptions import ToolError
from fastmcp.server.dependencies import OptionalCurrentContext
from fastmcp.tools import Tool, ToolResult
from fastmcp.utilities.tasks import TaskConfig
from fastmcp_tasks import TasksExtension
from fastmcp_tasks.creation import create_task
from fastmcp_tasks.handlers import tasks_cancel, tasks_get
from mcp.shared.exceptions import MCPError
from mcp.types import ToolAnnotations
from pydantic import Field

from pipelines import Pipeline
from servers.conventions import READ_ONLY
from servers.lookup import NotFoundHere, Server
from servers.pipelines.chart import add_pipeline_chart_tool
from servers.pipelines.pool import RunWorkers
from servers.pipelines.registry import (
    LoadedPipeline,
    PipelineError,
    PipelineInputs,
    PipelineName,
    PipelineOutputs,
    Validation,
    check_call,
    declared_pipelines,
    describe,
    describe_inputs,
    input_schema,
    mermaid,
    served_registry,
    shape_output,
    validate_in_background,
)
from servers.pipelines.run_owners import RunOwners
from servers.pipelines.worker import Job, PipelinePlan, RunFailed, WorkerSpec
from servers.settings import GatewaySettings
from servers.sql.engine import Engine

# Clients that speak the tasks extension get a task; they poll it, backing off up to this.
BACKGROUND = TaskConfig(mode="optional", poll_interval=timedelta(milliseconds=200))


class Runner:
    """Runs pipelines on worker processes within each pipeline's timeout and concurrency."""

    def __init__(
        self,
        settings: GatewaySettings,
        database: Path,
        loaded: dict[str, LoadedPipeline],
        validation: Validation | None = None,
    ):
        self.settings = settings
        self.loaded = loaded
        self.validation = validation
        defaults = settings.pipelines
        self._limiters = {
            name: anyio.CapacityLimiter(p.spec.concurrency or defaults.concurrency)
            for name, p in loaded.items()
        }
        plans = {
            name: PipelinePlan(p.module.__name__, p.spec.engine, p.spec.cache)
            for name, p in loaded.items()
        }
        spec = WorkerSpec(
            database=database,
            sql=settings.sql,
            settings=defaults,
            scratch_dir=settings.scratch_dir,
            cache_dir=settings.pipeline_cache_dir,
            outputs_dir=settings.pipeline_outputs_dir,
            plans=plans,
        )
        self.workers = RunWorkers(spec, defaults.concurrency)
        self._active: dict[int, dict[str, Any]] = {}  # runs in progress, for admin status
        self._serial = 0

    def active_runs(self) -> list[dict[str, Any]]:
        """The runs in progress in this process, oldest first: pipeline, started (UTC),
        state (waiting for a worker, or running), worker_pid, node progress, and for a
        background run its run_id."""
        return [dict(entry) for entry in self._active.values()]

    async def validated(self) -> None:
        """Wait (within the run timeout) until every pipeline was validated, so that a broken
        one is refused with its problem before anything of it runs."""
        timeout = self.settings.pipelines.run_timeout_s
        waiting = self.validation and not self.validation.done.is_set()
        if waiting and not await anyio.to_thread.run_sync(self.validation.wait, timeout):
            raise ToolError(f"Pipelines are still being validated after {timeout:g} s.")

    def get(self, name: str) -> LoadedPipeline:
        if self.validation and not self.validation.done.is_set():
            # Only the sync tools (describe, dag: run in threads) get here before validation
            # answered; the async ones await validated() first. Waiting keeps Hamilton out.
            self.validation.wait(self.settings.pipelines.run_timeout_s)
        if self.validation and name in self.validation.problems:
            raise ToolError(
                f"Pipeline {name!r} is withdrawn: {self.validation.problems[name]}. Use "
                "another pipeline (list_pipelines); an operator must fix it and restart."
            )
        if name not in self.loaded:
            raise ToolError(
                f"There is no pipeline named {name!r}. Available: {', '.join(self.loaded)}."
            )
        return self.loaded[name]

    def timeout_s(self, pipeline: LoadedPipeline) -> float:
        return pipeline.spec.timeout_s or self.settings.pipelines.run_timeout_s

    async def run(
        self,
        name: str,
        inputs: Mapping[str, Any] | None,
        outputs: list[str] | None,
        ctx: Context | None,
        max_rows: int | None = None,
        max_bytes: int | None = None,
    ) -> dict[str, Any]:
        """Check the call, run it on a worker within the pipeline's timeout and concurrency
        (reporting progress to ctx), and return its shaped result; ToolError otherwise.

        Tables are capped at the sql limits unless max_rows/max_bytes say otherwise (a chart
        asks for up to its points cap)."""
        await self.validated()
        pipeline = self.get(name)
        try:
            values, chosen = check_call(pipeline, inputs, outputs)
        except PipelineError as exc:
            raise ToolError(str(exc)) from None
        limits = self.settings.sql
        job = Job(
            name,
            values,
            chosen,
            max_rows or limits.max_rows,
            max_bytes or limits.max_result_bytes,
            self.settings.pipelines.persist_results,
        )
        entry: dict[str, Any] = {
            "pipeline": name,
            "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "state": "waiting",
            "worker_pid": None,
        }
        if ctx is not None and ctx.is_background_task:
            entry["run_id"] = ctx.task_id
        report = _Reporter(ctx, name, entry)
        timeout = self.timeout_s(pipeline)
        started = time.perf_counter()
        await report.log(f"Running pipeline {name} for {', '.join(chosen)}.")
        self._serial += 1
        key = self._serial
        self._active[key] = entry
        try:
            with anyio.fail_after(timeout):
                async with self._limiters[name]:
                    answer = await self.workers.run(job, report.progress, report.on_worker)
        except TimeoutError:
            raise ToolError(
                f"Pipeline {name!r} ran longer than {timeout:g} s and was stopped (its worker "
                "was killed). Narrow its inputs (a shorter date range, one origin)."
            ) from None
        except RunFailed as exc:
            raise ToolError(f"Pipeline {name!r} failed: {exc}") from None
        finally:
            self._active.pop(key, None)
        elapsed = time.perf_counter() - started
        await report.log(f"Pipeline {name} finished in {elapsed:.2f} s.")
        result: dict[str, Any] = {
            "pipeline": name,
            "inputs": shape_output(values, limits.max_rows, limits.max_result_bytes),
            "outputs": answer["outputs"],
        }
        if "parquet" in answer:
            result["parquet"] = answer["parquet"]
            result["parquet_hint"] = (
                "Every table output is also saved in full as Parquet: query it with sql_query, "
                "e.g. SELECT * FROM 'pipeline_outputs/...parquet' (the names above)."
            )
        result["run"] = {
            "seconds": round(elapsed, 3),
            "worker_pid": answer["worker_pid"],
            **({"cache": answer["cache"]} if "cache" in answer else {}),
        }
        return result


class _Reporter:
    """Node-level progress (``ctx.report_progress``) and log lines to the client; in a
    background run, progress becomes the run's status message."""

    def __init__(self, ctx: Context | None, pipeline: str, entry: dict[str, Any] | None = None):
        self.ctx = ctx
        self.pipeline = pipeline
        self.entry = entry if entry is not None else {}

    def on_worker(self, pid: int) -> None:
        self.entry.update(state="running", worker_pid=pid)

    async def progress(self, done: int, total: int, node: str) -> None:
        self.entry["progress"] = f"{done}/{total} nodes done, last {node}"
        if self.ctx is not None:
            message = f"{self.pipeline}: {done}/{total} nodes done, last {node}"
            await self.ctx.report_progress(done, total, message)

    async def log(self, message: str) -> None:
        if self.ctx is not None and not self.ctx.is_background_task:
            await self.ctx.info(message, logger_name="pipelines")


class PipelineTool(Tool):
    """``run_<name>``: one pipeline as a tool whose input schema is its inputs' schema."""

    pipeline: Annotated[str, Field(exclude=True)]
    runner: Annotated[Any, Field(exclude=True)]

    async def run(self, arguments: dict[str, Any]) -> ToolResult:
        # The request's context, or in a background run the task's (progress goes to the task).
        async with OptionalCurrentContext() as ctx:  # type: ignore[attr-defined]
            result = await self.runner.run(self.pipeline, arguments, None, ctx)
        return self.convert_result(result)


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


class PipelinesControl:
    """What the admin server reads and clears in a running pipelines server: the runs in
    progress (status) and the Hamilton caches in the settings' ``pipeline_cache_dir``
    (clear_caches)."""

    def __init__(
        self,
        runner: Runner,
        cache_root: Path,
        tasks: TasksExtension | None = None,
        owners: RunOwners | None = None,
    ) -> None:
        self.runner = runner
        self.cache_root = cache_root
        self.tasks = tasks
        self.owners = owners or RunOwners()

    async def cancel_any(self, run_id: str) -> dict[str, Any]:
        """Cancel a background run whoever started it (for admin_cancel_run); its status."""
        if self.tasks is None:
            raise ToolError("Background runs are not available on this server.")
        with self.owners.acting_as_owner(run_id):
            await _task(self.tasks, run_id, tasks_cancel)
            return _run_status(await _task(self.tasks, run_id, tasks_get))

    def runs(self) -> list[dict[str, Any]]:
        return self.runner.active_runs()

    async def clear_caches(self) -> dict[str, list[str]]:
        """Delete every pipeline's cache except those of pipelines running now (a run keeps
        the cache it is writing), and stop idle workers, whose drivers hold the old caches."""
        running = {run["pipeline"] for run in self.runs()}
        cleared, kept = [], []
        if self.cache_root.is_dir():
            for folder in sorted(self.cache_root.iterdir()):
                if folder.name in running:
                    kept.append(folder.name)
                    continue
                await anyio.to_thread.run_sync(
                    lambda f=folder: shutil.rmtree(f, ignore_errors=True)
                )
                cleared.append(folder.name)
        await self.runner.workers.discard_idle()
        return {"cleared": cleared, "kept_running": kept}


def create_server(
    settings: GatewaySettings,
    engine: Engine | None = None,
    pipelines: Mapping[str, Pipeline] | None = None,
    tasks: TasksExtension | None = None,
) -> FastMCP:
    """The pipelines server over the registry (or the given pipelines), validated now.

    ``tasks`` is the background-run extension of the server this one is mounted on (the
    caller registers it there); without it this server registers its own and runs alone.
    """
    return build_server(settings, engine, pipelines, tasks)[0]


def build_server(
    settings: GatewaySettings,
    engine: Engine | None = None,
    pipelines: Mapping[str, Pipeline] | None = None,
    tasks: TasksExtension | None = None,
) -> tuple[FastMCP, PipelinesControl]:
    """The pipelines server (as ``create_server``) and its control for the admin server."""
    # Hamilton logs every node failure (with its inputs) at ERROR; the caller gets a ToolError.
    logging.getLogger("hamilton").setLevel(logging.CRITICAL)
    if pipelines is None:
        pipelines = served_registry(settings, engine.table_names() if engine else None)
    loaded = declared_pipelines(pipelines, settings.pipelines.overrides)
    # Built and validated in a subprocess while this server serves; see registry.Validation.
    validation = validate_in_background(loaded, settings.pipelines.worker_nice)
    database = engine.database if engine else settings.database()
    runner = Runner(settings, database, loaded, validation)
    owners = RunOwners()  # who started each background run (admin_cancel_run acts as them)
    mcp = Server(
        "pipelines",
        instructions=(
            "Vetted Apache Hamilton dataflows over the database. pipelines_list_pipelines shows "
            "each pipeline's inputs and outputs; run one with its pipelines_run_<name> tool or "
            "pipelines_run_pipeline, or pipelines_start_run for a background run you follow "
            "with pipelines_get_run. Runs stop after "
            f"{settings.pipelines.run_timeout_s:g} s unless configured otherwise; tables are "
            "capped like sql results."
        ),
        mask_error_details=True,
    )
    if tasks is None:
        tasks = tasks_extension(settings)
        mcp.add_extension(tasks)

    @mcp.tool(annotations=READ_ONLY)
    def list_pipelines() -> list[dict]:
        """The pipelines: what each computes, its inputs and outputs, and its run tool."""
        return [
            {
                "name": p.name,
                "description": p.description,
                "inputs": describe_inputs(p),
                "outputs": list(p.spec.outputs),
                "tool": f"pipelines_run_{p.name}",
                "timeout_s": runner.timeout_s(p),
            }
            for p in loaded.values()
        ]

    @mcp.tool(annotations=READ_ONLY)
    def describe_pipeline(
        name: PipelineName,
    ) -> dict:
        """One pipeline in full: description, outputs, nodes, lineage, inputs, Mermaid DAG."""
        return describe(runner.get(name))

    @mcp.tool(annotations=READ_ONLY, task=BACKGROUND)
    async def run_pipeline(
        name: PipelineName,
        ctx: Context,
        inputs: PipelineInputs = None,
        outputs: PipelineOutputs = None,
    ) -> dict:
        """Run a pipeline by name; returns its outputs. Prefer its pipelines_run_<name>
        tool."""
        return await runner.run(name, inputs, outputs, ctx)

    @mcp.tool(annotations=READ_ONLY)
    async def start_run(
        name: PipelineName,
        inputs: PipelineInputs = None,
        outputs: PipelineOutputs = None,
    ) -> dict:
        """Start a background run; returns a run_id for pipelines_get_run."""
        await runner.validated()
        try:
            check_call(runner.get(name), inputs, outputs)
        except PipelineError as exc:
            raise ToolError(str(exc)) from None
        root = _tasks_root(tasks)
        tool = await _run_pipeline_task(root, run_pipeline)
        arguments = {"name": name, "inputs": inputs, "outputs": outputs}
        created = await create_task(tool, arguments, Context(fastmcp=root))
        owners.started(created.task_id)
        return {"run_id": created.task_id, "status": created.status}

    @mcp.tool(annotations=READ_ONLY)
    async def get_run(
        run_id: Annotated[str, Field(description="From pipelines_start_run.")],
    ) -> dict:
        """A background run's status, progress, and result once completed."""
        return _run_status(await _task(tasks, run_id, tasks_get))

    @mcp.tool(
        annotations=ToolAnnotations(
            readOnlyHint=False, destructiveHint=False, idempotentHint=True, openWorldHint=False
        )
    )
    async def cancel_run(
        run_id: Annotated[str, Field(description="From pipelines_start_run.")],
    ) -> dict:
        """Stop a background run; returns its status."""
        await _task(tasks, run_id, tasks_cancel)
        return _run_status(await _task(tasks, run_id, tasks_get))

    for pipeline in loaded.values():
        mcp.add_tool(
            PipelineTool(
                name=f"run_{pipeline.name}",
                description=run_tool_description(pipeline),
                parameters=input_schema(pipeline),
                annotations=READ_ONLY,
                task_config=BACKGROUND,
                pipeline=pipeline.name,
                runner=runner,
            )
        )

    add_pipeline_chart_tool(mcp, runner, settings)

    @mcp.resource("pipelines://{name}/dag", mime_type="text/plain")
    def dag(name: str) -> str:
        """The DAG of a pipeline as Mermaid flowchart text."""
        try:
            return mermaid(runner.get(name))
        except ToolError as exc:  # no such pipeline: the client's parameter (-32602)
            raise NotFoundHere(str(exc)) from None

    return mcp, PipelinesControl(runner, settings.pipeline_cache_dir, tasks, owners)


def run_tool_description(pipeline: LoadedPipeline) -> str:
    """The first paragraph of the pipeline's description; the rest is in describe_pipeline."""
    summary = " ".join(pipeline.description.split("\n\n")[0].split())
    return f"{summary} Details: pipelines_describe_pipeline."


def _tasks_root(tasks: TasksExtension) -> FastMCP:
    """The server the background-run extension is registered on, while it is running."""
    try:
        root = tasks.server
    except RuntimeError:  # not registered on any server
        root = None
    if root is None or root.docket is None:
        raise ToolError("Background runs are not available right now; use run_pipeline.")
    return root


async def _run_pipeline_task(root: FastMCP, function: Any) -> Tool:
    """run_pipeline as the root server registered it for background runs (namespaced)."""
    for component in await root.get_tasks():
        if getattr(component, "fn", None) is function:
            return component
    raise ToolError("Background runs are not available on this server; use run_pipeline.")


async def _task(tasks: TasksExtension, run_id: str, handler: Any) -> Any:
    try:
        return await handler(_tasks_root(tasks), run_id)
    except MCPError:
        raise ToolError(
            f"There is no background run {run_id!r} (runs are kept for a while after they "
            "end). Start one with start_run."
        ) from None


def _run_status(task: Any) -> dict[str, Any]:
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
