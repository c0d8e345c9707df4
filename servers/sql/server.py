"""The sql server: read-only DuckDB querying for LLMs, bounded in time, rows and bytes.

Run alone: ``uv run python -m servers.sql`` (stdio) or ``... --transport http --port 8001``.
"""

import json
from typing import Annotated, Any, Literal

import anyio
from fastmcp import Context, FastMCP
from fastmcp.exceptions import ToolError
from fastmcp.prompts import Message
from fastmcp.tools import ToolResult
from mcp.types import InputRequiredResult, TextContent, ToolAnnotations
from pydantic import Field
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse

from servers.lookup import Server
from servers.results import markdown_table
from servers.settings import CannedQuery, GatewaySettings, SqlSettings
from servers.sql.canned import CannedQueryTool, check_canned_queries
from servers.sql.catalog import CHEAT_SHEET, columns, describe, statistics, tables
from servers.sql.chart import add_chart_tools
from servers.sql.engine import Engine, QueryFailed, QueryTimeout
from servers.sql.gate import RefusedStatement, check_statement
from servers.sql.query import QueryResult, current_context, run_query
from servers.sql.result_store import ResultStore, UnknownResult
from servers.sql.summary import with_summary

READ_ONLY = ToolAnnotations(readOnlyHint=True, openWorldHint=False)


class SqlControl:
    """What the admin server changes in a running sql server: its canned-query tools (reload)
    and its stored results (clear_caches)."""

    def __init__(
        self, server: FastMCP, engine: Engine, limits: SqlSettings, store: ResultStore, answer
    ) -> None:
        self.server = server
        self.engine = engine
        self.limits = limits  # as started: the engine and the tools' limits stay these
        self.store = store
        self._answer = answer
        self.canned: dict[str, CannedQuery] = {}

    def check(self, canned: dict[str, CannedQuery]) -> None:
        """Raise ValueError, naming the query, when a canned query would be refused."""
        with self.engine.cursor() as cursor:
            check_canned_queries(cursor, canned)

    def apply(self, canned: dict[str, CannedQuery]) -> list[str]:
        """Make the canned-query tools exactly ``canned`` (checked before): removed and changed
        ones go, new and changed ones come. Returns the names of the tools that changed."""
        changed = sorted(
            name
            for name in self.canned.keys() | canned.keys()
            if self.canned.get(name) != canned.get(name)
        )
        for name in changed:
            if name in self.canned:
                self.server.local_provider.remove_tool(name)
        for name in changed:
            if name in canned:
                self.server.add_tool(
                    CannedQueryTool.build(name, canned[name], self.limits, READ_ONLY, self._answer)
                )
        self.canned = dict(canned)
        return changed

    def clear_results(self) -> int:
        """Drop every stored result (see ``ResultStore.clear``); returns how many."""
        return self.store.clear()


def create_server(
    settings: GatewaySettings, engine: Engine | None = None, namespace: str | None = None
) -> FastMCP:
    """The sql server over engine (opened from settings when not given).

    ``namespace`` is the one the server is mounted under, so that the result URIs it hands out
    are the ones its clients see.
    """
    return build_server(settings, engine, namespace)[0]


