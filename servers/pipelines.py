"""The pipelines server: registered Hamilton dataflows as typed tools.

Run alone: ``uv run python -m servers.pipelines`` (stdio) or ``... --transport http --port 8002``.
"""

import logging
from collections.abc import Mapping
from typing import Annotated, Any

import anyio
import duckdb
from fastmcp import FastMCP
from fastmcp.exceptions import ToolError
from fastmcp.tools import Tool, ToolResult
from mcp.types import ToolAnnotations
from pydantic import Field

from pipelines import Pipeline, registry
from servers.pipeline_registry import (
    LoadedPipeline,
    PipelineError,
    check_call,
    describe,
    describe_inputs,
    execute,
    load_registry,
    mermaid,
    shape_output,
)
from servers.settings import GatewaySettings
from servers.sql_engine import Engine, QueryTimeout

READ_ONLY = ToolAnnotations(readOnlyHint=True, openWorldHint=False)


class Runner:
    """Runs pipelines on the engine, a bounded number at a time, within the run timeout."""

    def __init__(
        self, settings: GatewaySettings, engine: Engine, loaded: dict[str, LoadedPipeline]
    ):
        self.settings = settings
        self.engine = engine
        self.loaded = loaded
        self._limiter = anyio.CapacityLimiter(settings.pipelines.concurrency)

    def get(self, name: str) -> LoadedPipeline:
        if name not in self.loaded:
            raise ToolError(
                f"There is no pipeline named {name!r}. Available: {', '.join(self.loaded)}."
            )
        return self.loaded[name]

    async def run(
        self, name: str, inputs: Mapping[str, Any] | None, outputs: list[str] | None
    ) -> dict[str, Any]:
        pipeline = self.get(name)
        try:
            values, chosen = check_call(pipeline, inputs, outputs)
        except PipelineError as exc:
            raise ToolError(str(exc)) from None
        timeout = self.settings.pipelines.run_timeout_s
        try:
            async with self._limiter:
                results = await self.engine.run(
                    lambda cursor: execute(pipeline, cursor, values, chosen), timeout
                )
        except QueryTimeout:
            raise ToolError(
                f"Pipeline {name!r} ran longer than {timeout:g} s and was stopped. "
                "Narrow its inputs (a shorter date range, one origin)."
            ) from None
        except (ValueError, duckdb.Error) as exc:
            raise ToolError(f"Pipeline {name!r} failed: {str(exc).splitlines()[0]}") from None
        limits = self.settings.sql
        return {
            "pipeline": name,
            "inputs": shape_output(values, limits.max_rows, limits.max_result_bytes),
            "outputs": {
                key: shape_output(value, limits.max_rows, limits.max_result_bytes)
                for key, value in results.items()
            },
        }


class PipelineTool(Tool):
    """``run_<name>``: one pipeline as a tool whose input schema is its Inputs model."""

    pipeline: Annotated[str, Field(exclude=True)]
    runner: Annotated[Any, Field(exclude=True)]

    async def run(self, arguments: dict[str, Any]) -> ToolResult:
        result = await self.runner.run(self.pipeline, arguments, None)
        return self.convert_result(result)


def create_server(
    settings: GatewaySettings,
    engine: Engine | None = None,
    pipelines: Mapping[str, Pipeline] | None = None,
) -> FastMCP:
    """The pipelines server over the registry (or the given pipelines), validated now."""
    # Hamilton logs every node failure (with its inputs) at ERROR; the caller gets a ToolError.
    logging.getLogger("hamilton").setLevel(logging.CRITICAL)
    loaded = load_registry(registry() if pipelines is None else pipelines)
    runner = Runner(settings, engine or Engine.open(settings), loaded)
    mcp = FastMCP(
        "pipelines",
        instructions=(
            "Vetted Apache Hamilton dataflows over the database. list_pipelines shows each "
            "pipeline's inputs and outputs; run one with its run_<name> tool or run_pipeline. "
            f"Runs stop after {settings.pipelines.run_timeout_s:g} s; tables are capped like "
            "sql results."
        ),
        mask_error_details=True,
    )

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
            }
            for p in loaded.values()
        ]

    @mcp.tool(annotations=READ_ONLY)
    def describe_pipeline(
        name: Annotated[str, Field(description="A pipeline name from list_pipelines.")],
    ) -> dict:
        """Describe one pipeline: its nodes with types and docs, what each output depends on
        (lineage), its input schema, and the DAG as Mermaid text."""
        return describe(runner.get(name))

    @mcp.tool(annotations=READ_ONLY)
    async def run_pipeline(
        name: Annotated[str, Field(description="A pipeline name from list_pipelines.")],
        inputs: Annotated[
            dict[str, Any] | None,
            Field(description="Input values by name; omitted inputs take their defaults."),
        ] = None,
        outputs: Annotated[
            list[str] | None,
            Field(description="Public outputs to compute; default all of them."),
        ] = None,
    ) -> dict:
        """Run a pipeline by name with inputs and return its outputs: tables (columns and rows,
        capped, with `truncated`) and summaries. Prefer the typed run_<name> tools."""
        return await runner.run(name, inputs, outputs)

    for pipeline in loaded.values():
        mcp.add_tool(
            PipelineTool(
                name=f"run_{pipeline.name}",
                description=(
                    f"{pipeline.description}\n\nReturns its outputs "
                    f"({', '.join(pipeline.spec.outputs)}): tables capped like sql results."
                ),
                parameters=pipeline.inputs.model_json_schema(),
                annotations=READ_ONLY,
                pipeline=pipeline.name,
                runner=runner,
            )
        )

    @mcp.resource("pipelines://{name}/dag", mime_type="text/plain")
    def dag(name: str) -> str:
        """The DAG of a pipeline as Mermaid flowchart text."""
        return mermaid(runner.get(name))

    return mcp


if __name__ == "__main__":
    from servers.standalone import run_alone

    run_alone(create_server)
