"""Remote backends through the gateway vs directly, over loopback HTTP, in one run.

    uv run python -m bench.bench_backends [--quick]

Starts its own processes (the demo backend over HTTP, four gateways, a hung TCP listener in this
process) and stops them. Measures, with a warmed-up fastmcp client (2026-07-28 era unless said):

1. a proxied ``tools/call`` (client -> gateway -> backend) against the same call made directly
   (client -> backend): p50 and p99 added, through a gateway with that backend only and through
   one that also has a hung backend configured;
2. the gateway's ``tools/list`` with three backends, one of them hung, once its circuit is open;
3. a local ``sql_query`` ("SELECT 42") on gateways with no backend, one healthy, one hung.

Samples alternate between the compared paths in rounds, so all see the same machine load.
Prints a JSON report; docs/benchmarks.md records a run. Takes about a minute (``--quick``: 20 s).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

from fastmcp import Client  # noqa: E402

from bench.common import gateway_process, machine, serving, summary  # noqa: E402
from servers.sample_data import ensure_sample_database  # noqa: E402

CONVERT = ("convert_units", {"value": 100, "from_unit": "mi", "to_unit": "km"})
LOCAL = ("sql_query", {"sql": "SELECT 42"})
HUNG = {"timeout_s": 1, "connect_timeout_s": 1, "circuit_failures": 1, "circuit_reset_s": 3600}


@contextmanager
def demo_backend() -> Iterator[str]:
    """The bundled demo backend over HTTP; yields its /mcp URL."""
    with serving(["-m", "servers.demo_backend", "--transport", "http"], ready="/mcp") as base:
        yield base + "/mcp"


@contextmanager
def hung_listener() -> Iterator[str]:
    """Accepts TCP connections and never answers; yields an /mcp URL on it."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    listener.settimeout(0.1)
    held, stop = [], threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/mcp"
    finally:
        stop.set()
        thread.join(timeout=5)
        for connection in held:
            connection.close()
        listener.close()


@contextmanager
def gateway(stack_dir: Path, data_dir: Path, name: str, backends: dict) -> Iterator[str]:
    config = stack_dir / f"{name}.json"
    config.write_text(json.dumps({"mcpServers": backends}))
    env = {"GATEWAY_DATA_DIR": str(data_dir)}
    with gateway_process(env, ["--config", str(config)]) as url:
        yield url


async def timed(client: Client, name: str, arguments: dict, n: int) -> list[float]:
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        await client.call_tool(name, arguments)
        samples.append(time.perf_counter() - started)
    return samples


async def timed_listing(client: Client, n: int) -> list[float]:
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        await client.list_tools()
        samples.append(time.perf_counter() - started)
    return samples


def added(direct: dict, proxied: dict) -> dict:
    return {
        "p50_added_ms": round(proxied["p50_ms"] - direct["p50_ms"], 3),
        "p99_added_ms": round(proxied["p99_ms"] - direct["p99_ms"], 3),
    }


async def proxied_vs_direct(urls: dict[str, str], mode: str, rounds: int, n: int) -> dict:
    """The call made directly, through a gateway with this backend only, and through a gateway
    that also has a hung backend configured (its circuit open after the first listing)."""
    name = f"demo_{CONVERT[0]}"
    direct, proxied, beside_hung = [], [], []
    async with (
        Client(urls["demo"], mode=mode) as d,
        Client(urls["one"], mode=mode) as g,
        Client(urls["three"], mode=mode) as h,
    ):
        await timed(d, *CONVERT, 30)  # warm-up: connections, listings, code paths
        await timed(g, name, CONVERT[1], 30)
        await timed(h, name, CONVERT[1], 30)
        for _ in range(rounds):
            direct += await timed(d, *CONVERT, n)
            proxied += await timed(g, name, CONVERT[1], n)
            beside_hung += await timed(h, name, CONVERT[1], n)
    report = {"direct": summary(direct), "proxied": summary(proxied)}
    report["proxied_with_a_hung_backend_configured"] = summary(beside_hung) | added(
        report["direct"], summary(beside_hung)
    )
    return report | added(report["direct"], report["proxied"])


async def local_call_costs(urls: dict[str, str], rounds: int, n: int) -> dict:
    samples: dict[str, list[float]] = {"no backend": [], "1 healthy": [], "1 hung": []}
    gateways = {"no backend": "none", "1 healthy": "one", "1 hung": "hung"}
    clients = {label: Client(urls[key]) for label, key in gateways.items()}
    async with clients["no backend"], clients["1 healthy"], clients["1 hung"]:
        for client in clients.values():  # the hung one waits its 2 s once, here, then never
            await timed(client, *LOCAL, 20)
        for _ in range(rounds):
            for label, client in clients.items():
                samples[label] += await timed(client, *LOCAL, n)
    report = {label: summary(values) for label, values in samples.items()}
    base = report["no backend"]["p50_ms"]
    for label in ("1 healthy", "1 hung"):
        report[label]["p50_ratio_to_no_backend"] = round(report[label]["p50_ms"] / base, 3)
    return report


async def listing_with_a_hung_backend(urls: dict[str, str], rounds: int, n: int) -> dict:
    async with Client(urls["three"]) as client:
        started = time.perf_counter()
        await client.list_tools()
        first = time.perf_counter() - started
        circuit = (await client.call_tool("admin_status", {})).structured_content["backends"]
        await timed_listing(client, 20)
        samples = []
        for _ in range(rounds):
            samples += await timed_listing(client, n)
        tools = len(await client.list_tools())
    report = summary(samples)
    report["first_listing_ms"] = round(first * 1000, 1)
    report["hung_circuit"] = circuit["hung"]["circuit"]["state"]
    report["tools_listed"] = tools
    return report


async def run(quick: bool) -> dict:
    rounds, n = (3, 60) if quick else (5, 200)
    with ExitStack() as stack:
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        data_dir = scratch / "data"
        ensure_sample_database(data_dir)
        demo = stack.enter_context(demo_backend())
        demo2 = stack.enter_context(demo_backend())
        hung = stack.enter_context(hung_listener())
        urls = {
            "demo": demo,
            "none": stack.enter_context(gateway(scratch, data_dir, "none", {})),
            "one": stack.enter_context(gateway(scratch, data_dir, "one", {"demo": {"url": demo}})),
            "hung": stack.enter_context(
                gateway(scratch, data_dir, "hung", {"hung": {"url": hung, **HUNG}})
            ),
            "three": stack.enter_context(
                gateway(
                    scratch,
                    data_dir,
                    "three",
                    {
                        "demo": {"url": demo},
                        "other": {"url": demo2},
                        "hung": {"url": hung, **HUNG},
                    },
                )
            ),
        }
        return {
            "machine": machine() | {"load_average": os.getloadavg()},
            "method": f"{rounds} rounds x {n} calls per path, alternating paths by round",
            "proxied_call_2026": await proxied_vs_direct(urls, "auto", rounds, n),
            "proxied_call_handshake_era": await proxied_vs_direct(urls, "legacy", rounds, n),
            "tools_list_3_backends_1_hung": await listing_with_a_hung_backend(urls, rounds, n),
            "local_sql_query": await local_call_costs(urls, rounds, n),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples (about 20 s)")
    report = asyncio.run(run(parser.parse_args().quick))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