def build_server(
    settings: GatewaySettings, engine: Engine | None = None, namespace: str | None = None
) -> tuple[FastMCP, SqlControl]:
    """The sql server (as ``create_server``) and its control for the admin server."""
    engine = engine or Engine.open(settings)
    limits = settings.sql
    prefix = f"sql://{namespace}/results/" if namespace else "sql://results/"
    store = ResultStore(settings.data_dir / "results", limits, prefix)
    mcp = Server("sql", instructions=_instructions(settings, []), mask_error_details=True)

    def on_open(cursor) -> None:  # new tables show up in the instructions as files change
        names = [t["name"] for t in tables(cursor, None, "names")]
        mcp.instructions = _instructions(settings, names)

    engine.on_open.append(on_open)
    if engine.unavailable is None:  # checked now; otherwise when the files come free
        with engine.cursor() as cursor:
            on_open(cursor)
            check_canned_queries(cursor, limits.canned_queries)

    async def answer(
        sql: str,
        params: dict[str, Any] | None,
        rows_cap: int,
        timeout_s: float,
        format: str,
        ctx: Context | None,
    ) -> ToolResult:
        result = await guarded(run_query(engine, store, sql, params, rows_cap, timeout_s, ctx))
        return render(result, format)

    if limits.allow_ad_hoc_sql:

        @mcp.tool(annotations=READ_ONLY, output_schema=QueryResult.model_json_schema())
        async def query(
            sql: Annotated[
                str, Field(description="One read-only DuckDB SQL statement.", min_length=1)
            ],
            max_rows: Annotated[
                int | None,
                Field(ge=1, description=f"At most this many rows (≤ {limits.max_rows})."),
            ] = None,
            format: Annotated[
                Literal["json", "markdown"],
                Field(description="How the text content shows the rows."),
            ] = "json",
            timeout_s: Annotated[
                float | None,
                Field(gt=0, description=f"Stop after this many s (≤ {limits.query_timeout_s:g})."),
            ] = None,
            summarize: Annotated[
                bool,
                Field(
                    description="Also ask your own model (MCP sampling) for a short summary of "
                    "the result; useful when it is truncated."
                ),
            ] = False,
        ) -> ToolResult | InputRequiredResult:
            """Run one read-only SQL statement (SELECT, WITH, FROM, VALUES, DESCRIBE, SHOW,
            SUMMARIZE, EXPLAIN) on the DuckDB database; returns its columns with DuckDB types
            and its rows as JSON-safe values.

            Results are capped in rows and bytes: when cut, `truncated` is true,
            `truncated_reason` says which cap, `hint` says how to narrow the query, and `result`
            is a handle to page through the rest (read_result) or download it. Writes, file and
            network access, settings changes and multiple statements are refused.
            """
            rows_cap = min(max_rows or limits.max_rows, limits.max_rows)
            budget = min(timeout_s or limits.query_timeout_s, limits.query_timeout_s)
            ctx = current_context()
            result = await guarded(run_query(engine, store, sql, None, rows_cap, budget, ctx))
            if summarize:
                result = await with_summary(ctx, sql, result)
                if isinstance(result, InputRequiredResult):  # 2026-07-28: the client samples
                    return result
            return render(result, format)

        @mcp.tool(annotations=READ_ONLY)
        async def explain(
            sql: Annotated[str, Field(description="The read-only statement to plan.")],
        ) -> str:
            """Show DuckDB's query plan for a read-only statement without running it: the
            operators, join order and estimated cardinalities. Use it to check a slow query."""

            def plan(cursor) -> str:
                check_statement(cursor, sql)
                rows = cursor.sql(f"EXPLAIN {sql}").fetchall()
                return "\n".join(row[1] for row in rows)

            return await guarded(engine.run(plan))

        add_chart_tools(mcp, engine, settings, guarded)

    @mcp.tool(annotations=READ_ONLY)
    async def list_tables(
        pattern: Annotated[
            str | None, Field(description="Only names matching this SQL LIKE pattern, e.g. 'fl%'.")
        ] = None,
        detail: Annotated[
            Literal["names", "summary", "full"],
            Field(
                description="names: just names; summary: row estimate, column count and "
                "comment; full: also every column with its type."
            ),
        ] = "summary",
    ) -> list[dict]:
        """List the tables and views of the database with estimated row counts, column counts
        and comments. Start here to learn what data there is."""
        return await guarded(engine.run(lambda cursor: tables(cursor, pattern, detail)))

    @mcp.tool(annotations=READ_ONLY)
    async def describe_table(
        table: Annotated[str, Field(description="A table or view name from list_tables.")],
        sample_rows: Annotated[int, Field(ge=0, le=20, description="Example rows to include.")] = 3,
        stats: Annotated[
            bool,
            Field(
                description="Also compute per-column statistics (min, max, distinct values, "
                f"nulls, quartiles) within {limits.stats_timeout_s:g} s."
            ),
        ] = False,
    ) -> dict:
        """Describe one table or view: its columns with types, nullability and comments, and a
        few example rows; with stats=true also SUMMARIZE-style statistics per column (the result
        says `stats_timed_out` when the time budget cut them short)."""
        description = await guarded(
            engine.run(lambda cursor: describe(cursor, table, sample_rows, limits.max_result_bytes))
        )
        if stats:
            try:
                description["stats"] = await engine.run(
                    lambda cursor: statistics(cursor, table), limits.stats_timeout_s
                )
            except QueryTimeout:
                description["stats"] = None
                description["stats_timed_out"] = True
        return description

    @mcp.tool(annotations=READ_ONLY)
    async def read_result(
        result_id: Annotated[str, Field(description="The `result.id` of a truncated query.")],
        offset: Annotated[int, Field(ge=0, description="Index of the first row to return.")] = 0,
        limit: Annotated[
            int, Field(ge=1, description=f"Rows to return (≤ {limits.max_rows}).")
        ] = limits.max_rows,
    ) -> dict:
        """Page through a stored query result: rows [offset, offset + limit) with
        `next_offset` for the following page (null at the end). Stored results expire."""
        return await read_page(result_id, offset, limit)

    async def read_page(result_id: str, offset: int, limit: int) -> dict:
        rows = min(limit, limits.max_rows)
        try:
            return await _in_thread(store.page, result_id, offset, rows, limits.max_result_bytes)
        except UnknownResult as exc:
            raise ToolError(str(exc)) from None

    control = SqlControl(mcp, engine, limits, store, answer)
    control.apply(limits.canned_queries)

    @mcp.resource("sql://tables", mime_type="application/json")
    async def table_list() -> list[dict]:
        """Every table and view with row estimates, column counts and comments."""
        return await guarded(engine.run(lambda cursor: tables(cursor, None, "summary")))

    @mcp.resource("sql://tables/{table}/schema", mime_type="application/json")
    async def table_schema(table: str) -> list[dict]:
        """The columns of one table: name, type, nullability, comment."""
        return await guarded(engine.run(lambda cursor: columns(cursor, table, strict=True)))

    @mcp.resource("sql://results/{result_id}{?offset,limit}", mime_type="application/json")
    async def result_page(result_id: str, offset: int = 0, limit: int = limits.max_rows) -> dict:
        """One page of a stored query result; `next_offset` names the next page."""
        return await read_page(result_id, offset, limit)

    @mcp.resource("sql://cheatsheet", mime_type="text/markdown")
    def cheat_sheet() -> str:
        """DuckDB SQL idioms that make questions short to answer."""
        return CHEAT_SHEET

    @mcp.prompt
    def explore_dataset(
        focus: Annotated[str | None, Field(description="A topic to focus on, if any.")] = None,
    ) -> str:
        """Get to know the database: its tables, what they hold, and questions worth asking."""
        topic = f" with a focus on {focus}" if focus else ""
        return (
            f"Explore this DuckDB database{topic}. Call sql_list_tables, then "
            "sql_describe_table (with stats=true) on the tables that matter, and run a few "
            "small aggregate queries with sql_query to learn the data's shape, ranges and "
            "gaps. Summarise what each table holds, how tables join, data quality issues, "
            "and five questions this data can answer well."
        )

    @mcp.prompt
    def answer_with_sql(
        question: Annotated[str, Field(description="The question to answer from the data.")],
    ) -> list[Message]:
        """Answer a question from the data with SQL, showing the query and its result."""
        return [
            Message(
                f"Answer this question from the database: {question}\n\n"
                "First check the relevant tables with sql_describe_table. Write one read-only "
                "DuckDB query that aggregates in SQL (GROUP BY, ORDER BY ... LIMIT) rather "
                "than fetching raw rows; run it with sql_query. If the result is truncated, "
                "refine the query instead of paging. Reply with the answer, the SQL you ran, "
                "and any caveats (NULLs, filters, units)."
            )
        ]

    @mcp.custom_route("/sql/results/{name}", methods=["GET"])
    async def download(request: Request) -> Response:
        result_id, _, kind = request.path_params["name"].rpartition(".")
        if kind not in ("csv", "parquet"):
            return JSONResponse({"error": "ask for <id>.csv or <id>.parquet"}, status_code=404)
        try:
            result = await _in_thread(store.wait_done, result_id, limits.query_timeout_s)
        except UnknownResult as exc:
            return JSONResponse({"error": str(exc)}, status_code=404)
        filename = f"result-{result_id}.{kind}"
        disposition = {"Content-Disposition": f'attachment; filename="{filename}"'}
        if kind == "csv":
            return StreamingResponse(store.csv(result), media_type="text/csv", headers=disposition)
        path = await _in_thread(store.parquet, result)
        return FileResponse(path, media_type="application/vnd.apache.parquet", headers=disposition)

    return mcp, control


