"""TPC-H at scale factor 1: the 22 queries in raw DuckDB vs the gateway's sql_query, in one run.

    uv run python -m bench.bench_tpch [--quick]

Data: tpchgen-cli (a dev dependency) writes SF1 as Parquet into a temporary directory, which is
loaded into data/tpch-sf1.duckdb (built in a temporary file and moved into place; reused when
present). The build times are kept beside it in data/tpch-sf1.json and reported.

Per query, after one warm-up of each path (the raw warm-up also checks the row count and a few
known answers), raw and gateway samples alternate: 10 of each, or 2 with --quick; all 22 queries
always run. Baseline: a read-only DuckDB connection to its own copy of the file (DuckDB shares
one instance per file within a process, and the gateway's is locked to its hardened settings)
with the gateway engine's threads and memory_limit, a cursor per call, fetchall. Gateway:
create_gateway() over the same file, no backends, an in-memory fastmcp Client calling sql_query.
The gateway's row and byte caps are raised above the largest result (Q16, 18,314 rows) so that
both paths deliver every row, and the ratios compare equal work. The two queries longer than the
default 500-row page (Q11, Q16) are also timed as a client gets them by default (max_rows=500:
the first page and a handle, the rest stored in the background), as a third path in the same
alternation, reported beside the ratio. A query failing through the gateway is reported with its
error instead of its timings.

Prints a JSON report: machine, settings, data build, per query rows, raw and gateway p50/p99, the
tool's own elapsed_ms (time inside the server, without protocol and client), ratio of the medians,
and the geometric mean and maximum of the ratios.
"""

import argparse
import asyncio
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb
from fastmcp import Client

from bench.common import ROOT, machine, summary
from bench.tpch_queries import EXPECTED_ROWS, EXPECTED_VALUES, QUERIES
from gateway import create_gateway
from servers.settings import GatewaySettings

DATABASE = ROOT / "data" / "tpch-sf1.duckdb"
BUILD_INFO = DATABASE.with_suffix(".json")
TABLES = ("region", "nation", "supplier", "customer", "part", "partsupp", "orders", "lineitem")
# The gateway's limits for this benchmark: a long enough deadline, and caps above every result.
SQL_SETTINGS = {"query_timeout_s": 300, "max_rows": 20_000, "max_result_bytes": 20_000_000}
MAX_RESPONSE_BYTES = 50_000_000
DEFAULT_PAGE_ROWS = 500  # the gateway's default sql.max_rows


def ensure_tpch_database() -> dict:
    """Build data/tpch-sf1.duckdb unless present; returns how it was built (and if just now)."""
    if DATABASE.is_file():
        info = json.loads(BUILD_INFO.read_text()) if BUILD_INFO.is_file() else {}
        return {**info, "cached": True}
    DATABASE.parent.mkdir(parents=True, exist_ok=True)
    partial = DATABASE.with_name(f"{DATABASE.name}.{os.getpid()}.tmp")
    tpchgen = shutil.which("tpchgen-cli") or str(Path(sys.executable).parent / "tpchgen-cli")
    try:
        with tempfile.TemporaryDirectory() as parquet_dir:
            started = time.perf_counter()
            subprocess.run(
                [tpchgen, "parquet", "--scale-factor", "1", "--output-dir", parquet_dir],
                check=True,
            )
            generate_s = time.perf_counter() - started
            started = time.perf_counter()
            with duckdb.connect(str(partial)) as con:
                for table in TABLES:
                    path = Path(parquet_dir) / f"{table}.parquet"
                    con.execute(f"CREATE TABLE {table} AS SELECT * FROM read_parquet('{path}')")
                con.execute("CHECKPOINT")
            load_s = time.perf_counter() - started
        info = {
            "generator": "tpchgen-cli parquet --scale-factor 1",
            "generate_s": round(generate_s, 2),
            "load_s": round(load_s, 2),
            "size_mb": round(partial.stat().st_size / 1e6, 1),
        }
        BUILD_INFO.write_text(json.dumps(info, indent=2))
        os.replace(partial, DATABASE)
    finally:
        partial.unlink(missing_ok=True)
    return {**info, "cached": False}


def check_result(number: int, columns: list[str], rows: list[tuple]) -> list[str]:
    """What is wrong with a query's result against the known SF1 answers (empty: all good)."""
    problems = []
    if len(rows) != EXPECTED_ROWS[number]:
        problems.append(f"{len(rows)} rows, expected {EXPECTED_ROWS[number]}")
    for query, column, expected in EXPECTED_VALUES:
        if query == number:
            got = float(rows[0][columns.index(column)])
            if round(got, 2) != expected:
                problems.append(f"{column} = {got}, expected {expected}")
    return problems


def raw_once(con: duckdb.DuckDBPyConnection, sql: str) -> tuple[float, list[str], list[tuple]]:
    """The baseline: a cursor per call, fetch everything."""
    started = time.perf_counter()
    cursor = con.cursor()
    cursor.execute(sql)
    rows = cursor.fetchall()
    elapsed = time.perf_counter() - started
    columns = [d[0] for d in cursor.description]
    cursor.close()
    return elapsed, columns, rows


