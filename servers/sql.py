"""The sql server: read-only DuckDB querying for LLMs, bounded in time, rows and bytes.

Run alone: ``uv run python -m servers.sql`` (stdio) or ``... --transport http --port 8001``.
"""

import time
from typing import Annotated, Literal

import duckdb
from fastmcp import FastMCP
from fastmcp.exceptions import ToolError
from fastmcp.tools import ToolResult
from mcp.types import TextContent, ToolAnnotations
from pydantic import Field

from servers.results import Column, Rows, cap_rows, markdown_table
from servers.settings import GatewaySettings
from servers.sql_engine import Engine, QueryTimeout, RefusedStatement, check_statement

READ_ONLY = ToolAnnotations(readOnlyHint=True, openWorldHint=False)


class QueryResult(Rows):
    elapsed_ms: float = Field(description="Time the database took, in milliseconds.")


def create_server(settings: GatewaySettings, engine: Engine | None = None) -> FastMCP:
    """The sql server over engine (opened from settings when not given)."""
    engine = engine or Engine.open(settings)
    limits = settings.sql
    mcp = FastMCP(
        "sql",
        instructions=_instructions(engine),
        mask_error_details=True,
    )

    @mcp.tool(annotations=READ_ONLY, output_schema=QueryResult.model_json_schema())
    async def query(
        sql: Annotated[str, Field(description="One read-only DuckDB SQL statement.", min_length=1)],
        max_rows: Annotated[
            int | None,
            Field(
                ge=1,
                description="Return at most this many rows (can only lower "
                f"the server's cap of {limits.max_rows}).",
            ),
        ] = None,
        format: Annotated[
            Literal["json", "markdown"],
            Field(description="How the text content shows the rows: JSON or a markdown table."),
        ] = "json",
        timeout_s: Annotated[
            float | None,
            Field(
                gt=0,
                description="Stop the query after this many seconds "
                f"(can only lower the server's {limits.query_timeout_s:g} s).",
            ),
        ] = None,
    ) -> ToolResult:
        """Run one read-only SQL statement (SELECT, WITH, FROM, VALUES, DESCRIBE, SHOW, SUMMARIZE,
        EXPLAIN) on the DuckDB database and return its columns with types and its rows.

        Results are capped in rows and bytes; when a cap cuts the result, `truncated` is true,
        `truncated_reason` says which cap, and `hint` says how to narrow the query. Writes, file
        and network access, settings changes and multiple statements are refused.
        """
        rows_cap = min(max_rows or limits.max_rows, limits.max_rows)
        started = time.perf_counter()
        result = await _run(
            engine,
            lambda cursor: _fetch(cursor, sql, rows_cap, limits.max_result_bytes),
            timeout_s,
        )
        answer = QueryResult(
            **result.model_dump(), elapsed_ms=round((time.perf_counter() - started) * 1000, 3)
        )
        text = markdown_table(answer) if format == "markdown" else answer.model_dump_json()
        return ToolResult(
            content=[TextContent(type="text", text=text)],
            structured_content=answer.model_dump(mode="json"),
        )

    @mcp.tool(annotations=READ_ONLY)
    async def list_tables(
        pattern: Annotated[
            str | None,
            Field(description="Only names matching this SQL LIKE pattern, e.g. 'fl%'."),
        ] = None,
        detail: Annotated[
            Literal["names", "summary", "full"],
            Field(
                description="names: just names; summary: rows, columns and comment; "
                "full: also every column with its type."
            ),
        ] = "summary",
    ) -> list[dict]:
        """List the tables and views of the database with estimated row counts, column counts
        and comments. Start here to learn what data there is."""
        return await _run(engine, lambda cursor: _tables(cursor, pattern, detail))

    @mcp.tool(annotations=READ_ONLY)
    async def describe_table(
        table: Annotated[str, Field(description="A table or view name from list_tables.")],
        sample_rows: Annotated[int, Field(ge=0, le=20, description="Example rows to include.")] = 3,
    ) -> dict:
        """Describe one table or view: its columns with types, nullability and comments, and a
        few example rows."""
        return await _run(
            engine,
            lambda cursor: _describe(cursor, table, sample_rows, limits.max_result_bytes),
        )

    return mcp


