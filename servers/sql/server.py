"""The sql server: read-only DuckDB querying for LLMs, bounded in time, rows and bytes.

Run alone: ``uv run python -m servers.sql`` (stdio) or ``... --transport http --port 8001``.
"""

import json
from typing import Annotated, Any, ClassVar, Literal

import anyio
from fastmcp import Context, FastMCP
from fastmcp.exceptions import ToolError
from fastmcp.prompts import Message
from fastmcp.tools import ToolResult
from mcp.types import InputRequiredResult, TextContent
from pydantic import Field
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse

from servers.conventions import READ_ONLY
from servers.lookup import NotFoundHere, Server
from servers.results import markdown_table
from servers.settings import CannedQuery, GatewaySettings, SqlSettings
from servers.sql.canned import CannedQueryTool, check_canned_queries, tool_names
from servers.sql.catalog import CHEAT_SHEET, columns, describe, statistics, tables
from servers.sql.chart import add_chart_tools
from servers.sql.engine import Engine, QueryTimeout
from servers.sql.errors import guarded
from servers.sql.gate import check_statement
from servers.sql.query import QueryResult, current_context, run_query
from servers.sql.result_store import ResultStore, UnknownResult
from servers.sql.summary import with_summary


class SqlControl:
    """What the admin server changes in a running sql server: its canned-query tools (reload)
    and its stored results (clear_caches). Made once the server's own tools are registered:
    their names are the ones a canned query cannot take."""

    def __init__(
        self, server: FastMCP, engine: Engine, limits: SqlSettings, store: ResultStore, answer
    ) -> None:
        self.server = server
        self.engine = engine
        self.limits = limits  # as started: the engine and the tools' limits stay these
        self.store = store
        self._answer = answer
        self.canned: dict[str, CannedQuery] = {}
        self.reserved = tool_names(server)

    # Everything else of the sql settings is fixed when the database opens.
    reloads: ClassVar[frozenset[str]] = frozenset({"sql.canned_queries"})
    lists: ClassVar[frozenset[str]] = frozenset({"tools"})

    def check(self, new: GatewaySettings) -> dict[str, CannedQuery]:
        """The new canned queries; raises ValueError, naming the query, for one refused."""
        canned = new.sql.canned_queries
        with self.engine.cursor() as cursor:
            check_canned_queries(cursor, canned, self.reserved)
        return canned

    async def apply(self, canned: dict[str, CannedQuery]) -> list[str]:
        changed = self.replace(canned)
        return [f"sql canned queries ({', '.join(changed)})"] if changed else []

    def replace(self, canned: dict[str, CannedQuery]) -> list[str]:
        """Make the canned-query tools exactly ``canned``: removed and changed ones go, new and
        changed ones come. Returns the names of the tools that changed."""
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
    tokens = limits.max_result_tokens  # of the first page of query and canned-query answers
    store = ResultStore(settings.results_dir, limits, prefix)
    mcp = Server(
        "sql", instructions=_instructions(settings, [], namespace), mask_error_details=True
    )

    def on_open(cursor) -> None:  # new tables show up in the instructions as files change
        names = [t["name"] for t in tables(cursor, None, "names")]
        mcp.instructions = _instructions(settings, names, namespace)

    engine.on_open.append(on_open)
    if engine.unavailable is None:  # checked now; otherwise when the files come free
        with engine.cursor() as cursor:
            on_open(cursor)

    async def answer(
        sql: str,
        params: dict[str, Any] | None,
        rows_cap: int,
        timeout_s: float,
        format: str,
        ctx: Context | None,
    ) -> ToolResult:
        running = run_query(engine, store, sql, params, rows_cap, timeout_s, ctx, tokens)
        result = await guarded(running, sql)
        return render(result, format)

    if limits.allow_ad_hoc_sql:

        @mcp.tool(annotations=READ_ONLY, output_schema=QueryResult.model_json_schema())
        async def query(
            sql: Annotated[
                str, Field(description="One read-only DuckDB SQL statement.", min_length=1)
            ],
            max_rows: Annotated[int | None, Field(ge=1, description=f"≤ {limits.max_rows}")] = None,
            format: Annotated[
                Literal["json", "markdown"], Field(description="Of the text.")
            ] = "json",
            timeout_s: Annotated[
                float | None, Field(gt=0, description=f"≤ {limits.query_timeout_s:g}")
            ] = None,
            summarize: Annotated[bool, Field(description="Add your model's summary.")] = False,
        ) -> ToolResult | InputRequiredResult:
            """Run one read-only DuckDB statement; returns columns and rows. A capped answer
            says `truncated`, how to narrow it, and gives a `result` handle for sql_read_result.
            Aggregate in SQL rather than fetch raw rows."""
            rows_cap = min(max_rows or limits.max_rows, limits.max_rows)
            budget = min(timeout_s or limits.query_timeout_s, limits.query_timeout_s)
            ctx = current_context()
            result = await guarded(
                run_query(engine, store, sql, None, rows_cap, budget, ctx, tokens), sql
            )
            if summarize:
                result = await with_summary(ctx, sql, result)
                if isinstance(result, InputRequiredResult):  # 2026-07-28: the client samples
                    return result
            return render(result, format)

        @mcp.tool(annotations=READ_ONLY)
        async def explain(sql: Annotated[str, Field(description="A read-only statement.")]) -> str:
            """DuckDB's plan of a statement without running it (operators, joins, estimated
            rows); to check a slow query."""

            def plan(cursor) -> str:
                check_statement(cursor, sql)
                rows = cursor.sql(f"EXPLAIN {sql}").fetchall()
                return "\n".join(row[1] for row in rows)

            return await guarded(engine.run(plan), sql)

        add_chart_tools(mcp, engine, settings)

    @mcp.tool(annotations=READ_ONLY)
    async def list_tables(
        pattern: Annotated[str | None, Field(description="SQL LIKE, e.g. 'fl%'")] = None,
        detail: Annotated[
            Literal["names", "summary", "full"], Field(description="full adds columns.")
        ] = "summary",
    ) -> list[dict]:
        """Start here: the tables and views with estimated rows, column counts and comments."""
        return await guarded(engine.run(lambda cursor: tables(cursor, pattern, detail)))

    @mcp.tool(annotations=READ_ONLY)
    async def describe_table(
        table: str,
        sample_rows: Annotated[int, Field(ge=0, le=20)] = 3,
        stats: Annotated[
            bool,
            Field(description=f"Add per-column stats (≤ {limits.stats_timeout_s:g} s)."),
        ] = False,
    ) -> dict:
        """One table or view: columns with types and comments, and example rows."""
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
        result_id: Annotated[str, Field(description="result.id of a truncated answer.")],
        offset: Annotated[int, Field(ge=0)] = 0,
        limit: Annotated[int, Field(ge=1, description=f"≤ {limits.max_rows}")] = limits.max_rows,
    ) -> dict:
        """Page through a truncated result: rows from offset, with next_offset (null at the
        end). Results expire."""
        return await read_page(result_id, offset, limit)

    async def read_page(result_id: str, offset: int, limit: int) -> dict:
        rows = min(limit, limits.max_rows)
        try:
            return await _in_thread(store.page, result_id, offset, rows, limits.max_result_bytes)
        except UnknownResult as exc:
            raise ToolError(str(exc)) from None

    control = SqlControl(mcp, engine, limits, store, answer)
    if engine.unavailable is None:  # checked now; a file not free yet is checked on reload
        control.check(settings)
    control.replace(limits.canned_queries)

    @mcp.resource("sql://tables", mime_type="application/json")
    async def table_list() -> list[dict]:
        """Every table and view with row estimates, column counts and comments."""
        return await guarded(engine.run(lambda cursor: tables(cursor, None, "summary")))

    @mcp.resource("sql://tables/{table}/schema", mime_type="application/json")
    async def table_schema(table: str) -> list[dict]:
        """The columns of one table: name, type, nullability, comment."""
        try:
            return await guarded(engine.run(lambda cursor: columns(cursor, table, strict=True)))
        except ToolError as exc:  # no such table: the client's parameter (-32602)
            raise NotFoundHere(str(exc)) from None

    @mcp.resource("sql://results/{result_id}{?offset,limit}", mime_type="application/json")
    async def result_page(result_id: str, offset: int = 0, limit: int = limits.max_rows) -> dict:
        """One page of a stored query result; `next_offset` names the next page."""
        try:
            return await read_page(result_id, offset, limit)
        except ToolError as exc:  # unknown or expired handle: the client's parameter (-32602)
            raise NotFoundHere(str(exc)) from None

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
    """The result as structured content, and as compact JSON or a markdown table for the text
    (the same page once, in as few tokens as its format allows)."""
    structured = result.model_dump(mode="json")
    if format == "markdown":
        text = markdown_table(result)
        if result.hint:
            text += f"\n\n{result.hint}"
    else:
        text = json.dumps(structured, separators=(",", ":"), ensure_ascii=False)
    return ToolResult(content=[TextContent(type="text", text=text)], structured_content=structured)