async def gateway_once(client: Client, arguments: dict) -> tuple[float, dict]:
    started = time.perf_counter()
    result = await client.call_tool("sql_query", arguments)
    return time.perf_counter() - started, result.structured_content


async def bench_query(
    number: int, con: duckdb.DuckDBPyConnection, client: Client, samples: int
) -> dict:
    sql = QUERIES[number]
    _, columns, rows = raw_once(con, sql)  # warm-up and check
    row = {"rows": len(rows)}
    if problems := check_result(number, columns, rows):
        row["check_failed"] = problems
    full = {"sql": sql}
    # A result longer than the default page is also timed as a client gets it by default.
    paged = {"sql": sql, "max_rows": DEFAULT_PAGE_ROWS} if len(rows) > DEFAULT_PAGE_ROWS else None
    raw, through, engine, first_page = [], [], [], []
    try:
        _, page = await gateway_once(client, full)  # warm-up
        row["gateway_rows"] = page["row_count"]
        if page["truncated"]:
            row["gateway_truncated"] = page["truncated_reason"]
        if paged:
            await gateway_once(client, paged)
        for _ in range(samples):
            raw.append(raw_once(con, sql)[0])
            elapsed, page = await gateway_once(client, full)
            through.append(elapsed)
            engine.append(page["elapsed_ms"] / 1000)
            if paged:
                first_page.append((await gateway_once(client, paged))[0])
    except Exception as exc:  # refused, out of memory, timed out: report it, go on
        row["gateway_error"] = f"{type(exc).__name__}: {exc}"
        return row
    row["raw"] = summary(raw)
    row["gateway"] = summary(through)
    row["gateway_server_elapsed"] = summary(engine)
    row["added_p50_ms"] = round(row["gateway"]["p50_ms"] - row["raw"]["p50_ms"], 3)
    row["ratio_p50"] = round(row["gateway"]["p50_ms"] / row["raw"]["p50_ms"], 3)
    if paged:
        row[f"gateway_first_{DEFAULT_PAGE_ROWS}_rows"] = summary(first_page)
        row[f"first_{DEFAULT_PAGE_ROWS}_rows_ratio_p50"] = round(
            summary(first_page)["p50_ms"] / row["raw"]["p50_ms"], 3
        )
    return row


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="2 samples per path, not 10")
    args = parser.parse_args()
    samples = 2 if args.quick else 10
    started = time.perf_counter()
    build = ensure_tpch_database()
    with tempfile.TemporaryDirectory() as scratch:
        raw_copy = Path(scratch) / "raw.duckdb"  # the baseline opens its own DuckDB instance
        shutil.copyfile(DATABASE, raw_copy)
        settings = GatewaySettings.load(
            data_dir=Path(scratch) / "gateway",
            mcpServers={},
            sql={"database": DATABASE, **SQL_SETTINGS},
            limits={"max_response_bytes": MAX_RESPONSE_BYTES},
        )
        sql = settings.sql
        con = duckdb.connect(
            str(raw_copy),
            read_only=True,
            config={"threads": sql.threads, "memory_limit": sql.memory_limit},
        )
        queries = {}
        async with Client(create_gateway(settings)) as client:
            for number in QUERIES:
                queries[number] = await bench_query(number, con, client, samples)
                print(f"Q{number}: {queries[number].get('ratio_p50')}", file=sys.stderr)
        con.close()
    ratios = {n: q["ratio_p50"] for n, q in queries.items() if "ratio_p50" in q}
    worst = max(ratios, key=ratios.get) if ratios else None
    report = {
        "machine": machine(),
        "settings": {
            "scale_factor": 1,
            "warm_up": 1,
            "samples_per_path": samples,
            "threads": sql.threads,
            "memory_limit": sql.memory_limit,
            "query_timeout_s": sql.query_timeout_s,
            "max_rows": sql.max_rows,
            "max_result_bytes": sql.max_result_bytes,
            "max_response_bytes": settings.limits.max_response_bytes,
            "concurrency": sql.concurrency,
            "gateway": "create_gateway, every namespace, no backends, in-memory fastmcp Client",
            "raw": "duckdb.connect(copy, read_only=True, same threads and memory_limit), "
            "a cursor per call, fetchall",
            "rows": "caps raised so the gateway returns every row, like fetchall",
        },
        "data": build,
        "queries": {f"Q{n}": q for n, q in queries.items()},
        "geomean_ratio_p50": round(math.exp(sum(map(math.log, ratios.values())) / len(ratios)), 3)
        if ratios
        else None,
        "max_ratio_p50": {"query": f"Q{worst}", "ratio": ratios[worst]} if worst else None,
        "failed": [f"Q{n}" for n, q in queries.items() if "ratio_p50" not in q],
        "check_failed": [f"Q{n}" for n, q in queries.items() if "check_failed" in q],
        "wall_clock_s": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
