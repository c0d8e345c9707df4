"""Start-up: how long until a client can use the gateway, and what the idle gateway holds.

    uv run python -m bench.bench_startup [--quick]

*stdio*: the time from spawning `python gateway.py --transport stdio` (what a desktop client
does; `uv run` adds its own start-up on top, the same for any server) to `initialize` done, to
the first `tools/list`, and to the first *complete* `tools/list` (sql, pipelines, admin and the
demo backend's tools; listed again every 0.1 s until complete), against a one-tool fastmcp
server started the same way (`python -m bench.bench_startup --serve-one-tool`). *HTTP*: process
start to the first 200 from `/ready`, and to `/ready` reporting every backend up, against the
one-tool server's first answer. Runs of the gateway and its baseline alternate, round by
round, so both see the same machine load; medians over the rounds. *Import*: `import gateway`
alone, and import plus `create_gateway` (the whole composition, before serving), against
`import fastmcp`, each in a fresh interpreter. *Memory*: resident memory (VmRSS) of the
gateway process started over stdio, idle after its first complete listing, and again after one
`SELECT` through its query tool, against MotherDuck's `mcp-server-motherduck` and
`mcp-server-duckdb` serving the same DuckDB file (each installed from PyPI into a venv of its
own, data/bench-peers/<name>, made on first use; they bundle an older DuckDB, so the file is a
copy of the sample database in DuckDB's v1.4 storage format, served by all three). Prints a JSON
report (about 4 minutes; --quick: about 2).
"""

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from fastmcp import Client
from fastmcp.client.transports import StdioTransport

from bench.common import ROOT, free_port, ignore_log, machine, rss_mb

PEERS_VENV = ROOT / "data" / "bench-peers"
PEERS = {"mcp-server-motherduck": [], "mcp-server-duckdb": ["mcp<2"]}  # with constraints
GATEWAY_NAMESPACES = {"sql", "pipelines", "demo"}  # admin is listed to admin tokens only
BUDGET_S = 180.0  # longest any one start may take before the run is reported as failed


def serve_one_tool(http_port: int | None) -> None:
    """The baseline: a fastmcp server with one tool (and /ready over HTTP), nothing else."""
    from fastmcp import FastMCP
    from starlette.responses import JSONResponse

    server = FastMCP("one-tool")

    @server.tool
    def echo(text: str = "") -> str:
        """Return the text unchanged."""
        return text

    @server.custom_route("/ready", methods=["GET"])
    async def ready(request):
        return JSONResponse({"status": "ready"})

    if http_port is None:
        server.run(transport="stdio", show_banner=False)
    else:
        server.run(transport="http", host="127.0.0.1", port=http_port, show_banner=False)


def median(values: list[float]) -> float:
    return round(statistics.median(values), 3)


# -- stdio ------------------------------------------------------------------------------------


def gateway_args() -> list[str]:
    return ["gateway.py", "--transport", "stdio"]


def one_tool_args() -> list[str]:
    return ["-m", "bench.bench_startup", "--serve-one-tool"]


def complete(names: set[str], expected: set[str]) -> bool:
    return expected <= {name.split("_", 1)[0] for name in names}


async def stdio_start(args: list[str], env: dict, expected: set[str], log: Path) -> dict:
    """Spawn to initialize, to the first listing, to the first complete listing."""
    transport = StdioTransport(
        command=sys.executable, args=args, env=env, cwd=str(ROOT), log_file=log
    )
    started = time.perf_counter()
    async with Client(transport, init_timeout=BUDGET_S, log_handler=ignore_log) as client:
        initialized = time.perf_counter() - started
        names = {t.name for t in await client.list_tools()}
        first = time.perf_counter() - started
        first_complete = complete(names, expected)
        while not complete(names, expected):
            if time.perf_counter() - started > BUDGET_S:
                raise TimeoutError(f"listing still lacks {expected} after {BUDGET_S} s")
            await asyncio.sleep(0.1)
            names = {t.name for t in await client.list_tools()}
        return {
            "initialize_s": initialized,
            "first_list_s": first,
            "complete_list_s": time.perf_counter() - started,
            "first_list_complete": first_complete,
            "tools": len(names),
        }


async def stdio_rounds(rounds: int, env: dict, log: Path) -> dict:
    runs: dict[str, list[dict]] = {"gateway": [], "one_tool": []}
    for index in range(rounds):
        order = [
            ("gateway", gateway_args(), GATEWAY_NAMESPACES),
            ("one_tool", one_tool_args(), {"echo"}),
        ]
        for name, args, expected in order if index % 2 == 0 else order[::-1]:
            runs[name].append(await stdio_start(args, env, expected, log))
    report = {name: medians(samples) for name, samples in runs.items()}
    report["ratio_complete_list"] = round(
        report["gateway"]["complete_list_s"] / report["one_tool"]["complete_list_s"], 2
    )
    return report


