"""The pipelines server: registered Hamilton dataflows as typed, cancellable, observable tools.

Runs happen in separate worker processes (``servers/pipelines/pool.py``), so the event loop
never blocks and a run that passes its deadline or is cancelled is killed, not abandoned.
Progress is reported node by node. Run tools are background-task capable: clients that speak
the tasks extension get a task, others a synchronous run; ``start_run``, ``get_run`` and
``cancel_run`` give any client background runs.

Run alone: ``uv run python -m servers.pipelines`` (stdio) or ``... --transport http --port 8002``.
"""

import logging
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import anyio
from fastmcp import Context, FastMCP
from fastmcp.exceptions import ToolError
from fastmcp_tasks import TasksExtension
from fastmcp_tasks.creation import create_task
from fastmcp_tasks.handlers import tasks_cancel, tasks_get
from mcp.types import ToolAnnotations
from pydantic import Field

from pipelines import Pipeline
from servers.conventions import READ_ONLY
from servers.lookup import NotFoundHere, Server
from servers.pipelines.chart import add_pipeline_chart_tool
from servers.pipelines.registry import (
    LoadedPipeline,
    PipelineError,
    PipelineInputs,
    PipelineName,
    PipelineOutputs,
    check_call,
    declared_pipelines,
    describe,
    describe_inputs,
    input_schema,
    mermaid,
    served_registry,
)
from servers.pipelines.run_owners import RunOwners
from servers.pipelines.runner import PipelineTool, Runner
from servers.pipelines.tasks import (
    BACKGROUND,
    lost_worker_note,
    on_queue,
    registered_task,
    run_status,
    task_call,
    tasks_extension,
    tasks_root,
)
from servers.pipelines.validation import validate_in_background
from servers.settings import GatewaySettings
from servers.sql.engine import Engine


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
            await task_call(self.tasks, run_id, tasks_cancel)
            return run_status(await task_call(self.tasks, run_id, tasks_get))

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
    # Every declared pipeline gets its run tool, whenever validation answers: a withdrawn one
    # then refuses its calls with the reason (the registry's ``loaded`` loses it).
    declared = list(loaded.values())
    # Built and validated in a subprocess while this server serves; see validation.Validation.
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
        root = tasks_root(tasks)
        tool = await registered_task(root, run_pipeline)
        arguments = {"name": name, "inputs": inputs, "outputs": outputs}
        created = await on_queue(lambda: create_task(tool, arguments, Context(fastmcp=root)))
        owners.started(created.task_id)
        return {"run_id": created.task_id, "status": created.status}

    @mcp.tool(annotations=READ_ONLY)
    async def get_run(
        run_id: Annotated[str, Field(description="From pipelines_start_run.")],
    ) -> dict:
        """A background run's status, progress, and result once completed."""
        status = run_status(await task_call(tasks, run_id, tasks_get))
        if status["status"] == "working":  # its worker may be gone, the run not yet retried
            note = await on_queue(lambda: lost_worker_note(tasks_root(tasks), run_id))
            if note:
                status["progress"] = note
        return status

    @mcp.tool(
        annotations=ToolAnnotations(
            readOnlyHint=False, destructiveHint=False, idempotentHint=True, openWorldHint=False
        )
    )
    async def cancel_run(
        run_id: Annotated[str, Field(description="From pipelines_start_run.")],
    ) -> dict:
        """Stop a background run; returns its status."""
        await task_call(tasks, run_id, tasks_cancel)
        return run_status(await task_call(tasks, run_id, tasks_get))

    for pipeline in declared:
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
