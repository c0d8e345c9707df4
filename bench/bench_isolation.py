"""Isolation: fast calls' latency while a 20 s query and a long pipeline run are in flight.

    uv run python -m bench.bench_isolation [--quick]

A real gateway process over loopback HTTP (`python -m bench.trivial --bench-pipeline`: the
gateway plus the trivial `bench_echo` tool and the benchmark dataflow as pipeline `bench`; no
remote backend; query timeout raised to 30 s). One 2026-07-28 fastmcp client makes fast calls,
alternating `sql_query("SELECT 42")` and `bench_echo`, each timed with perf_counter around
call_tool: first idle, then while two other clients keep the gateway busy with

- one ~20 s SQL query (a count over 10^12 generated rows, stopped by its 20 s timeout; DuckDB
  runs it on the gateway's 2 DuckDB threads, inside the gateway process), and
- one ~20 s pipeline run (`long_profile` of bench/bench_dataflow.py: pandas group-bys over the
  flights repeated for 20 s, CPU-bound on one core in a run worker process), called by a
  2025-11-25 client, so it is a foreground run holding its request open.

Fast calls run back to back for a window each: idle (15 s), one ~20 s window per load alone
(query only, pipeline only: which load hurts), one with both loads (the target) and idle again
(did the machine's own load move meanwhile? each window also records the load average). Loaded
samples start once admin_status reports the pipeline run running, and end 1 s before the loads
do (checked: both still in flight). On a 2-core machine the two loads alone ask for three
cores. Reports p50/p99 per tool and window and the ratios to the first idle window (target: both
loads' p99 at most 3x idle). Prints a JSON report (about 100 s; --quick: idle 6 s and the
both-loads window only, about 40 s).
"""

import argparse
import asyncio
import json
import os
import tempfile
import time
from pathlib import Path

from fastmcp import Client

from bench.common import ignore_log, machine, serving, summary
from servers.sample_data import ensure_sample_database

FAST = {
    "sql_query (SELECT 42)": ("sql_query", {"sql": "SELECT 42"}),
    "bench_echo": ("bench_echo", {"text": "hello"}),
}
LONG_QUERY = "SELECT count(*) FROM range(1000000000000) t(x) WHERE x % 7 = 3"
LOAD_S = 20


async def fast_calls(client: Client, until: float) -> dict[str, list[float]]:
    """Calls of each fast tool, alternating, until monotonic time `until`."""
    samples: dict[str, list[float]] = {label: [] for label in FAST}
    while True:
        for label, (tool, arguments) in FAST.items():
            if time.monotonic() >= until:
                return samples
            started = time.perf_counter()
            await client.call_tool(tool, arguments)
            samples[label].append(time.perf_counter() - started)


