"""Run every benchmark, one after another, and collect their reports in one JSON file.

    uv run python -m bench [--quick]

Each benchmark module runs in a subprocess of its own (`python -m bench.<name> [--quick]`, so
none inherits another's state), prints its JSON report on stdout, and is timed. The combined
report (machine, each module's status, wall-clock time and report) is written to
bench/results/<date>.json (<date>-quick.json with --quick), and one summary line per module is
printed. bench_throughput is skipped, saying so, when `wrk` is not installed. A module that
fails is reported with the end of its stderr, and the others still run. The full run takes
about 10 minutes (--quick: about 5), plus building the TPC-H database the first time, plus
bench_startup's 4-7 minutes (it makes its peers' venvs under data/bench-peers the first time).
"""

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import time

from bench.common import ROOT, machine

BENCH = ROOT / "bench"
MODULES = (
    "bench_overhead",
    "bench_sql",
    "bench_pipelines",
    "bench_backends",
    "bench_isolation",
    "bench_results",
    "bench_throughput",
    "bench_tpch",
    "bench_startup",
)


def skip_reason(name: str) -> str | None:
    if name == "bench_throughput" and shutil.which("wrk") is None:
        return "needs wrk, a C load generator (apt-get install wrk)"
    return None


def run_module(name: str, quick: bool) -> dict:
    """Run one benchmark module; its status, arguments, wall-clock time and JSON report."""
    reason = skip_reason(name)
    if reason:
        return {"status": "skipped", "reason": reason}
    args = ["--quick"] if quick else []
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", f"bench.{name}", *args], cwd=ROOT, capture_output=True, text=True
    )
    entry = {"args": args, "wall_clock_s": round(time.monotonic() - started, 1)}
    try:
        report = json.loads(done.stdout)
    except json.JSONDecodeError:
        report = None
    if done.returncode != 0 or report is None:
        problem = f"exit code {done.returncode}" if done.returncode else "stdout is not JSON"
        return entry | {
            "status": "failed",
            "reason": problem,
            "stdout_start": done.stdout[:2000],
            "stderr_end": done.stderr[-4000:],
        }
    return entry | {"status": "ok", "report": report}


def headline(name: str, report: dict) -> str:
    """A few key figures of a module's report, for the summary line."""
    if name == "bench_overhead":
        return "; ".join(
            f"{path}: +{row['added_p50_ms']} ms p50, {row['added_p99_ms']:+} ms p99"
            for path, row in report.items()
            if isinstance(row, dict) and "added_p50_ms" in row
        )
    if name == "bench_isolation":
        return "; ".join(
            f"{tool} p99 x{row['both loads']['p99_ratio']} under load"
            for tool, row in report.items()
            if isinstance(row, dict) and "p99_ratio" in row.get("both loads", {})
        )
    if name == "bench_results":
        return "; ".join(
            f"{size}: first page {row['median']['first_page_s']} s, "
            f"+{row['median']['rss_growth_mb']} MB"
            for size, row in report.items()
            if isinstance(row, dict) and "median" in row
        )
    if name == "bench_startup":
        return (
            f"stdio complete list x{report['stdio']['ratio_complete_list']}, "
            f"HTTP ready x{report['http']['ratio_ready']}, "
            f"idle RSS x{report['memory']['ratio_idle_vs_motherduck']} motherduck's"
        )
    return ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="every benchmark's short run")
    quick = parser.parse_args().quick
    started_at = dt.datetime.now().astimezone()
    started = time.monotonic()
    combined = {
        "started": started_at.isoformat(timespec="seconds"),
        "quick": quick,
        "machine": machine() | {"load_average_at_start": os.getloadavg()},
        "benchmarks": {},
    }
    for name in MODULES:
        print(f"{name} ...", flush=True)
        entry = run_module(name, quick)
        combined["benchmarks"][name] = entry
        line = f"  {entry['status']}"
        if "wall_clock_s" in entry:
            line += f" in {entry['wall_clock_s']} s"
        if entry["status"] == "ok":
            try:
                figures = headline(name, entry["report"])
            except (KeyError, TypeError):
                figures = ""
            line += f": {figures}" if figures else ""
        else:
            line += f": {entry['reason']}"
        print(line, flush=True)
    combined["wall_clock_s"] = round(time.monotonic() - started, 1)
    results = BENCH / "results"
    results.mkdir(exist_ok=True)
    path = results / f"{started_at:%Y-%m-%d}{'-quick' if quick else ''}.json"
    path.write_text(json.dumps(combined, indent=2) + "\n")
    print(f"all benchmarks in {combined['wall_clock_s']} s; report: {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
