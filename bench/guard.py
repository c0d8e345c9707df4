"""A quick benchmark regression guard: a handful of ratios, each a gateway path over a baseline
measured in the same run, compared to the committed baseline (bench/baseline.json).

    uv run python -m bench.guard             # measure, compare, exit 1 if a ratio regressed
    uv run python -m bench.guard --json      # the same, the report as JSON
    uv run python -m bench.guard --record    # measure and write bench/baseline.json

Re-recording the baseline (after a deliberate change of speed, a new ratio, or new hardware) is
that one command, ``uv run python -m bench.guard --record``, on a machine as idle as you can
get (it makes RECORD_RUNS runs and records each ratio's median, about a minute); commit the
file. tests/test_bench_guard.py runs the guard in CI (``uv run pytest``) and fails with its
report when a ratio is more than THRESHOLD (1.5) times its baseline value;
GATEWAY_SKIP_BENCH_GUARD=1 skips that test on a machine too slow for it (CI must not set it).

**Method.** Absolute times move with the machine and its load; a ratio of two paths measured in
the same run mostly does not. The samples of the two paths of a ratio are interleaved one by
one (alternating which goes first), so both see the same load. Within a round, a ratio is the
gateway path's 10th percentile over the baseline's (QUANTILE); a run makes ROUNDS rounds, each
going over every ratio in turn, and reports each ratio's lowest round.

Why the 10th percentile and not the median: on this 2-core machine shared with other test runs,
a busy CPU preempts calls, and a longer call is preempted more often than a shorter one, so
under load the median of the longer (gateway) path grows more than the baseline's and median
ratios rose by up to 1.6x in trial runs with two CPU hogs (enough to fail the guard with no
change to the code). The fast tail of each path is the cost of the call itself without waits
for the CPU; in the same trial runs 10th-percentile ratios stayed within about 15% of each
other, idle or busy. A real regression adds work to every call and moves the 10th percentile as
much as the median. Why the lowest round: a burst of load during one round of one ratio cannot
fail the guard; a regression raises every round.

**The ratios.** Every baseline is a call of at least ~0.7 ms (fastmcp calls or a few-ms query),
never a sub-0.2 ms operation whose timing is mostly noise:

- ``memory_echo``: ``bench_echo`` through the full gateway (bench.trivial.create_bench_gateway)
  over ``echo`` on the trivial server alone, both with in-memory fastmcp clients: the gateway's
  per-call overhead (middleware, mounts, transforms) free of any I/O.
- ``http_echo_auto`` / ``http_echo_legacy``: the same two servers as processes on loopback
  ports (``python -m bench.trivial`` and ``... --direct``), fastmcp clients of both protocol
  eras (mode "auto" and "legacy"): the per-call overhead as HTTP clients see it.
- ``sql_aggregate_vs_duckdb``: ``sql_query`` of a few-millisecond aggregate (delays by carrier
  over 336,776 flights) through the in-memory gateway over the same query on raw DuckDB (a
  read-only connection to a copy of the database, a cursor per call, fetchall).
- ``sql_select42_vs_echo``: ``sql_query("SELECT 42")`` over ``bench_echo``, same in-memory
  gateway: the sql path's own cost (gate, engine, worker-thread hop, result shaping, output
  schema). Raw ``SELECT 42`` takes 0.1 ms, too little to be a baseline; both of these are
  fastmcp calls through one gateway, so the ratio is stable.
- ``pipeline_trivial_vs_echo``: ``pipelines_run_pipeline`` of a one-node dataflow
  (bench/bench_dataflow.py ``answer``, served as bench_pipelines.py does) over ``bench_echo``,
  same in-memory gateway, handshake-era client (a foreground run): the run path's own cost (the
  hop to the worker process, progress and log notifications, shaping). ``driver.execute`` of that
  node takes 0.05 ms, too little to be a baseline.
- ``proxy_hop``: ``demo_convert_units`` through the gateway process over ``convert_units`` on
  the demo backend process directly, both over loopback HTTP (2026-07-28 era client): the cost of
  the proxied call's extra hop.

fastmcp copies every log message a server sends a client into its own logger (stderr); the guard
turns that copy off in its own process, so the pipeline ratio times the gateway, not a terminal.
GATEWAY_* variables in the environment are ignored: the guard measures the default settings.

The whole run takes under a minute on an idle 2-core machine, process start-ups included, and
under two minutes with two CPU hogs beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack, ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import duckdb
from fastmcp import Client

from bench import trivial
from bench.common import ROOT, StartFailed, ignore_log, machine, serving
from servers.sample_data import ensure_sample_database
from servers.settings import GatewaySettings
from servers.sql.engine import lower_priority

BASELINE_FILE = ROOT / "bench" / "baseline.json"
THRESHOLD = 1.5  # a ratio more than this many times its baseline value fails the guard
ROUNDS = 3
QUANTILE = 0.1  # each path's 10th percentile, see the docstring
WARMUP = 20  # calls per path before the first round
RECORD_RUNS = 3  # --record keeps the median of this many runs, not one possibly lucky run
# Interleaved samples per path and round, for each ratio (its name, in report order).
RATIOS = {
    "memory_echo": 150,
    "http_echo_auto": 80,
    "http_echo_legacy": 80,
    "sql_aggregate_vs_duckdb": 60,
    "sql_select42_vs_echo": 80,
    "pipeline_trivial_vs_echo": 60,
    "proxy_hop": 80,
}
AGGREGATE = (
    "SELECT carrier, count(*), avg(dep_delay) FROM flights GROUP BY carrier ORDER BY carrier"
)
CONVERT = {"value": 100, "from_unit": "mi", "to_unit": "km"}
RUN_ANSWER = {"name": "bench", "inputs": {"x": 41}, "outputs": ["answer"]}

Call = Callable[[], Awaitable[object]]


@dataclass
class Pair:
    """One ratio: a gateway path over a baseline path, `samples` interleaved calls per round."""

    name: str
    gateway: Call
    baseline: Call

    @property
    def samples(self) -> int:
        return RATIOS[self.name]


# --- comparison (pure) -------------------------------------------------------------------------


def low_quantile(samples: list[float], quantile: float = QUANTILE) -> float:
    """The sample below which lie `quantile` of the samples (the fast tail, see the docstring)."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * quantile))]


