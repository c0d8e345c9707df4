"""The query tool: caps at exactly N and N+1 rows and at the byte cap, deterministic types,
deadlines and cancellation that really stop the query, isolation between callers."""

import json
import os
import shutil
import sys
import threading
import time
from pathlib import Path

import anyio
import pytest
from fastmcp import Client
from fastmcp.exceptions import ToolError

from servers.sample_data import ensure_sample_database
from servers.settings import GatewaySettings
from servers.sql.engine import Engine
from servers.sql.server import create_server
from tests.sql_fixtures import private_server

SLOW = "SELECT count(*) FROM range(100000000000) t(x) WHERE x % 7 = 3"


@pytest.fixture(scope="module")
def server(settings):
    return create_server(settings)


@pytest.fixture(params=["auto", "legacy"])
async def sql(request, server):
    async with Client(server, mode=request.param) as client:
        yield client


async def query(client: Client, sql: str, **arguments) -> dict:
    result = await client.call_tool("query", {"sql": sql, **arguments})
    return result.structured_content


@pytest.mark.parametrize(("rows", "truncated"), [(5, False), (6, True)])
async def test_a_result_of_exactly_max_rows_is_whole_and_one_more_is_truncated(
    sql, rows, truncated
):
    result = await query(sql, f"SELECT range AS i FROM range({rows})", max_rows=5)
    assert result["row_count"] == 5
    assert result["rows"] == [[i] for i in range(5)]
    assert result["truncated"] is truncated
    assert result["truncated_reason"] == ("rows" if truncated else None)
    assert (result["hint"] is not None) is truncated
    assert (result["result"] is not None) is truncated


async def test_a_per_call_row_limit_cannot_raise_the_servers_cap(sql, settings):
    result = await query(sql, "SELECT range FROM range(100000)", max_rows=10**6)
    assert result["row_count"] == settings.sql.max_rows


async def test_the_byte_cap_cuts_wide_rows_and_says_so(data_dir, tmp_path):
    server = private_server(data_dir, tmp_path, max_result_bytes=5_000)
    async with Client(server) as client:
        result = await query(client, "SELECT repeat('x', 1000) AS wide FROM range(50)")
    assert result["truncated"] is True
    assert result["truncated_reason"] == "bytes"
    assert 0 < result["row_count"] < 5
    assert len(json.dumps(result["rows"])) <= 5_000
    assert "bytes" in result["hint"]


async def test_markdown_format_shows_a_table(sql):
    result = await sql.call_tool(
        "query",
        {
            "sql": "SELECT carrier, name FROM airlines ORDER BY carrier LIMIT 2",
            "format": "markdown",
        },
    )
    text = result.content[0].text
    assert text.splitlines()[:4] == [
        "| carrier | name |",
        "|---|---|",
        "| 9E | Endeavor Air Inc. |",
        "| AA | American Airlines Inc. |",
    ]
    assert result.structured_content["rows"][0] == ["9E", "Endeavor Air Inc."]


TYPES = [
    ("42::TINYINT", "TINYINT", 42),
    ("9007199254740993::BIGINT", "BIGINT", "9007199254740993"),
    (
        "170141183460469231731687303715884105727::HUGEINT",
        "HUGEINT",
        "170141183460469231731687303715884105727",
    ),
    ("sum(x) FROM (VALUES (1), (2)) v(x)", "HUGEINT", 3),
    ("1.50::DECIMAL(10,2)", "DECIMAL(10,2)", "1.50"),
    ("1.25::DOUBLE", "DOUBLE", 1.25),
    ("'nan'::DOUBLE", "DOUBLE", "NaN"),
    ("'inf'::DOUBLE", "DOUBLE", "Infinity"),
    ("'-inf'::FLOAT", "FLOAT", "-Infinity"),
    ("true", "BOOLEAN", True),
    ("NULL::INTEGER", "INTEGER", None),
    ("'héllo'", "VARCHAR", "héllo"),
    ("DATE '2013-07-04'", "DATE", "2013-07-04"),
    ("TIMESTAMP '2013-07-04 05:06:07.5'", "TIMESTAMP", "2013-07-04T05:06:07.500000"),
    ("TIME '05:06:07'", "TIME", "05:06:07"),
    ("INTERVAL '1 month 2 days 3 seconds'", "INTERVAL", "P1M2DT3S"),
    ("INTERVAL '90 minutes'", "INTERVAL", "PT5400S"),
    (
        "'8b5e7a1c-1f2d-4c3b-9a8e-0f1e2d3c4b5a'::UUID",
        "UUID",
        "8b5e7a1c-1f2d-4c3b-9a8e-0f1e2d3c4b5a",
    ),
    ("'\\xDE\\xAD'::BLOB", "BLOB", "3q0="),
    ("[1, 2, NULL]", "INTEGER[]", [1, 2, None]),
    (
        "{'a': 1, 'b': [DATE '2013-01-01']}",
        "STRUCT(a INTEGER, b DATE[])",
        {"a": 1, "b": ["2013-01-01"]},
    ),
    ("MAP {'k': 1, 'j': 2}", "MAP(VARCHAR, INTEGER)", [["k", 1], ["j", 2]]),
    ("'b'::ENUM('a', 'b')", "ENUM('a', 'b')", "b"),
]