def medians(samples: list[dict]) -> dict:
    keys = [k for k in samples[0] if k.endswith("_s")]
    summary = {key: median([s[key] for s in samples]) for key in keys}
    summary["runs"] = len(samples)
    summary["first_list_complete_in"] = (
        f"{sum(s['first_list_complete'] for s in samples)}/{len(samples)}"
    )
    summary["tools"] = samples[-1]["tools"]
    summary["complete_list_each_s"] = [round(s["complete_list_s"], 2) for s in samples]
    return summary


# -- HTTP -------------------------------------------------------------------------------------


def http_start(args: list[str], env: dict, log: Path, backends: bool) -> dict:
    """Process start to the first 200 from /ready; with backends, to every backend up."""
    port = free_port()
    started = time.perf_counter()
    with open(log, "a") as sink:
        process = subprocess.Popen(
            [sys.executable, *args, "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=sink,
        )
    url = f"http://127.0.0.1:{port}/ready"
    result: dict = {}
    try:
        while time.perf_counter() - started < BUDGET_S:
            if process.poll() is not None:
                raise RuntimeError(f"{args} exited with {process.returncode}; see {log}")
            try:
                answer = httpx.get(url, timeout=5)
            except httpx.HTTPError:
                time.sleep(0.05)
                continue
            if answer.status_code == 200:
                result.setdefault("ready_s", time.perf_counter() - started)
                if not backends or answer.json().get("status") == "ready":
                    result["all_up_s"] = time.perf_counter() - started
                    return result
            time.sleep(0.05)
        raise TimeoutError(f"{url} not ready within {BUDGET_S} s")
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def http_rounds(rounds: int, env: dict, log: Path) -> dict:
    runs: dict[str, list[dict]] = {"gateway": [], "one_tool": []}
    for index in range(rounds):
        order = [
            ("gateway", ["gateway.py"], True),
            ("one_tool", one_tool_args() + ["--http"], False),
        ]
        for name, args, backends in order if index % 2 == 0 else order[::-1]:
            runs[name].append(http_start(args, env, log, backends))
    report = {
        name: {key: median([r[key] for r in samples]) for key in samples[0]}
        | {"runs": len(samples)}
        for name, samples in runs.items()
    }
    report["ratio_ready"] = round(report["gateway"]["ready_s"] / report["one_tool"]["ready_s"], 2)
    return report


# -- import -----------------------------------------------------------------------------------

IMPORTS = {
    "import fastmcp": "import fastmcp",
    "import gateway": "import gateway",
    "import gateway + create_gateway": (
        "import gateway; from servers.settings import GatewaySettings; "
        "gateway.create_gateway(GatewaySettings.load())"
    ),
}


def timed_import(code: str, env: dict) -> float:
    program = f"import time; t = time.perf_counter(); {code}; print(time.perf_counter() - t)"
    done = subprocess.run(
        [sys.executable, "-c", program], cwd=ROOT, env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    return float(done.stdout.strip().splitlines()[-1])


def import_rounds(rounds: int, env: dict) -> dict:
    samples: dict[str, list[float]] = {name: [] for name in IMPORTS}
    for _ in range(rounds):
        for name, code in IMPORTS.items():
            samples[name].append(timed_import(code, env))
    return {
        name: {"median_s": median(values), "runs": len(values)} for name, values in samples.items()
    }


# -- memory -----------------------------------------------------------------------------------


def peer_command(package: str) -> str:
    """A peer's command from its own venv under data/bench-peers (never the project's .venv),
    made on first use. mcp-server-duckdb 1.1.0 needs the mcp SDK before 2.0."""
    venv = PEERS_VENV / package
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run(["uv", "venv", "-q", str(venv)], check=True)
        subprocess.run(
            ["uv", "pip", "install", "-q", "--python", str(python), package, *PEERS[package]],
            check=True,
        )
    return str(venv / "bin" / package)


def compatible_copy(database: Path, target: Path) -> Path:
    """The database in DuckDB's v1.4 storage format, which the peers' older DuckDB reads."""
    import duckdb

    if not target.exists():
        connection = duckdb.connect()
        connection.execute(f"ATTACH '{database}' AS source (READ_ONLY)")
        connection.execute(f"ATTACH '{target}' AS target (STORAGE_VERSION 'v1.4.0')")
        connection.execute("COPY FROM DATABASE source TO target")
        connection.close()
    return target


def children_matching(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ValueError):
            continue
        if parent == os.getpid() and marker in cmdline:
            found.append(int(entry.name))
    return found


def descendants_rss_mb(pid: int) -> float:
    total = 0.0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                if parent == pid:
                    total += rss_mb(int(entry.name)) + descendants_rss_mb(int(entry.name))
            except (OSError, ValueError, StopIteration):
                continue
    return total


async def idle_memory(
    command: str, args: list[str], env: dict, marker: str, expected: set[str]
) -> dict:
    """RSS once idle after the first complete listing, and after one SELECT."""
    transport = StdioTransport(command=command, args=args, env=env, cwd=str(ROOT))
    async with Client(transport, init_timeout=BUDGET_S, log_handler=ignore_log) as client:
        started = time.perf_counter()
        tools = await client.list_tools()
        while not complete({t.name for t in tools}, expected):
            if time.perf_counter() - started > BUDGET_S:
                raise TimeoutError(f"{marker}: listing incomplete after {BUDGET_S} s")
            await asyncio.sleep(0.2)
            tools = await client.list_tools()
        await asyncio.sleep(5)  # idle: background start-up work (validation, catalogs) done
        (pid,) = children_matching(marker)
        idle = rss_mb(pid)
        idle_children = descendants_rss_mb(pid)
        await run_select(client, tools)
        await asyncio.sleep(1)
        return {
            "idle_rss_mb": idle,
            "idle_children_rss_mb": idle_children,
            "after_select_rss_mb": rss_mb(pid),
        }


async def run_select(client: Client, tools) -> None:
    """One small SELECT through the server's query tool (its one required string argument)."""
    for tool in tools:
        if tool.name not in ("sql_query", "query", "execute_query"):
            continue
        required = tool.inputSchema.get("required", [])
        argument = required[0] if required else "sql"
        await client.call_tool(tool.name, {argument: "SELECT count(*) FROM flights"})
        return
    raise RuntimeError(f"no query tool among {[t.name for t in tools]}")


async def memory_rounds(rounds: int, env: dict, database: Path) -> dict:
    servers = {
        "gateway": (sys.executable, gateway_args(), "gateway.py", GATEWAY_NAMESPACES),
        "mcp-server-motherduck": (
            peer_command("mcp-server-motherduck"),
            ["--db-path", str(database)],
            "mcp-server-motherduck",
            set(),
        ),
        "mcp-server-duckdb": (
            peer_command("mcp-server-duckdb"),
            ["--db-path", str(database), "--readonly"],
            "mcp-server-duckdb",
            set(),
        ),
    }
    samples: dict[str, list[dict]] = {name: [] for name in servers}
    for _ in range(rounds):
        for name, (command, args, marker, expected) in servers.items():
            samples[name].append(await idle_memory(command, args, env, marker, expected))
    report = {
        name: {key: round(median([r[key] for r in runs]), 1) for key in runs[0]}
        | {"runs": len(runs)}
        for name, runs in samples.items()
    }
    motherduck = report["mcp-server-motherduck"]
    report["ratio_idle_vs_motherduck"] = round(
        report["gateway"]["idle_rss_mb"] / motherduck["idle_rss_mb"], 2
    )
    report["ratio_after_select_vs_motherduck"] = round(
        report["gateway"]["after_select_rss_mb"] / motherduck["after_select_rss_mb"], 2
    )
    return report


# -- main -------------------------------------------------------------------------------------


async def measure(rounds: int) -> dict:
    from servers.sample_data import ensure_sample_database

    with tempfile.TemporaryDirectory() as scratch:
        data_dir = Path(scratch)
        sample = ensure_sample_database(data_dir)
        database = compatible_copy(Path(sample), data_dir / "nycflights13-v1.4.duckdb")
        env = {
            **os.environ,
            "GATEWAY_DATA_DIR": str(data_dir),
            "GATEWAY_SQL__DATABASE": str(database),
        }
        log = data_dir / "servers.log"
        report = {
            "machine": machine() | {"load_average_at_start": os.getloadavg()},
            "rounds": rounds,
            "stdio": await stdio_rounds(rounds, env, log),
            "http": http_rounds(rounds, env, log),
            "import": import_rounds(rounds, env),
            "memory": await memory_rounds(rounds, env, database),
        }
        report["machine"]["load_average_at_end"] = os.getloadavg()
        return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 rounds instead of 5")
    parser.add_argument("--serve-one-tool", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--http", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_one_tool:
        serve_one_tool(args.port if args.http else None)
        return
    report = asyncio.run(measure(3 if args.quick else 5))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