def round_ratio(gateway_s: list[float], baseline_s: list[float]) -> float:
    """One round's ratio: the gateway samples' QUANTILE over the baseline samples'."""
    return low_quantile(gateway_s) / low_quantile(baseline_s)


def combine_rounds(round_ratios: list[float]) -> float:
    """The ratio a run reports: its lowest round (load bursts only ever raise one round)."""
    return min(round_ratios)


def median_ratios(runs: list[dict[str, float]]) -> dict[str, float]:
    """Each ratio's median over several runs (what --record writes)."""
    return {name: round(statistics.median(run[name] for run in runs), 4) for name in runs[0]}


def compare(
    measured: dict[str, float], baseline: dict[str, float], threshold: float = THRESHOLD
) -> list[dict]:
    """One row per ratio in either mapping, with a status:

    - ``ok``: within ``threshold`` times its baseline value;
    - ``regressed``: more than ``threshold`` times its baseline value (fatal);
    - ``new``: measured but not in the baseline (not fatal: re-record to guard it);
    - ``not measured``: in the baseline but not measured (fatal: the guard lost a ratio; if it
      was removed on purpose, re-record the baseline).
    """
    rows = []
    for name in [*measured, *(name for name in baseline if name not in measured)]:
        value, base = measured.get(name), baseline.get(name)
        row = {"ratio": name, "measured": value, "baseline": base, "factor": None}
        if value is None:
            row["status"] = "not measured"
        elif base is None:
            row["status"] = "new"
        else:
            row["factor"] = value / base
            row["status"] = "regressed" if value > threshold * base else "ok"
        rows.append(row)
    return rows


def failures(rows: list[dict], threshold: float = THRESHOLD) -> list[str]:
    """A sentence per fatal row, naming the ratio; empty when the guard passes."""
    messages = []
    for row in rows:
        if row["status"] == "regressed":
            messages.append(
                f"{row['ratio']}: {row['measured']:.3f} is {row['factor']:.2f}x its baseline "
                f"{row['baseline']:.3f} (limit {threshold}x)"
            )
        elif row["status"] == "not measured":
            messages.append(
                f"{row['ratio']}: in the baseline but not measured (if it was removed on "
                "purpose, re-record: uv run python -m bench.guard --record)"
            )
    return messages