async def pipeline_running(client: Client, timeout_s: float = 10) -> bool:
    """Wait until admin_status reports a run of pipeline `bench` in progress on a worker."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = (await client.call_tool("admin_status", {})).structured_content
        if any(r["pipeline"] == "bench" and r["state"] == "running" for r in status["runs"]):
            return True
        await asyncio.sleep(0.1)
    return False


async def timed(awaitable) -> tuple[float, object]:
    started = time.perf_counter()
    result = await awaitable
    return time.perf_counter() - started, result


class Gateway:
    """Three clients of one gateway: fast calls, the long query, the long pipeline run."""

    def __init__(self, url: str):
        self.fast = Client(url)
        self.querier = Client(url)
        self.runner = Client(url, mode="legacy", log_handler=ignore_log)

    async def __aenter__(self):
        for client in (self.fast, self.querier, self.runner):
            await client.__aenter__()
        # Warm up: code paths, the run worker process and its data, DuckDB.
        await fast_calls(self.fast, time.monotonic() + 1)
        await self.run_pipeline(0.1)
        await self.querier.call_tool("sql_query", {"sql": "SELECT count(*) FROM flights"})
        return self

    async def __aexit__(self, *exc) -> None:
        for client in (self.runner, self.querier, self.fast):
            await client.__aexit__(*exc)

    def run_pipeline(self, seconds: float):
        arguments = {"name": "bench", "outputs": ["long_profile"], "inputs": {"seconds": seconds}}
        return self.runner.call_tool("pipelines_run_pipeline", arguments)

    def long_query(self):
        arguments = {"sql": LONG_QUERY, "timeout_s": LOAD_S}
        return self.querier.call_tool("sql_query", arguments, raise_on_error=False)

    async def window(self, query: bool, pipeline: bool, seconds: float = LOAD_S) -> tuple:
        """Fast-call samples while the chosen loads run; and what the loads did."""
        tasks = {}
        if query:
            tasks["query"] = asyncio.create_task(timed(self.long_query()))
        if pipeline:
            tasks["pipeline"] = asyncio.create_task(timed(self.run_pipeline(seconds)))
        started = time.monotonic()
        info: dict = {}
        if pipeline:
            info["pipeline_reported_running"] = await pipeline_running(self.fast)
        if tasks:
            await asyncio.sleep(0.5)  # the query well under way too
        sampled_from = time.monotonic() - started
        samples = await fast_calls(self.fast, started + seconds - 1)
        info["samples_window_s"] = [round(sampled_from, 2), round(time.monotonic() - started, 2)]
        info["machine_load_average_1min"] = round(os.getloadavg()[0], 2)  # others' load too
        if tasks:
            info["loads_in_flight_throughout"] = not any(t.done() for t in tasks.values())
        if query:
            query_s, result = await tasks["query"]
            info["query_s"] = round(query_s, 2)
            info["query_outcome"] = "stopped by its timeout" if result.is_error else "finished"
        if pipeline:
            pipeline_s, result = await tasks["pipeline"]
            info["pipeline_s"] = round(pipeline_s, 2)
            info["pipeline_repeats"] = result.structured_content["outputs"]["long_profile"][
                "repeats"
            ]
        return samples, info


async def measure(url: str, quick: bool) -> dict:
    """Windows in order: (query running, pipeline running, seconds); ratios are to `idle`."""
    idle_s = 6 if quick else 15
    windows = {"idle": (False, False, idle_s), "both loads": (True, True, LOAD_S)}
    if not quick:  # each load alone, and idle again to see whether the machine's load moved
        windows = {
            "idle": windows["idle"],
            "query only": (True, False, LOAD_S),
            "pipeline only": (False, True, LOAD_S),
            "both loads": windows["both loads"],
            "idle again": (False, False, idle_s),
        }
    samples, infos = {}, {}
    async with Gateway(url) as gateway:
        for name, (query, pipeline, seconds) in windows.items():
            samples[name], infos[name] = await gateway.window(query, pipeline, seconds)
    report = {}
    for label in FAST:
        row = {name: summary(samples[name][label]) for name in windows}
        for name in windows:
            if name != "idle":
                row[name]["p50_ratio"] = round(row[name]["p50_ms"] / row["idle"]["p50_ms"], 2)
                row[name]["p99_ratio"] = round(row[name]["p99_ms"] / row["idle"]["p99_ms"], 2)
        row["target (both loads: p99 <= 3x idle) met"] = row["both loads"]["p99_ratio"] <= 3
        report[label] = row
    report["windows"] = infos
    return report


async def run(quick: bool) -> dict:
    with tempfile.TemporaryDirectory() as scratch:
        ensure_sample_database(Path(scratch))
        env = {
            "GATEWAY_DATA_DIR": scratch,
            "GATEWAY_MCPSERVERS": "{}",
            "GATEWAY_SQL__QUERY_TIMEOUT_S": "30",
        }
        with serving(["-m", "bench.trivial", "--bench-pipeline"], env) as base:
            report = {
                "machine": machine() | {"load_average_before": os.getloadavg()},
                "method": "fast calls, alternating tools, back to back for a window each: "
                f"idle ({6 if quick else 15} s), with {LOAD_S} s loads in flight, ...",
                **await measure(base + "/mcp", quick),
            }
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="idle 6 s and both loads only (no single-load windows)"
    )
    report = asyncio.run(run(parser.parse_args().quick))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
