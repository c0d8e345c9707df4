"""Big results: time to the first page and the gateway's memory for 1M- and 10M-row results.

    uv run python -m bench.bench_results [--quick]

A real gateway process (`gateway.py`, no remote backend) on a loopback port, one per run, so
the memory measured is the gateway's own and starts from the same state. A 2026-07-28 fastmcp
client over HTTP runs `sql_query` on a generated result of N rows (three columns: two integers
and a short string) and times, with perf_counter:

- first page: the sql_query call, until its first page (500 rows) and the handle are back;
- last page: from then until `sql_read_result` returns the last 500 rows (the rest of the
  result streams from DuckDB into Arrow chunk files in the background; the read waits for it).

Memory of the gateway process, from /proc/<pid>/status: VmRSS before the query (after a
warm-up that stores a 100,000-row result), the peak during the query and the paging (VmHWM,
reset just before the query, cross-checked by sampling VmRSS every 10 ms) and VmRSS after.
Targets: first page < 1 s, memory growth < 200 MB for 10M rows. Prints a JSON report
(about a minute; --quick: one run per size instead of three, about 20 s).
"""

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

from fastmcp import Client

from bench.common import machine, reset_peak_rss, rss_mb, server_process
from servers.sample_data import ensure_sample_database

SIZES = {"1M rows": 1_000_000, "10M rows": 10_000_000}
PAGE = 500


def rows_sql(n: int) -> str:
    return f"SELECT range AS id, range * 2 AS twice, 'row ' || range AS label FROM range({n})"


class PeakSampler:
    """Samples a process's VmRSS every 10 ms in a thread; `peak_mb` is the largest seen."""

    def __init__(self, pid: int):
        self.pid, self.peak_mb = pid, rss_mb(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            self.peak_mb = max(self.peak_mb, rss_mb(self.pid))

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


async def one_run(url: str, pid: int, n: int) -> dict:
    async with Client(url) as client:
        # Warm up: code paths, a stored result (the store's thread, Arrow IPC), paging.
        warm = await client.call_tool("sql_query", {"sql": rows_sql(100_000)})
        await client.call_tool(
            "sql_read_result",
            {"result_id": warm.structured_content["result"]["id"], "offset": 100_000 - PAGE},
        )
        before = rss_mb(pid)
        reset_peak_rss(pid)
        with PeakSampler(pid) as sampler:
            started = time.perf_counter()
            page = await client.call_tool("sql_query", {"sql": rows_sql(n)})
            first_page_s = time.perf_counter() - started
            handle = page.structured_content["result"]
            last = await client.call_tool(
                "sql_read_result", {"result_id": handle["id"], "offset": n - PAGE}
            )
            last_page_s = time.perf_counter() - started - first_page_s
        peak = max(rss_mb(pid, "VmHWM"), sampler.peak_mb)
        after = rss_mb(pid)
    last_page = last.structured_content
    return {
        "first_page_s": round(first_page_s, 3),
        "first_page_rows": page.structured_content["row_count"],
        "last_page_after_s": round(last_page_s, 3),
        "last_row_id": last_page["rows"][-1][0],
        "rows_stored": last_page["rows_stored"],
        "rss_before_mb": round(before, 1),
        "rss_peak_mb": round(peak, 1),
        "rss_peak_sampled_mb": round(sampler.peak_mb, 1),
        "rss_after_mb": round(after, 1),
        "rss_growth_mb": round(peak - before, 1),
    }


async def run(quick: bool) -> dict:
    repeats = 1 if quick else 3
    report = {
        "machine": machine() | {"load_average": os.getloadavg()},
        "method": f"{repeats} run(s) per size, each in a fresh gateway process",
    }
    with tempfile.TemporaryDirectory() as scratch:
        ensure_sample_database(Path(scratch))
        env = {"GATEWAY_DATA_DIR": scratch, "GATEWAY_MCPSERVERS": "{}"}
        for label, n in SIZES.items():
            runs = []
            for _ in range(repeats):
                with server_process(["gateway.py"], env) as served:
                    runs.append(await one_run(served.base + "/mcp", served.pid, n))
            row = {
                key: statistics.median(r[key] for r in runs)
                for key in ("first_page_s", "last_page_after_s", "rss_growth_mb")
            }
            row["first_page_target_met (< 1 s)"] = row["first_page_s"] < 1
            if n == 10_000_000:
                row["memory_target_met (< 200 MB)"] = row["rss_growth_mb"] < 200
            report[label] = {"median": row, "runs": runs}
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one run per size, not three")
    report = asyncio.run(run(parser.parse_args().quick))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