@pytest.mark.parametrize(("expression", "kind", "expected"), TYPES, ids=[t[1] for t in TYPES])
async def test_every_type_serialises_deterministically(sql, expression, kind, expected):
    statement = f"SELECT {expression}" if " FROM " in expression else f"SELECT {expression} AS v"
    result = await query(sql, statement)
    assert result["columns"][0]["type"] == kind
    assert result["rows"] == [[expected]]


async def test_timestamps_with_time_zones_keep_their_offset(sql):
    result = await query(sql, "SELECT TIMESTAMPTZ '2013-07-04 05:00:00+00' AS v")
    assert result["rows"][0][0].startswith("2013-07-04T") and result["rows"][0][0][-6] in "+-"


async def test_a_timeout_stops_the_query_and_the_next_call_is_served(sql):
    started = time.monotonic()
    with anyio.fail_after(3), pytest.raises(ToolError, match="longer than 1 s"):
        await query(sql, SLOW, timeout_s=1)
    assert time.monotonic() - started < 2.0  # the budget plus at most a second
    with anyio.fail_after(2):
        assert (await query(sql, "SELECT 42"))["rows"] == [[42]]


async def test_a_per_call_timeout_cannot_raise_the_servers_limit(data_dir, tmp_path):
    server = private_server(data_dir, tmp_path, query_timeout_s=1)
    async with Client(server) as client:
        with anyio.fail_after(3), pytest.raises(ToolError, match="longer than 1 s"):
            await query(client, SLOW, timeout_s=600)


def _running_queries() -> int:
    return sum(1 for t in threading.enumerate() if t.name.startswith("AnyIO worker"))


async def test_a_cancelled_call_interrupts_its_query(settings, tmp_path, data_dir):
    server = private_server(data_dir, tmp_path, concurrency=1)
    async with Client(server) as client:
        with anyio.move_on_after(1):  # the client gives up: its request is cancelled
            await query(client, SLOW)
        # With one slot, the next query only runs once the cancelled one has really stopped.
        with anyio.fail_after(3):
            assert (await query(client, "SELECT 1"))["rows"] == [[1]]


async def test_running_out_of_memory_is_a_clear_error_and_the_server_stays_up(data_dir, tmp_path):
    server = private_server(data_dir, tmp_path, memory_limit="64MB", max_temp_directory_size="0B")
    async with Client(server) as client:
        with pytest.raises(ToolError, match="out of memory") as failed:
            await query(client, "SELECT list(range) FROM range(30000000)")
        assert "64MB" in str(failed.value)
        assert (await query(client, "SELECT 7"))["rows"] == [[7]]


async def test_ten_concurrent_callers_with_one_timing_out(sql):
    outcomes: dict[int, object] = {}

    async def caller(i: int) -> None:
        try:
            if i == 0:
                await query(sql, SLOW, timeout_s=1.5)
            else:
                result = await query(sql, f"SELECT {i} * count(*) FROM airlines")
                outcomes[i] = result["rows"][0][0]
        except ToolError as exc:
            outcomes[i] = exc

    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            for i in range(10):
                group.start_soon(caller, i)
    assert isinstance(outcomes.pop(0), ToolError)
    assert outcomes == {i: 16 * i for i in range(1, 10)}


async def test_explain_shows_a_plan_without_running(sql):
    plan = (await sql.call_tool("explain", {"sql": SLOW})).data
    assert "RANGE" in plan.upper() or "range" in plan
    with pytest.raises(ToolError, match="DELETE statements"):
        await sql.call_tool("explain", {"sql": "DELETE FROM flights"})


async def test_deadlines_that_fire_before_the_query_starts_never_hang_the_engine(settings):
    from servers.sql.engine import Engine, QueryTimeout

    engine = Engine.open(settings)
    outcomes = []
    with anyio.fail_after(20):
        for _ in range(200):
            try:
                outcomes.append(await engine.run(lambda c: c.execute("SELECT 1").fetchall(), 1e-6))
            except QueryTimeout:
                outcomes.append("timeout")
        assert await engine.run(lambda c: c.execute("SELECT 2").fetchall()) == [(2,)]
    assert "timeout" in outcomes


def _niceness_of_threads() -> dict[int, int]:
    tasks = Path("/proc/self/task")
    return {int(t.name): os.getpriority(os.PRIO_PROCESS, int(t.name)) for t in tasks.iterdir()}


@pytest.mark.skipif(sys.platform != "linux", reason="per-thread niceness is Linux's")
def test_query_threads_yield_but_the_event_loop_thread_does_not(data_dir, tmp_path):
    database = tmp_path / "copy.duckdb"  # a fresh DuckDB instance, so fresh threads
    shutil.copyfile(ensure_sample_database(data_dir), database)
    base = os.getpriority(os.PRIO_PROCESS, 0)
    before = _niceness_of_threads()
    settings = GatewaySettings.load(data_dir=tmp_path / "data", sql={"threads": 3})
    engine = Engine(database, settings)
    started = {tid: nice for tid, nice in _niceness_of_threads().items() if tid not in before}
    # The engine's query thread and DuckDB's two extra workers, started from it.
    assert list(started.values()).count(min(19, base + 10)) >= 3
    assert os.getpriority(os.PRIO_PROCESS, 0) == base
    engine.close()
