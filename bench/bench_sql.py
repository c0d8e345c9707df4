"""sql_query through the gateway vs raw DuckDB in Python, on the same queries and data, in one run.

    uv run python -m bench.bench_sql [--quick]

Measures the added latency per query, in memory and over loopback HTTP (both protocol eras), for
a sub-millisecond query, a few-millisecond aggregate and a ~100 ms query, against raw DuckDB in
Python (a read-only connection, a cursor per call, fetchall). The paths of a query are sampled
in turn, one call each, so all see the same load; for SELECT 42 fastmcp's own floor joins them
(a constant result with the same output schema through one mount). Isolation under long
queries and big results have benchmarks of their own (bench_isolation.py, bench_results.py).
Prints a JSON report; docs/benchmarks.md records a run.
"""

import argparse
import asyncio
import json
import shutil
import tempfile
import time
from pathlib import Path

import duckdb
from fastmcp import Client, FastMCP
from fastmcp.tools import ToolResult
from mcp.types import TextContent

from bench.common import gateway_process, machine, summary
from gateway import create_gateway
from servers.sample_data import ensure_sample_database
from servers.settings import GatewaySettings
from servers.sql.query import QueryResult

QUERIES = {
    "trivial (SELECT 42)": "SELECT 42",
    "lookup (1 airline)": "SELECT name FROM airlines WHERE carrier = 'UA'",
    "aggregate (delays by carrier)": (
        "SELECT carrier, count(*), avg(dep_delay) FROM flights GROUP BY carrier ORDER BY carrier"
    ),
    "~100 ms (distinct counts over 8x flights)": (
        "SELECT origin, median(dep_delay), quantile_cont(arr_delay, 0.9), "
        "count(DISTINCT tailnum || x) FROM flights CROSS JOIN range(8) t(x) "
        "GROUP BY origin ORDER BY origin"
    ),
}


async def interleaved(paths: dict, n: int, warm_up: int = 5) -> dict[str, list[float]]:
    """Time each path n times, one sample of each in turn (the order rotating), so that every
    path sees the same load; a path returns an awaitable or, for raw DuckDB, nothing."""
    samples: dict[str, list[float]] = {name: [] for name in paths}
    names = list(paths)
    for i in range(warm_up + n):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            started = time.perf_counter()
            pending = paths[name]()
            if pending is not None:
                await pending
            if i >= warm_up:
                samples[name].append(time.perf_counter() - started)
    return samples


def trivial_gateway() -> FastMCP:
    """fastmcp's own floor: a tool that returns a QueryResult-shaped constant, through a mount."""
    server = FastMCP("floor")
    constant = {
        "columns": [{"name": "42", "type": "INTEGER"}],
        "rows": [[42]],
        "row_count": 1,
        "truncated": False,
        "truncated_reason": None,
        "hint": None,
        "elapsed_ms": 0.0,
        "result": None,
        "summary": None,
        "summary_note": None,
    }

    @server.tool(output_schema=QueryResult.model_json_schema())
    async def query(sql: str) -> ToolResult:
        return ToolResult(
            content=[TextContent(type="text", text=json.dumps(constant))],
            structured_content=constant,
        )

    gateway = FastMCP("gateway")
    gateway.mount(server, namespace="sql")
    return gateway


async def latency(database: Path, settings: GatewaySettings, url: str, n: int) -> dict:
    connection = duckdb.connect(str(database), read_only=True)

    def raw(sql: str) -> None:
        """The baseline: a plain read-only connection, a cursor per call, fetch everything."""
        cursor = connection.cursor()
        cursor.execute(sql).fetchall()
        cursor.close()

    def through(client: Client, sql: str):
        return lambda: client.call_tool("sql_query", {"sql": sql})

    report = {}
    gateway = create_gateway(settings)
    async with (
        Client(trivial_gateway()) as floor,
        Client(gateway) as memory,
        Client(url) as http,
        Client(url, mode="legacy") as old,
    ):
        for name, sql in QUERIES.items():
            paths = {
                "raw_duckdb": lambda sql=sql: raw(sql),
                "in_memory": through(memory, sql),
                "http_auto": through(http, sql),
                "http_legacy": through(old, sql),
            }
            if sql == "SELECT 42":
                paths["fastmcp_floor_in_memory"] = through(floor, sql)
            runs = n if "100 ms" not in name else max(30, n // 8)
            row = {path: summary(times) for path, times in (await interleaved(paths, runs)).items()}
            base = row["raw_duckdb"]["p50_ms"]
            for path in ("in_memory", "http_auto", "http_legacy"):
                row[path]["added_p50_ms"] = round(row[path]["p50_ms"] - base, 3)
                row[path]["ratio_p50"] = round(row[path]["p50_ms"] / base, 3)
            report[name] = row
    connection.close()
    return report


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    args = parser.parse_args()
    n = 100 if args.quick else 400
    with tempfile.TemporaryDirectory() as scratch:
        data_dir = Path(scratch)
        database = ensure_sample_database(data_dir)
        shutil.copyfile(database, data_dir / "raw.duckdb")  # the baseline opens its own copy
        env = {"GATEWAY_DATA_DIR": scratch, "GATEWAY_MCPSERVERS": "{}"}
        settings = GatewaySettings.load(data_dir=data_dir, mcpServers={})
        with gateway_process(env) as url:
            report = {
                "machine": machine(),
                "latency": await latency(data_dir / "raw.duckdb", settings, url, n),
            }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