async def _run(engine: Engine, work, timeout_s: float | None = None):
    try:
        return await engine.run(work, timeout_s)
    except RefusedStatement as exc:
        raise ToolError(str(exc)) from None
    except QueryTimeout as exc:
        raise ToolError(
            f"{exc} Narrow it with WHERE, aggregate, or add LIMIT; or check its plan with EXPLAIN."
        ) from None
    except duckdb.Error as exc:
        raise ToolError(_duckdb_message(exc, engine)) from None


def _duckdb_message(exc: duckdb.Error, engine: Engine) -> str:
    """DuckDB's own message (first line), without the host's paths."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    for path in (str(engine.database.resolve().parent), str(engine.database)):
        text = text.replace(path, "<data>")
    return text


def _fetch(cursor: duckdb.DuckDBPyConnection, sql: str, max_rows: int, max_bytes: int) -> Rows:
    check_statement(cursor, sql)
    cursor.execute(sql)
    columns = [Column(name=d[0], type=str(d[1])) for d in cursor.description or []]
    return cap_rows(columns, cursor.fetchmany(max_rows + 1), max_rows, max_bytes)


_TABLES_SQL = """
    SELECT t.table_name AS name, t.table_type AS kind, t.comment,
           coalesce(s.estimated_size, 0) AS row_estimate,
           (SELECT count(*) FROM duckdb_columns() c
             WHERE c.table_name = t.table_name AND c.schema_name = t.schema_name) AS columns
    FROM (
        SELECT table_name, schema_name, 'table' AS table_type, comment FROM duckdb_tables()
        UNION ALL
        SELECT view_name, schema_name, 'view', comment FROM duckdb_views() WHERE NOT internal
    ) t
    LEFT JOIN duckdb_tables() s USING (table_name, schema_name)
    WHERE t.schema_name = current_schema() AND t.table_name ILIKE coalesce(?, '%')
    ORDER BY t.table_name
"""


def _tables(cursor: duckdb.DuckDBPyConnection, pattern: str | None, detail: str) -> list[dict]:
    rows = cursor.execute(_TABLES_SQL, [pattern]).fetchall()
    names = ["name", "kind", "comment", "row_estimate", "columns"]
    tables = [dict(zip(names, row, strict=True)) for row in rows]
    if detail == "names":
        return [{"name": t["name"]} for t in tables]
    if detail == "full":
        for table in tables:
            table["column_list"] = _columns(cursor, table["name"])
    return tables


def _columns(cursor: duckdb.DuckDBPyConnection, table: str) -> list[dict]:
    rows = cursor.execute(
        "SELECT column_name, data_type, is_nullable, comment FROM duckdb_columns() "
        "WHERE table_name = ? AND schema_name = current_schema() ORDER BY column_index",
        [table],
    ).fetchall()
    return [
        {"name": name, "type": kind, "nullable": nullable, "comment": comment}
        for name, kind, nullable, comment in rows
    ]


def _describe(
    cursor: duckdb.DuckDBPyConnection, table: str, sample_rows: int, max_bytes: int
) -> dict:
    known = {t["name"]: t for t in _tables(cursor, None, "summary")}
    if table not in known:
        raise RefusedStatement(
            f"There is no table or view named {table!r}. Known: {', '.join(sorted(known))}."
        )
    description = {**known[table], "column_list": _columns(cursor, table)}
    if sample_rows:
        cursor.execute(f"SELECT * FROM {_identifier(table)} LIMIT {sample_rows}")
        columns = [Column(name=d[0], type=str(d[1])) for d in cursor.description]
        description["sample"] = cap_rows(
            columns, cursor.fetchall(), sample_rows, max_bytes
        ).model_dump()
    return description


def _identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _instructions(engine: Engine) -> str:
    limits = engine.settings
    with engine.connection.cursor() as cursor:
        tables = [t["name"] for t in _tables(cursor, None, "names")]
    return (
        "Read-only SQL over a DuckDB database. Tables: "
        f"{', '.join(tables) or '(none)'}. Start with list_tables and describe_table, then "
        f"query. Limits: {limits.max_rows} rows and {limits.max_result_bytes} bytes per result, "
        f"{limits.query_timeout_s:g} s per query; results that hit a cap say truncated=true."
    )


if __name__ == "__main__":
    from servers.standalone import run_alone

    run_alone(create_server)
