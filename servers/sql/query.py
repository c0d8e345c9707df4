"""Running one read-only query: gate, stream the first page, keep the rest for paging.

Shared by the ad-hoc ``query`` tool and every canned query (and anything else that shows query
results), so they all pass the same gate, limits and result shaping.
"""

import time
from typing import Any

import duckdb
from fastmcp import Context
from fastmcp.server.dependencies import get_context
from pydantic import Field

from servers.lazy import lazy_module
from servers.results import Rows, cap_rows, relation_columns
from servers.sql.engine import Detach, Engine
from servers.sql.gate import check_statement
from servers.sql.result_store import BATCH_ROWS, ResultStore, table_rows

pa = lazy_module("pyarrow")  # loads with the first query


class QueryResult(Rows):
    elapsed_ms: float = Field(description="Time the call took in the server, in milliseconds.")
    result: dict | None = Field(
        None,
        description="When truncated: a handle to the whole result. Page through it with "
        "sql_read_result (result_id=result.id, offset) or the result.uri resource; people can "
        "download result.csv or result.parquet from the server.",
    )
    summary: str | None = Field(None, description="With summarize=true: the client's summary.")
    summary_note: str | None = Field(None, description="With summarize=true: how it went.")


async def run_query(
    engine: Engine,
    store: ResultStore | None,
    sql: str,
    params: dict[str, Any] | None,
    max_rows: int,
    timeout_s: float,
    ctx: Context | None = None,
    max_tokens: int | None = None,
) -> QueryResult:
    """Run sql (with params bound) and return its first page; raises the engine's errors.
    ``max_tokens`` caps a page a model reads (sql.max_result_tokens); charts plot more."""
    started = time.perf_counter()
    max_bytes = engine.settings.max_result_bytes
    progress = _progress_reporter(ctx) if ctx is not None else None

    def work(cursor: duckdb.DuckDBPyConnection):
        return first_page(cursor, sql, params, max_rows, max_bytes, store, max_tokens)

    page, handle = await engine.run(work, timeout_s, progress)
    elapsed = round((time.perf_counter() - started) * 1000, 3)
    # The page was built by cap_rows from engine values: no need to validate it again.
    result = QueryResult.model_construct(**dict(page), elapsed_ms=elapsed, result=handle)
    if result.truncated and handle is None and store is not None:
        result.hint = (result.hint or "") + (
            " The full result was not stored (too many large results are being stored); "
            "narrow the query."
        )
    elif handle is not None:
        result.hint = (result.hint or "") + (
            f" Next rows: {_read_tool(store)} with result_id {handle['id']!r} and offset "
            f"{result.row_count}; everything: download {handle['csv']}."
        )
    return result


def _read_tool(store: ResultStore) -> str:
    """The paging tool's name as the client sees it (the store's URIs carry the namespace)."""
    namespace = store.uri_prefix.removeprefix("sql://").removesuffix("results/").strip("/")
    return f"{namespace}_read_result" if namespace else "read_result"


def first_page(
    cursor: duckdb.DuckDBPyConnection,
    sql: str,
    params: dict[str, Any] | None,
    max_rows: int,
    max_bytes: int,
    store: ResultStore | None,
    max_tokens: int | None = None,
):
    """The first page of sql's result; when there is more, a Detach that stores the rest."""
    check_statement(cursor, sql)
    relation = cursor.sql(sql, params=params) if params else cursor.sql(sql)
    if relation is None:  # a statement that returns nothing
        return Rows(columns=[], rows=[], row_count=0, truncated=False), None
    columns = relation_columns(relation)
    reader = relation.to_arrow_reader(BATCH_ROWS)
    batches: list[pa.RecordBatch] = []
    seen = 0
    while seen <= max_rows:
        try:
            batch = reader.read_next_batch()
        except StopIteration:
            break
        batches.append(batch)
        seen += batch.num_rows
    # Only the rows a page can hold become Python values; the store takes the batches whole.
    head = pa.Table.from_batches(batches, reader.schema).slice(0, max_rows + 1)
    page = cap_rows(columns, table_rows(head.to_batches()), max_rows, max_bytes, max_tokens)
    stored = store.reserve(columns) if page.truncated and store is not None else None
    if stored is None:
        return page, None
    handle = store.handle(stored)
    return Detach((page, handle), lambda _cursor: store.fill(stored, batches, reader))


def current_context() -> Context | None:
    """The request's context, looked up rather than injected: a tool declaring a `Context`
    parameter pays for fastmcp's dependency resolution on every call (~0.4 ms measured)."""
    try:
        return get_context()
    except RuntimeError:  # called outside a request
        return None


def _progress_reporter(ctx: Context):
    """Report DuckDB's progress estimate to the client, when it asked for progress."""
    meta = ctx.request_context.meta if ctx.request_context is not None else None
    if not (meta or {}).get("progressToken"):
        return None

    logged = False

    async def report(percent: float) -> None:
        nonlocal logged
        if not logged:  # one log line when a query turns out to be long, then progress only
            logged = True
            await ctx.info(
                f"The query is still running ({percent:.0f}% done by DuckDB's estimate)."
            )
        await ctx.report_progress(round(percent, 1), 100, f"query {percent:.0f}% done")

    return report
