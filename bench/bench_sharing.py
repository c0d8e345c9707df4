"""Sharing the database file with its writers: what letting it go when idle costs, in one run.

    uv run python -m bench.bench_sharing [--quick] [--base DIR] [--peer PYTHON_OR_COMMAND]

Every server runs as a stdio subprocess and is called through a fastmcp client, one query each
in turn (so all see the same load), on its own copy of the sample database:

- ``this, warm``: ``sql_query`` right after another call on this tree (the connection is held
  between calls that follow each other within ``idle_release_s``, default settings).
- ``base, warm``: the same (a call right after another) on the tree in ``--base`` (a worktree
  of the code before this change, which holds its connection for good), when given.
- ``this, after idle release``: ``sql_query`` with ``idle_release_s=0.05`` and a pause of 0.2 s
  before each call, so every call opens the file again.
- ``motherduck, per-query open``: mcp-server-motherduck's ``execute_query`` on a read-only local
  file with its default ephemeral connections (a connection opened per query), when installed
  (``--peer``: its command, default ``/tmp/bench-peers/bin/mcp-server-motherduck``; install with
  ``uv venv /tmp/bench-peers && uv pip install --python /tmp/bench-peers
  mcp-server-motherduck``). It too gets the pause, for the same conditions.

Prints a JSON report; docs/benchmarks.md records a run.
"""

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from fastmcp import Client
from fastmcp.client.transports import StdioTransport

from bench.common import ROOT, machine, summary
from servers.sample_data import ensure_sample_database

QUERY = "SELECT carrier, count(*) AS flights FROM flights WHERE origin = 'JFK' GROUP BY carrier"
PEER = "/tmp/bench-peers/bin/mcp-server-motherduck"


def _ours(tree: Path, database: Path, data_dir: Path, **sql: str) -> StdioTransport:
    env = {
        **os.environ,
        "GATEWAY_DATA_DIR": str(data_dir),
        "GATEWAY_SQL__DATABASE": str(database),
        **{f"GATEWAY_SQL__{k.upper()}": v for k, v in sql.items()},
    }
    python = tree / ".venv" / "bin" / "python"
    return StdioTransport(str(python), ["-m", "servers.sql"], env=env, cwd=str(tree))


def _motherduck(command: str, database: Path, home: Path) -> StdioTransport:
    args = ["--db-path", str(database), "--home-dir", str(home), "--transport", "stdio"]
    return StdioTransport(command, args, env=dict(os.environ))


def _peer_copy(sample: Path, peer: str, work: Path) -> Path:
    """The sample database in the peer's own DuckDB version (it pins an older storage format):
    exported as Parquet here, imported by the Python beside the peer's command."""
    import subprocess

    import duckdb

    exported = work / "export"
    con = duckdb.connect(str(sample), read_only=True)
    con.execute(f"EXPORT DATABASE '{exported}' (FORMAT parquet)")
    con.close()
    target = work / "peer.duckdb"
    python = Path(shutil.which(peer)).parent / "python"
    script = (
        f"import duckdb; duckdb.connect({str(target)!r}).execute(\"IMPORT DATABASE '{exported}'\")"
    )
    subprocess.run([str(python), "-c", script], check=True, timeout=300)
    return target


async def _time_call(client: Client, tool: str, arguments: dict) -> float:
    started = time.perf_counter()
    result = await client.call_tool(tool, arguments)
    elapsed = time.perf_counter() - started
    if result.is_error:
        raise RuntimeError(f"{tool} failed: {result.content}")
    return elapsed


