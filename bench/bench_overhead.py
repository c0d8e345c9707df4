"""Per-call overhead of the gateway: a trivial tool called on its own server vs through the gateway.

    uv run python -m bench.bench_overhead [--quick]

The tool is `echo` of bench/trivial.py. *Direct*: its own FastMCP server, alone. *Gateway*: the
same server mounted as `bench` in the real gateway (`create_bench_gateway`: every namespace,
middleware and transform; no remote backend), called as `bench_echo`. Two transports: an
in-memory fastmcp Client on a server built in this process, and loopback HTTP to a server
process (`python -m bench.trivial [--direct]`); both processes keep sessions
(GATEWAY_STATELESS_HTTP=false, read by both factories), so both protocol eras behave the same
way on either side. Both eras: fastmcp Client mode="auto" (2026-07-28) and mode="legacy"
(2025-11-25). Each call is timed with perf_counter around call_tool, result parsing included,
after a warm-up; the two paths of a comparison alternate round by round, so both see the same
machine load. Reports p50 and p99 per path, the gateway's added p50 and p99, and the p50 ratio.
Prints a JSON report (about 40 s; --quick: about 30 s).
"""

import argparse
import asyncio
import json
import os
import tempfile
import time
from pathlib import Path

from fastmcp import Client

from bench.common import machine, serving, summary
from bench.trivial import create_bench_gateway, create_server
from servers.sample_data import ensure_sample_database
from servers.settings import GatewaySettings

ERAS = {"2026-07-28 (mode auto)": "auto", "2025-11-25 (mode legacy)": "legacy"}
ARGUMENTS = {"text": "hello"}


async def timed(client: Client, tool: str, n: int) -> list[float]:
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        await client.call_tool(tool, ARGUMENTS)
        samples.append(time.perf_counter() - started)
    return samples


async def compare(direct_target, gateway_target, mode: str, rounds: int, n: int) -> dict:
    """Direct `echo` vs gateway `bench_echo`, alternating by round, one client each."""
    direct, gateway = [], []
    async with Client(direct_target, mode=mode) as d, Client(gateway_target, mode=mode) as g:
        await timed(d, "echo", 50)  # warm up: sessions, connections, code paths
        await timed(g, "bench_echo", 50)
        for _ in range(rounds):
            direct += await timed(d, "echo", n)
            gateway += await timed(g, "bench_echo", n)
    report = {"direct": summary(direct), "gateway": summary(gateway)}
    report["added_p50_ms"] = round(report["gateway"]["p50_ms"] - report["direct"]["p50_ms"], 3)
    report["added_p99_ms"] = round(report["gateway"]["p99_ms"] - report["direct"]["p99_ms"], 3)
    report["ratio_p50"] = round(report["gateway"]["p50_ms"] / report["direct"]["p50_ms"], 2)
    return report


async def run(quick: bool) -> dict:
    rounds, n = (6, 50) if quick else (10, 150)
    report = {
        "machine": machine() | {"load_average": os.getloadavg()},
        "method": f"{rounds} rounds x {n} calls per path after 50 warm-up calls, "
        "paths alternating by round; sessions kept on both HTTP servers",
    }
    with tempfile.TemporaryDirectory() as scratch:
        ensure_sample_database(Path(scratch))
        settings = GatewaySettings.load(data_dir=Path(scratch), mcpServers={})
        env = {
            "GATEWAY_DATA_DIR": scratch,
            "GATEWAY_MCPSERVERS": "{}",
            "GATEWAY_STATELESS_HTTP": "false",
        }
        direct_server, gateway = create_server(), create_bench_gateway(settings)
        for era, mode in ERAS.items():
            report[f"in-memory, {era}"] = await compare(direct_server, gateway, mode, rounds, n)
        with (
            serving(["-m", "bench.trivial", "--direct"], env, ready="/mcp") as direct_base,
            serving(["-m", "bench.trivial"], env) as gateway_base,
        ):
            for era, mode in ERAS.items():
                report[f"HTTP, {era}"] = await compare(
                    direct_base + "/mcp", gateway_base + "/mcp", mode, rounds, n
                )
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="6 x 50 calls per path, not 10 x 150")
    report = asyncio.run(run(parser.parse_args().quick))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
