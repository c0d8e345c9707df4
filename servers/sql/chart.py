"""The sql server's chart tools: ``chart`` (a PNG, the plotted data and a one-line description)
and ``chart_view`` (the result as a sortable table with the chart beside it, for clients that
render MCP apps).

Both run the caller's SQL through the same gate, engine limits and result shaping as ``query``
(``check_statement``, ``Engine.run``, ``run_query``); the chart's aggregation, sampling and
binning are SQL around the caller's query, so a result of any size reaches Python bounded.
"""

from typing import Annotated, Any

import anyio
import duckdb
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
    resolve,
)
from servers.charts.points import collect
from servers.charts.queries import Query, first_query, follow_up
from servers.charts.render import Chart, ChartData, ChartRenderer, RenderTimeout
from servers.charts.view import chart_content, result_view
from servers.conventions import READ_ONLY
from servers.results import Column, Rows, relation_columns
from servers.settings import GatewaySettings
from servers.sql.engine import Engine
from servers.sql.errors import guarded
from servers.sql.gate import RefusedStatement, check_statement
from servers.sql.query import run_query


def add_chart_tools(mcp: FastMCP, engine: Engine, settings: GatewaySettings) -> None:
    """Register ``chart`` and ``chart_view`` on the sql server; engine errors read exactly as
    ``query``'s (``guarded``)."""
    limits, charts = settings.sql, settings.charts
    renderer = ChartRenderer(charts)
    Sql = Annotated[str, Field(description="One read-only DuckDB statement.", min_length=1)]
    Timeout = Annotated[
        float | None,
        Field(gt=0, description=f"≤ {limits.query_timeout_s:g}"),
    ]

    async def draw(sql: str, request: ChartRequest, budget: float, ctx: Context) -> Chart:
        """Gate and plan, run the plan's queries (one, or two when the first hits the points
        cap) within one time budget, then draw in a worker thread."""

        async def fetch(query: Query) -> Rows:
            return await guarded(
                run_query(engine, None, query.sql, None, query.max_rows, budget, ctx)
            )

        try:
            with anyio.fail_after(budget):  # all the queries together; each also has its own
                source = engine.run(lambda c: _source(c, sql), budget)
                columns, statement = await guarded(source, sql)
                plan = resolve(request, columns, charts)
                query = first_query(plan, statement, charts)
                page = await fetch(query)
                follow = follow_up(plan, statement, charts, page)
                if follow is not None:
                    query, page = follow, await fetch(follow)
            # Shaping the points loads pyarrow on the first chart: off the event loop too.
            points = await anyio.to_thread.run_sync(collect, plan, query, page, charts)
            return await renderer.draw(points)
        except (ChartError, RenderTimeout) as exc:
            raise ToolError(str(exc)) from None
        except TimeoutError:  # fail_after's; the engine's own arrive as ToolErrors from guarded
            raise ToolError(
                f"The chart's queries ran longer than {budget:g} s and were stopped. Narrow the "
                "query with WHERE, or aggregate it in SQL."
            ) from None

    @mcp.tool(annotations=READ_ONLY, output_schema=ChartData.model_json_schema())
    async def chart(
        sql: Sql,
        ctx: Context,
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
        timeout_s: Timeout = None,
    ) -> ToolResult:
        """Chart a query's result; returns a PNG, a one-line description and the plotted rows
        (large results binned, sampled or cut, said in `notes`)."""
        request = _request(locals())
        drawn = await draw(sql, request, _budget(timeout_s, limits.query_timeout_s), ctx)
        return ToolResult(
            content=chart_content(drawn), structured_content=drawn.data.model_dump(mode="json")
        )

    @mcp.tool(annotations=READ_ONLY, app=True)
    async def chart_view(
        sql: Sql,
        ctx: Context,
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
        timeout_s: Timeout = None,
    ) -> ToolResult:
        """Show the user a sortable table of a query's rows beside its chart (MCP apps
        clients; others get the PNG). Arguments as sql_chart."""
        request = _request(locals())
        budget = _budget(timeout_s, limits.query_timeout_s)
        table = await guarded(run_query(engine, None, sql, None, limits.max_rows, budget, ctx))
        drawn = await draw(sql, request, budget, ctx)
        view = result_view(table, drawn)
        return ToolResult(content=chart_content(drawn), structured_content=view)


def _source(cursor: duckdb.DuckDBPyConnection, sql: str) -> tuple[list[Column], str]:
    """Gate the caller's statement as query does, and learn its columns without running it."""
    if check_statement(cursor, sql) == duckdb.StatementType.EXPLAIN:
        raise RefusedStatement("EXPLAIN output cannot be charted; chart the query itself.")
    relation = cursor.sql(sql)
    return relation_columns(relation), cursor.extract_statements(sql)[0].query


def _request(arguments: dict[str, Any]) -> ChartRequest:
    return ChartRequest(**{k: v for k, v in arguments.items() if k in ChartRequest.model_fields})


def _budget(asked_s: float | None, limit_s: float) -> float:
    """The caller's timeout, at most the server's."""
    return min(asked_s or limit_s, limit_s)
