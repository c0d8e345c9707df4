"""Throughput over HTTP with one and with two worker processes, and the gateway's memory.

    uv run python -m bench.bench_throughput [--quick] [--seconds 5]   (needs wrk: apt install wrk)

wrk, a load generator written in C (so it takes little of the CPU the servers need), replays one
stateless `tools/call` at concurrency 1, 8 and 32 for `--seconds` after a warm-up, against:
- the gateway with the trivial tool mounted (`bench_echo`, bench/trivial.py): the target path;
- the trivial server alone (`echo`, fastmcp with nothing else): the limit of the stack;
- the gateway's `sql_query("SELECT 42")`: a real tool.
Each is started with `--workers 1` and `--workers 2` (stateless HTTP, uvloop and httptools as
the gateway serves). Errors are non-2xx answers, socket errors, and answers that are not a
successful tool result (checked in every response body). Memory: the resident size of a real
gateway process (`gateway.py`) when idle, after a first 2025-11-25 session, and its growth per
further open session. Prints JSON.
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

from bench.common import machine, rss_mb, server_process
from servers.sample_data import ensure_sample_database

PATHS = {
    "gateway bench_echo": (["-m", "bench.trivial"], "bench_echo", {"text": "hi"}),
    "fastmcp alone, echo": (["-m", "bench.trivial", "--direct"], "echo", {"text": "hi"}),
    "gateway sql_query": (["-m", "bench.trivial"], "sql_query", {"sql": "SELECT 42"}),
}
SCRIPT = """
wrk.method = "POST"
wrk.body = '{body}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json, text/event-stream"
wrk.headers["MCP-Protocol-Version"] = "2025-11-25"
local threads = {{}}
function setup(thread) table.insert(threads, thread) end
function init(args) bad = 0 end
function response(status, headers, body)
  if status ~= 200 or not string.find(body, '"isError":false', 1, true) then bad = bad + 1 end
end
function done(summary, latency, requests)
  local total = 0
  for _, t in ipairs(threads) do total = total + t:get("bad") end
  io.write(string.format("NOT_A_RESULT %d\\n", total))
end
"""


def wrk_script(folder: Path, tool: str, arguments: dict) -> Path:
    call = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": tool, "arguments": arguments},
    }
    script = folder / f"{tool}.lua"
    script.write_text(SCRIPT.format(body=json.dumps(call)))
    return script


def run_wrk(url: str, connections: int, seconds: float, script: Path) -> dict:
    threads = str(min(connections, 2))
    out = subprocess.run(
        ["wrk", "-t", threads, "-c", str(connections), "-d", f"{seconds}s", "--latency"]
        + ["-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    errors = int(re.search(r"NOT_A_RESULT (\d+)", out).group(1))
    errors += sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    p50 = re.search(r"50%\s+([\d.]+)(\w+)", out)
    p99 = re.search(r"99%\s+([\d.]+)(\w+)", out)
    return {
        "calls_per_s": rate,
        "errors": errors,
        "p50": "".join(p50.groups()),
        "p99": "".join(p99.groups()),
    }


def process_tree_rss(pid: int) -> float:
    """Resident MB of a process and its children (uvicorn's workers, pipeline workers)."""
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return rss_mb(pid) + sum(process_tree_rss(int(child)) for child in children.split())


async def sessions_memory(env: dict, sessions: int) -> dict:
    """Idle RSS, then the growth per session over `sessions` sessions opened after a first one
    (which pays one-time costs: lazy imports, the tool listing's schemas, allocator arenas)."""
    with server_process(["gateway.py"], env) as served:
        url = served.base + "/mcp"
        idle = process_tree_rss(served.pid)
        clients = [Client(url, mode="legacy") for _ in range(sessions + 1)]
        for index, client in enumerate(clients):
            await client.__aenter__()
            await client.call_tool("sql_query", {"sql": "SELECT 1"})
            if index == 0:
                warm = process_tree_rss(served.pid)
        after = process_tree_rss(served.pid)
        for client in clients:
            await client.__aexit__(None, None, None)
    return {
        "idle_rss_mb": round(idle, 1),
        "after_first_session_mb": round(warm, 1),
        "sessions": sessions,
        "per_further_session_kb": round((after - warm) * 1024 / sessions, 1),
    }


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="2 s per measurement")
    parser.add_argument("--seconds", type=float, default=5)
    args = parser.parse_args()
    seconds = 2 if args.quick else args.seconds
    if shutil.which("wrk") is None:
        raise SystemExit("this benchmark needs wrk: apt-get install wrk")
    report = {"machine": machine(), "seconds_per_measurement": seconds, "throughput": {}}
    with tempfile.TemporaryDirectory() as scratch:
        ensure_sample_database(Path(scratch))
        env = {"GATEWAY_DATA_DIR": scratch, "GATEWAY_MCPSERVERS": "{}"}
        for workers in (1, 2):
            for name, (command, tool, arguments) in PATHS.items():
                script = wrk_script(Path(scratch), tool, arguments)
                stateless = {**env, "GATEWAY_STATELESS_HTTP": "true"}
                ready = "/mcp" if "--direct" in command else "/health"
                with server_process(
                    [*command, "--workers", str(workers)], stateless, ready
                ) as served:
                    url = served.base + "/mcp"
                    run_wrk(url, 8, 2, script)  # warm up every worker
                    report["throughput"][f"{name}, {workers} worker(s)"] = {
                        f"concurrency {c}": run_wrk(url, c, seconds, script) for c in (1, 8, 32)
                    }
        report["memory"] = await sessions_memory(env, 50)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
