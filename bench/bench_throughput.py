"""Throughput of the gateway over HTTP, and its memory, with one and with two worker processes.

    uv run python -m bench.bench_throughput [--seconds 10]      (needs wrk: apt-get install wrk)

wrk, a load generator written in C (so it takes little of the CPU the gateway needs), replays one
stateless `tools/call` of `sql_query("SELECT 42")` at concurrency 1, 8 and 32 against a real
gateway process started with `--workers 1` and `--workers 2` (stateless HTTP). Errors are
non-2xx answers and socket errors. Memory: the resident size of the gateway's processes when
idle, and the growth per open 2025-11-25 session (one worker, sessions kept open). Prints JSON.
"""

import argparse
import asyncio
import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from fastmcp import Client

from bench.common import gateway_process, machine, rss_mb
from servers.sample_data import ensure_sample_database

CALL = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "tools/call",
    "params": {"name": "sql_query", "arguments": {"sql": "SELECT 42"}},
}
SCRIPT = """
wrk.method = "POST"
wrk.body = '{body}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json, text/event-stream"
wrk.headers["MCP-Protocol-Version"] = "2025-11-25"
"""


def run_wrk(url: str, connections: int, seconds: int, script: Path) -> dict:
    out = subprocess.run(
        [
            "wrk",
            "-t",
            str(min(connections, 2)),
            "-c",
            str(connections),
            "-d",
            f"{seconds}s",
            "--latency",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    errors = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses:\s+(\d+)", out))
    errors += sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    p50 = re.search(r"50%\s+([\d.]+)(\w+)", out)
    p99 = re.search(r"99%\s+([\d.]+)(\w+)", out)
    return {
        "calls_per_s": rate,
        "errors": errors,
        "p50": "".join(p50.groups()),
        "p99": "".join(p99.groups()),
    }


def gateway_rss(pid_of_url: str) -> float:
    """Resident MB of every gateway process listening for this URL (the parent and its workers)."""
    port = pid_of_url.rsplit(":", 1)[1].split("/")[0]
    pids = subprocess.run(
        ["pgrep", "-f", f"gateway.py --port {port}"], capture_output=True, text=True
    ).stdout.split()
    total = 0.0
    for pid in pids:
        total += rss_mb(int(pid))
        children = subprocess.run(["pgrep", "-P", pid], capture_output=True, text=True).stdout
        total += sum(rss_mb(int(child)) for child in children.split())
    return round(total, 1)


async def sessions_memory(url: str, sessions: int) -> dict:
    before = gateway_rss(url)
    clients = [Client(url, mode="legacy") for _ in range(sessions)]
    for client in clients:
        await client.__aenter__()
        await client.call_tool("sql_query", {"sql": "SELECT 1"})
    after = gateway_rss(url)
    for client in clients:
        await client.__aexit__(None, None, None)
    return {
        "idle_rss_mb": before,
        "sessions": sessions,
        "per_session_kb": round((after - before) * 1024 / sessions, 1),
    }


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("this benchmark needs wrk: apt-get install wrk")
    report = {"machine": machine(), "throughput": {}}
    with tempfile.TemporaryDirectory() as scratch:
        ensure_sample_database(Path(scratch))
        script = Path(scratch) / "call.lua"
        script.write_text(SCRIPT.format(body=json.dumps(CALL)))
        env = {
            "GATEWAY_DATA_DIR": scratch,
            "GATEWAY_MCPSERVERS": "{}",
            "GATEWAY_STATELESS_HTTP": "true",
        }
        for workers in (1, 2):
            with gateway_process(env, ["--workers", str(workers)]) as url:
                run_wrk(url, 8, 2, script)  # warm up every worker
                report["throughput"][f"{workers} worker(s)"] = {
                    f"concurrency {c}": run_wrk(url, c, args.seconds, script) for c in (1, 8, 32)
                }
        with gateway_process({**env, "GATEWAY_STATELESS_HTTP": "false"}) as url:
            report["memory"] = await sessions_memory(url, 20)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