def render(rows: list[dict], threshold: float = THRESHOLD) -> str:
    """The comparison as a readable table, then a verdict line."""

    def number(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    lines = [f"{'ratio':<28} {'measured':>9} {'baseline':>9} {'factor':>7}  status"]
    for row in rows:
        factor = "-" if row["factor"] is None else f"{row['factor']:.2f}x"
        status = row["status"]
        if status == "new":
            status += " (no baseline yet: not checked; record with --record)"
        lines.append(
            f"{row['ratio']:<28} {number(row['measured']):>9} {number(row['baseline']):>9} "
            f"{factor:>7}  {status}"
        )
    problems = failures(rows, threshold)
    if problems:
        lines.append(f"FAIL: {len(problems)} ratio(s) regressed or missing:")
        lines += [f"  {message}" for message in problems]
    else:
        lines.append(f"PASS: every ratio within {threshold}x its baseline")
    return "\n".join(lines)


# --- measurement -------------------------------------------------------------------------------


async def timed(call: Call) -> float:
    started = time.perf_counter()
    await call()
    return time.perf_counter() - started


async def interleaved(pair: Pair, n: int) -> tuple[list[float], list[float]]:
    """n samples of each path, alternating which goes first, so both see the same load."""
    gateway_s, baseline_s = [], []
    for i in range(n):
        if i % 2:
            baseline_s.append(await timed(pair.baseline))
            gateway_s.append(await timed(pair.gateway))
        else:
            gateway_s.append(await timed(pair.gateway))
            baseline_s.append(await timed(pair.baseline))
    return gateway_s, baseline_s


async def measure(pairs: list[Pair], rounds: int = ROUNDS) -> dict[str, dict]:
    """Warm every path up, then `rounds` rounds over every pair. Per ratio: its value, the
    per-round ratios, and each path's QUANTILE and median per round, in milliseconds."""
    for pair in pairs:
        await interleaved(pair, WARMUP)
    keys = ("rounds", "gateway_p10_ms", "baseline_p10_ms", "gateway_p50_ms", "baseline_p50_ms")
    results = {pair.name: {key: [] for key in keys} for pair in pairs}
    for _ in range(rounds):
        for pair in pairs:
            gateway_s, baseline_s = await interleaved(pair, pair.samples)
            result = results[pair.name]
            result["rounds"].append(round(round_ratio(gateway_s, baseline_s), 4))
            for path, samples in (("gateway", gateway_s), ("baseline", baseline_s)):
                result[f"{path}_p10_ms"].append(round(low_quantile(samples) * 1000, 3))
                result[f"{path}_p50_ms"].append(round(statistics.median(samples) * 1000, 3))
    for result in results.values():
        result["ratio"] = round(combine_rounds(result["rounds"]), 4)
    return results


def call(client: Client, tool: str, arguments: dict | None = None) -> Call:
    return lambda: client.call_tool(tool, arguments or {})


class RawDuckDB:
    """The raw DuckDB baseline, on the same footing as the gateway's engine: opened, and its
    queries run, in a thread at the engine's niceness (``sql.worker_nice``; DuckDB's own threads
    inherit it from the thread that opens the database), so a busy machine slows both alike and
    the ratio stays the gateway's overhead, not the scheduling policy."""

    def __init__(self, database: Path, nice: int) -> None:
        self.pool = ThreadPoolExecutor(1, initializer=lower_priority, initargs=(nice,))
        self.connection = self.pool.submit(duckdb.connect, str(database), read_only=True).result()

    def call(self, sql: str) -> Call:
        """A cursor per call, fetch everything."""

        def query() -> None:
            with self.connection.cursor() as cursor:
                cursor.execute(sql).fetchall()

        async def run() -> None:
            await asyncio.get_running_loop().run_in_executor(self.pool, query)

        return run

    def close(self) -> None:
        self.pool.submit(self.connection.close).result()
        self.pool.shutdown()


def start_processes(stack: ExitStack, data_dir: Path) -> dict[str, str]:
    """The demo backend, then the gateway with bench_echo (proxying the demo backend) and the
    trivial server alone, started side by side; their /mcp URLs."""
    demo = stack.enter_context(
        serving(["-m", "servers.demo_backend", "--transport", "http"], ready="/mcp")
    )
    env = {
        "GATEWAY_DATA_DIR": str(data_dir),
        "GATEWAY_MCPSERVERS": json.dumps({"demo": {"url": demo + "/mcp"}}),
    }
    starts = [["-m", "bench.trivial"], ["-m", "bench.trivial", "--direct"]]
    with ThreadPoolExecutor(len(starts)) as pool:
        gateway, direct = pool.map(lambda args: stack.enter_context(serving(args, env)), starts)
    return {"demo": demo + "/mcp", "gateway": gateway + "/mcp", "direct": direct + "/mcp"}


async def run_guard() -> dict:
    """Start the processes, build the in-memory servers, measure every ratio; the report."""
    started = time.perf_counter()
    for name in [name for name in os.environ if name.startswith("GATEWAY_")]:
        del os.environ[name]  # the default settings, whatever the caller's environment
    logging.getLogger("fastmcp.server.context.to_client").disabled = True
    with tempfile.TemporaryDirectory() as scratch, ExitStack() as processes:
        data_dir = Path(scratch)
        database = ensure_sample_database(data_dir)
        raw_copy = data_dir / "raw.duckdb"  # raw DuckDB opens its own copy
        shutil.copyfile(database, raw_copy)
        urls = start_processes(processes, data_dir)
        processes_s = time.perf_counter() - started
        settings = GatewaySettings.load(data_dir=data_dir, mcpServers={})
        gateway = trivial.create_bench_gateway(settings, bench_pipeline=True)
        raw = RawDuckDB(raw_copy, settings.sql.worker_nice)
        async with AsyncExitStack() as clients:

            async def client(target, **options) -> Client:
                return await clients.enter_async_context(Client(target, **options))

            memory = await client(gateway)
            legacy = await client(gateway, mode="legacy", log_handler=ignore_log)
            alone = await client(trivial.create_server())
            http_gateway = await client(urls["gateway"])
            http_direct = await client(urls["direct"])
            old_gateway = await client(urls["gateway"], mode="legacy")
            old_direct = await client(urls["direct"], mode="legacy")
            demo = await client(urls["demo"])
            select42 = {"sql": "SELECT 42"}
            pairs = [
                Pair("memory_echo", call(memory, "bench_echo"), call(alone, "echo")),
                Pair("http_echo_auto", call(http_gateway, "bench_echo"), call(http_direct, "echo")),
                Pair("http_echo_legacy", call(old_gateway, "bench_echo"), call(old_direct, "echo")),
                Pair(
                    "sql_aggregate_vs_duckdb",
                    call(memory, "sql_query", {"sql": AGGREGATE}),
                    raw.call(AGGREGATE),
                ),
                Pair(
                    "sql_select42_vs_echo",
                    call(memory, "sql_query", select42),
                    call(memory, "bench_echo"),
                ),
                Pair(
                    "pipeline_trivial_vs_echo",
                    call(legacy, "pipelines_run_pipeline", RUN_ANSWER),
                    call(legacy, "bench_echo"),
                ),
                Pair(
                    "proxy_hop",
                    call(http_gateway, "demo_convert_units", CONVERT),
                    call(demo, "convert_units", CONVERT),
                ),
            ]
            assert [pair.name for pair in pairs] == list(RATIOS)
            setup_s = time.perf_counter() - started
            results = await measure(pairs)
        raw.close()
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine() | {"load_average": [round(x, 2) for x in os.getloadavg()]},
        "method": f"{ROUNDS} rounds; per round the p{QUANTILE * 100:g} ratio of interleaved "
        "samples; a ratio is its lowest round",
        "processes_s": round(processes_s, 1),
        "setup_s": round(setup_s, 1),
        "wall_clock_s": round(time.perf_counter() - started, 1),
        "ratios": {name: result["ratio"] for name, result in results.items()},
        "details": results,
    }