async def run(rounds: int, base: Path | None, peer: str | None) -> dict:
    work = Path(tempfile.mkdtemp(prefix="bench-sharing-"))
    try:
        sample = ensure_sample_database(work / "sample")

        def copy(name: str) -> Path:
            return Path(shutil.copyfile(sample, work / f"{name}.duckdb"))

        variants = {
            "this, warm": (_ours(ROOT, copy("warm"), work / "d1"), "query", 0.0),
            "this, after idle release": (
                _ours(ROOT, copy("idle"), work / "d2", idle_release_s="0.05"),
                "query",
                0.2,
            ),
        }
        # The same with the query threads at normal priority, as the peer's are: on a machine
        # loaded by other work, worker_nice=10 (the default) slows every query of ours.
        variants["this, after idle release, worker_nice=0"] = (
            _ours(ROOT, copy("idle0"), work / "d4", idle_release_s="0.05", worker_nice="0"),
            "query",
            0.2,
        )
        if base is not None:
            variants["base, warm"] = (_ours(base, copy("base"), work / "d3"), "query", 0.0)
        if peer and shutil.which(peer):
            home = work / "home"
            home.mkdir()
            variants["motherduck, per-query open"] = (
                _motherduck(peer, _peer_copy(sample, peer, work), home),
                "execute_query",
                0.2,
            )
        clients = {
            name: Client(transport, timeout=120) for name, (transport, _, _) in variants.items()
        }
        samples: dict[str, list[float]] = {name: [] for name in variants}
        for client in clients.values():
            await client.__aenter__()
        try:
            for name, client in clients.items():  # warm-up: imports, first open, plans
                for _ in range(3):
                    await _time_call(client, variants[name][1], {"sql": QUERY})
            for _ in range(rounds):
                for name, client in clients.items():
                    _, tool, pause = variants[name]
                    if pause:
                        await asyncio.sleep(pause)
                    else:  # warm: right after another call, as in a conversation's burst
                        await _time_call(client, tool, {"sql": QUERY})
                    samples[name].append(await _time_call(client, tool, {"sql": QUERY}))
        finally:
            for client in clients.values():
                await client.__aexit__(None, None, None)
        report = {name: summary(values) for name, values in samples.items()}
        if "base, warm" in report:
            ratio = report["this, warm"]["p50_ms"] / report["base, warm"]["p50_ms"]
            report["warm this/base (p50)"] = round(ratio, 3)
        if "motherduck, per-query open" in report:
            peer_p50 = report["motherduck, per-query open"]["p50_ms"]
            for name in ("this, after idle release", "this, after idle release, worker_nice=0"):
                report[f"{name} / motherduck (p50)"] = round(report[name]["p50_ms"] / peer_p50, 3)
        engine = await asyncio.to_thread(_engine_level, copy("engine"), work / "d5", rounds)
        return {
            "machine": machine(),
            "query": QUERY,
            "rounds": rounds,
            "results": report,
            "engine_level": engine,
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _engine_level(database: Path, data_dir: Path, rounds: int) -> dict:
    """In one process, without MCP: a cursor on the held connection, the first query after an
    idle release, and a per-query open (connect read-only, query, close), in turn."""
    import duckdb

    from servers.settings import SqlSettings
    from servers.sql.engine import Engine

    def query(cursor):
        return cursor.execute(QUERY).fetchall()

    settings = SqlSettings(idle_release_s=0.05, worker_nice=0)
    engine = Engine(database, settings, data_dir)
    samples: dict[str, list[float]] = {"held": [], "after release": [], "per-query open": []}

    async def measure() -> None:
        for _ in range(rounds):
            await engine.run(query)  # opens (or reuses) the connection
            started = time.perf_counter()
            await engine.run(query)
            samples["held"].append(time.perf_counter() - started)
            await asyncio.sleep(0.2)  # let go
            started = time.perf_counter()
            await engine.run(query)
            samples["after release"].append(time.perf_counter() - started)
            await asyncio.sleep(0.2)
            started = time.perf_counter()
            con = duckdb.connect(str(database), read_only=True)
            query(con)
            con.close()
            samples["per-query open"].append(time.perf_counter() - started)

    try:
        asyncio.run(measure())
    finally:
        engine.close()
    return {name: summary(values) for name, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    parser.add_argument("--base", type=Path, help="a worktree of the code before this change")
    parser.add_argument("--peer", default=PEER, help="mcp-server-motherduck's command")
    args = parser.parse_args()
    rounds = 40 if args.quick else 200
    report = asyncio.run(run(rounds, args.base, args.peer))
    json.dump(report, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
