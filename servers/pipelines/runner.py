"""Running a pipeline for a caller: the call checked, a run worker taken within the pipeline's
timeout and concurrency (once the pipelines are validated), node progress and log lines relayed,
the result shaped; and ``run_<name>``, one pipeline as a tool."""

import datetime as dt
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import anyio
from fastmcp import Context
from fastmcp.exceptions import ToolError
from fastmcp.server.dependencies import OptionalCurrentContext
from fastmcp.tools import Tool, ToolResult
from pydantic import Field, InstanceOf

from servers.pipelines.pool import RunWorkers
from servers.pipelines.registry import (
    LoadedPipeline,
    PipelineError,
    check_call,
    shape_output,
)
from servers.pipelines.tasks import begin_attempt
from servers.pipelines.validation import Validation
from servers.pipelines.worker import Job, PipelinePlan, RunFailed, WorkerSpec
from servers.settings import GatewaySettings


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
        """Wait (within validation_wait_s) until every pipeline was validated, so that a broken
        one is refused with its problem before anything of it runs."""
        timeout = self.settings.pipelines.validation_wait_s
        waiting = self.validation and not self.validation.done.is_set()
        if waiting and not await anyio.to_thread.run_sync(self.validation.wait, timeout):
            raise ToolError(
                f"Pipelines are still being validated after {timeout:g} s (the machine is "
                "busy); try again in a minute."
            )

    def get(self, name: str) -> LoadedPipeline:
        if self.validation and not self.validation.done.is_set():
            # Only the sync tools (describe, dag: run in threads) get here before validation
            # answered; the async ones await validated() first. Waiting keeps Hamilton out.
            self.validation.wait(self.settings.pipelines.validation_wait_s)
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
        note = ""
        if ctx is not None and ctx.is_background_task:
            # A run whose worker stopped comes again: the retry says so, a third start fails.
            note = await begin_attempt()
            if note:
                await ctx.report_progress(0, None, f"{name}: {note}")
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
        report = Reporter(ctx, name, entry, note)
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


class Reporter:
    """Node-level progress (``ctx.report_progress``) and log lines to the client; in a
    background run, progress becomes the run's status message."""

    def __init__(
        self,
        ctx: Context | None,
        pipeline: str,
        entry: dict[str, Any] | None = None,
        note: str = "",
    ):
        self.ctx = ctx
        self.pipeline = pipeline
        self.entry = entry if entry is not None else {}
        self.note = note  # a background run's retry says so in its progress

    def on_worker(self, pid: int) -> None:
        self.entry.update(state="running", worker_pid=pid)

    async def progress(self, done: int, total: int, node: str) -> None:
        self.entry["progress"] = f"{done}/{total} nodes done, last {node}"
        if self.ctx is not None:
            label = f"{self.pipeline} ({self.note})" if self.note else self.pipeline
            await self.ctx.report_progress(
                done, total, f"{label}: {done}/{total} nodes done, last {node}"
            )

    async def log(self, message: str) -> None:
        if self.ctx is not None and not self.ctx.is_background_task:
            await self.ctx.info(message, logger_name="pipelines")


class PipelineTool(Tool):
    """``run_<name>``: one pipeline as a tool whose input schema is its inputs' schema."""

    pipeline: Annotated[str, Field(exclude=True)]
    runner: Annotated[InstanceOf[Runner], Field(exclude=True)]

    async def run(self, arguments: dict[str, Any]) -> ToolResult:
        # The request's context, or in a background run the task's (progress goes to the task).
        async with OptionalCurrentContext() as ctx:  # type: ignore[attr-defined]
            result = await self.runner.run(self.pipeline, arguments, None, ctx)
        return self.convert_result(result)