# --- command line ------------------------------------------------------------------------------


def load_baseline(path: Path = BASELINE_FILE) -> dict[str, float]:
    """The baseline's ratios by name."""
    return json.loads(path.read_text())["ratios"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--record", action="store_true", help=f"write {BASELINE_FILE.name}")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument(
        "--baseline", type=Path, default=BASELINE_FILE, help="default: bench/baseline.json"
    )
    args = parser.parse_args(argv)
    if not args.record and not args.baseline.is_file():
        print(f"no baseline at {args.baseline}: record one with --record", file=sys.stderr)
        return 2
    if args.record:
        runs = [asyncio.run(run_guard()) for _ in range(RECORD_RUNS)]
        report = runs[-1] | {
            "ratios": median_ratios([run["ratios"] for run in runs]),
            "recorded_runs": [run["ratios"] for run in runs],
        }
        args.baseline.write_text(json.dumps(report, indent=2) + "\n")
        rows = compare(report["ratios"], report["ratios"])
    else:
        try:
            report = asyncio.run(run_guard())
        except StartFailed as exc:
            print(f"bench guard: nothing measured, a server did not start: {exc}", file=sys.stderr)
            return 3
        rows = compare(report["ratios"], load_baseline(args.baseline))
    report["comparison"] = rows
    report["failures"] = failures(rows)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(
            f"bench guard: {report['wall_clock_s']} s ({report['setup_s']} s of start-up), "
            f"load average {report['machine']['load_average']}"
        )
        print(render(rows))
        if args.record:
            print(f"recorded {args.baseline}")
    return 1 if report["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