async def _in_thread(function, *args):
    return await anyio.to_thread.run_sync(function, *args)


def _instructions(settings: GatewaySettings, table_names: list[str], namespace: str | None) -> str:
    """What a client of this server reads first, with the names it sees (namespaced when
    mounted)."""
    limits = settings.sql

    def named(tool: str) -> str:
        return f"{namespace}_{tool}" if namespace else tool

    cheatsheet = f"sql://{namespace}/cheatsheet" if namespace else "sql://cheatsheet"
    mode = (
        f"Ad-hoc SQL is allowed ({named('query')}, {named('explain')})."
        if limits.allow_ad_hoc_sql
        else "Only the canned queries can run; ad-hoc SQL is off."
    )
    canned = ", ".join(named(name) for name in limits.canned_queries) or "none"
    return (
        f"Read-only SQL over a DuckDB database. Tables: {', '.join(table_names) or '(none)'}. "
        f"{mode} Canned queries: {canned}. Start with {named('list_tables')} and "
        f"{named('describe_table')}. Limits: "
        f"{limits.max_rows} rows and {limits.max_result_bytes} bytes per result, "
        f"{limits.query_timeout_s:g} s per query, memory {limits.memory_limit}; a result that "
        "hits a cap says truncated=true and gives a handle to page through the rest "
        f"(kept {limits.results_ttl_s:g} s). Files, network, writes and settings are refused. "
        f"DuckDB SQL tips: the {cheatsheet} resource."
    )
