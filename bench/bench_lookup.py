"""What servers/lookup.py saves: a tool looked up provider by provider vs fastmcp's task group.

    uv run python -m bench.bench_lookup [--quick]

An in-process A/B on the real gateway with bench/trivial.py's `echo` mounted (`bench_echo`, no
remote backend), through an in-memory fastmcp Client in each protocol era. *Sequential*: the
servers as they are (`lookup.SequentialLookup._get_tool`). *Task group*: the same servers with
that method swapped for fastmcp's own (`AggregateProvider._get_tool`, a task group per lookup).
The two alternate round by round on the same clients, so both see the same machine load. Each
call is timed with perf_counter around call_tool, after a warm-up. Prints p50 and p99 per path
and the p50 the task group adds (about 30 s; --quick: about 15 s).
"""

import argparse
import asyncio
import json
import os
import tempfile
import time
from pathlib import Path

from fastmcp import Client
from fastmcp.server.providers.aggregate import AggregateProvider

from bench.common import machine, summary
from bench.trivial import create_bench_gateway
from servers.lookup import SequentialLookup
from servers.sample_data import ensure_sample_database
from servers.settings import GatewaySettings

ERAS = {"2026-07-28 (mode auto)": "auto", "2025-11-25 (mode legacy)": "legacy"}
SEQUENTIAL = SequentialLookup._get_tool


def look_up(sequential: bool) -> None:
    SequentialLookup._get_tool = SEQUENTIAL if sequential else AggregateProvider._get_tool


async def timed(client: Client, n: int) -> list[float]:
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        await client.call_tool("bench_echo", {"text": "hello"})
        samples.append(time.perf_counter() - started)
    return samples


async def compare(gateway, mode: str, rounds: int, n: int) -> dict:
    paths: dict[str, list[float]] = {"sequential": [], "task group": []}
    async with Client(gateway, mode=mode) as client:
        await timed(client, 50)  # warm up
        try:
            for _ in range(rounds):
                for name in paths:
                    look_up(name == "sequential")
                    paths[name] += await timed(client, n)
        finally:
            look_up(True)
    report = {name: summary(samples) for name, samples in paths.items()}
    added = report["task group"]["p50_ms"] - report["sequential"]["p50_ms"]
    report["task_group_adds_p50_ms"] = round(added, 3)
    return report


async def run(quick: bool) -> dict:
    rounds, n = (6, 100) if quick else (10, 200)
    report = {
        "machine": machine() | {"load_average": os.getloadavg()},
        "method": f"{rounds} rounds x {n} calls per path after 50 warm-up calls, in memory, "
        "paths alternating by round on one client",
    }
    with tempfile.TemporaryDirectory() as scratch:
        ensure_sample_database(Path(scratch))
        settings = GatewaySettings.load(data_dir=Path(scratch), mcpServers={})
        gateway = create_bench_gateway(settings)
        for era, mode in ERAS.items():
            report[era] = await compare(gateway, mode, rounds, n)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="6 x 100 calls per path")
    print(json.dumps(asyncio.run(run(parser.parse_args().quick)), indent=2))


if __name__ == "__main__":
    main()