def render(result: QueryResult, format: str) -> ToolResult:
    """The result as structured content, and as JSON or a markdown table for the text."""
    structured = result.model_dump(mode="json")
    text = markdown_table(result) if format == "markdown" else json.dumps(structured)
    return ToolResult(content=[TextContent(type="text", text=text)], structured_content=structured)


async def guarded(awaitable):
    """Await a database call, turning every refusal or failure into an actionable ToolError."""
    try:
        return await awaitable
    except RefusedStatement as exc:
        raise ToolError(str(exc)) from None
    except QueryTimeout as exc:
        raise ToolError(
            f"{exc} Narrow it with WHERE, aggregate, or add LIMIT; check its plan with explain."
        ) from None
    except QueryFailed as exc:
        raise ToolError(str(exc)) from None


async def _in_thread(function, *args):
    return await anyio.to_thread.run_sync(function, *args)


def _instructions(settings: GatewaySettings, table_names: list[str]) -> str:
    limits = settings.sql
    mode = (
        "Ad-hoc SQL is allowed (query, explain)."
        if limits.allow_ad_hoc_sql
        else "Only the canned queries can run; ad-hoc SQL is off."
    )
    canned = ", ".join(limits.canned_queries) or "none"
    return (
        f"Read-only SQL over a DuckDB database. Tables: {', '.join(table_names) or '(none)'}. "
        f"{mode} Canned queries: {canned}. Start with list_tables and describe_table. Limits: "
        f"{limits.max_rows} rows and {limits.max_result_bytes} bytes per result, "
        f"{limits.query_timeout_s:g} s per query, memory {limits.memory_limit}; a result that "
        "hits a cap says truncated=true and gives a handle to page through the rest "
        f"(kept {limits.results_ttl_s:g} s). Files, network, writes and settings are refused. "
        "DuckDB SQL tips: the sql://cheatsheet resource."
    )
