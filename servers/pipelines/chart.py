"""The pipelines server's chart tool: run a pipeline and draw one of its table outputs.

The same chart request, planning and rendering as the sql server's ``chart`` tool, applied to a
pipeline's DataFrame output (fetched up to the chart's points cap rather than the context
window's row cap).
"""

from typing import Annotated

import anyio
from fastmcp import Context, FastMCP
from fastmcp.exceptions import ToolError
from fastmcp.tools import ToolResult
from pydantic import Field

from servers.charts.plan import (
    AggregateArg,
    BinsArg,
    ChartError,
    ChartRequest,
    KindArg,
    SeriesArg,
    TitleArg,
    XArg,
    XLabelArg,
    XUnitArg,
    YArg,
    YLabelArg,
    YUnitArg,
)
from servers.charts.points import points_from_rows
from servers.charts.render import ChartData, ChartRenderer, RenderTimeout
from servers.charts.view import chart_content
from servers.conventions import READ_ONLY
from servers.pipelines.registry import PipelineInputs, PipelineName
from servers.pipelines.runner import Runner
from servers.results import Column
from servers.settings import GatewaySettings

_BYTES_PER_POINT = 2_000


def add_pipeline_chart_tool(mcp: FastMCP, runner: Runner, settings: GatewaySettings) -> None:
    """Register ``chart_output`` on the pipelines server, running pipelines through runner."""
    charts = settings.charts
    renderer = ChartRenderer(charts)

    @mcp.tool(annotations=READ_ONLY, output_schema=ChartData.model_json_schema())
    async def chart_output(
        name: PipelineName,
        output: Annotated[str, Field(description="A table output.")],
        ctx: Context,
        inputs: PipelineInputs = None,
        kind: KindArg = "auto",
        x: XArg = None,
        y: YArg = None,
        series: SeriesArg = None,
        aggregate: AggregateArg = None,
        bins: BinsArg = None,
        title: TitleArg = None,
        x_label: XLabelArg = None,
        y_label: YLabelArg = None,
        x_unit: XUnitArg = None,
        y_unit: YUnitArg = None,
    ) -> ToolResult:
        """Run a pipeline and chart one table output, as sql_chart does."""
        request = ChartRequest(
            **{k: v for k, v in locals().items() if k in ChartRequest.model_fields}
        )
        result = await runner.run(
            name, inputs, [output], ctx, charts.max_points, charts.max_points * _BYTES_PER_POINT
        )
        table = result["outputs"][output]
        if not isinstance(table, dict) or "columns" not in table:
            raise ToolError(f"The output {output!r} of {name!r} is not a table; only tables chart.")
        columns = [Column(**column) for column in table["columns"]]
        try:
            points = await anyio.to_thread.run_sync(
                points_from_rows,
                columns,
                table["rows"],
                request,
                charts,
                charts.max_points * _BYTES_PER_POINT,
            )
            if table.get("truncated"):
                points.notes.append(f"Only the first {table['row_count']} rows were charted.")
            drawn = await renderer.draw(points)
        except (ChartError, RenderTimeout) as exc:
            raise ToolError(str(exc)) from None
        return ToolResult(
            content=chart_content(drawn), structured_content=drawn.data.model_dump(mode="json")
        )
