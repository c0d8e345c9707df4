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

from pipelines import Pipeline, registry
from servers.lookup import Server
from servers.pipelines.chart import add_pipeline_chart_tool
from servers.pipelines.registry import (
    PipelineError,
    PipelineInputs,
    PipelineName,
    PipelineOutputs,
    check_call,
    describe,
    describe_inputs,
    input_schema,
    load_registry,
    mermaid,
)
from servers.pipelines.runner import PipelineTool, Runner
from servers.pipelines.tasks import (
    BACKGROUND,
    on_queue,
    registered_task,
    run_status,
    task_call,
    tasks_extension,
    tasks_root,
)
from servers.sample_data import ensure_sample_database
from servers.settings import GatewaySettings
from servers.sql.engine import Engine

READ_ONLY = ToolAnnotations(readOnlyHint=True, openWorldHint=False)


class PipelinesControl:
    """What the admin server reads and clears in a running pipelines server: the runs in
    progress (status) and the Hamilton caches under ``data_dir/pipeline_cache`` (clear_caches)."""

    def __init__(self, runner: Runner, cache_root: Path) -> None:
        self.runner = runner
        self.cache_root = cache_root

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
    loaded = load_registry(
        registry() if pipelines is None else pipelines, settings.pipelines.overrides
    )
    database = engine.database if engine else _database(settings)
    runner = Runner(settings, database, loaded)
    mcp = Server(
        "pipelines",
        instructions=(
            "Vetted Apache Hamilton dataflows over the database. list_pipelines shows each "
            "pipeline's inputs and outputs; run one with its run_<name> tool or run_pipeline, "
            "or start_run for a background run you follow with get_run. Runs stop after "
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
        """List the available pipelines: name, what each computes, its inputs (types and
        defaults) and the outputs you can request."""
        return [
            {
                "name": p.name,
                "description": p.description,
                "inputs": describe_inputs(p),
                "outputs": list(p.spec.outputs),
                "tool": f"run_{p.name}",
                "timeout_s": runner.timeout_s(p),
            }
            for p in loaded.values()
        ]

    @mcp.tool(annotations=READ_ONLY)
    def describe_pipeline(
        name: PipelineName,
    ) -> dict:
        """Describe one pipeline: its nodes with types and docs, what each output depends on
        (lineage), its input schema, and the DAG as Mermaid text."""
        return describe(runner.get(name))

    @mcp.tool(annotations=READ_ONLY, task=BACKGROUND)
    async def run_pipeline(
        name: PipelineName,
        ctx: Context,
        inputs: PipelineInputs = None,
        outputs: PipelineOutputs = None,
    ) -> dict:
        """Run a pipeline by name with inputs and return its outputs: tables (columns and rows,
        capped, with `truncated`) and summaries. Prefer the typed run_<name> tools; for long
        runs use start_run."""
        return await runner.run(name, inputs, outputs, ctx)

    @mcp.tool(annotations=READ_ONLY)
    async def start_run(
        name: PipelineName,
        inputs: PipelineInputs = None,
        outputs: PipelineOutputs = None,
    ) -> dict:
        """Start a pipeline run in the background and return its run_id at once. Follow it
        with get_run(run_id) (status, progress, then the result) and stop it with
        cancel_run(run_id). Inputs are checked now."""
        try:
            check_call(runner.get(name), inputs, outputs)
        except PipelineError as exc:
            raise ToolError(str(exc)) from None
        root = tasks_root(tasks)
        tool = await registered_task(root, run_pipeline)
        arguments = {"name": name, "inputs": inputs, "outputs": outputs}
        created = await on_queue(lambda: create_task(tool, arguments, Context(fastmcp=root)))
        return {"run_id": created.task_id, "status": created.status}

    @mcp.tool(annotations=READ_ONLY)
    async def get_run(
        run_id: Annotated[str, Field(description="The run_id from start_run (or a task id).")],
    ) -> dict:
        """Status of a background run: working (with node progress), completed (with the
        result, shaped like run_pipeline's), failed (with the reason) or cancelled."""
        return run_status(await task_call(tasks, run_id, tasks_get))

    @mcp.tool(
        annotations=ToolAnnotations(
            readOnlyHint=False, destructiveHint=False, idempotentHint=True, openWorldHint=False
        )
    )
    async def cancel_run(
        run_id: Annotated[str, Field(description="The run_id from start_run (or a task id).")],
    ) -> dict:
        """Stop a background run: its worker process is killed. A finished run keeps its
        result. Returns the run's status afterwards."""
        await task_call(tasks, run_id, tasks_cancel)
        return run_status(await task_call(tasks, run_id, tasks_get))

    for pipeline in loaded.values():
        mcp.add_tool(
            PipelineTool(
                name=f"run_{pipeline.name}",
                description=(
                    f"{pipeline.description}\n\nReturns its outputs "
                    f"({', '.join(pipeline.spec.outputs)}): tables capped like sql results."
                ),
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
        return mermaid(runner.get(name))

    return mcp, PipelinesControl(runner, settings.data_dir / "pipeline_cache")


def _database(settings: GatewaySettings) -> Path:
    return Path(settings.sql.database or ensure_sample_database(settings.data_dir))
