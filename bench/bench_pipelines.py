"""A pipeline run through the gateway vs Hamilton's driver.execute in Python, same inputs.

    uv run python bench/bench_pipelines.py [--quick]

Two runs of one dataflow (bench/bench_dataflow.py): a trivial one (one tiny node) and a real
one of a few hundred milliseconds (336,776 flights into pandas, joined to the weather). The baseline
is driver.execute in this process with a cursor on a hardened read-only connection; the gateway
path is an in-memory client calling pipelines_run_pipeline (the run goes to a worker process,
reports node progress, and comes back shaped). Samples alternate between the two paths, so
both see the same machine load. Prints a JSON report; docs/benchmarks.md records a run.
"""

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

from fastmcp import Client  # noqa: E402
from hamilton import driver  # noqa: E402

from bench import bench_dataflow  # noqa: E402
from bench.common import ROOT, ignore_log, machine, summary  # noqa: E402
from bench.trivial import with_bench_pipeline  # noqa: E402
from gateway import create_gateway  # noqa: E402
from servers.leftovers import own_folder  # noqa: E402
from servers.sample_data import ensure_sample_database  # noqa: E402
from servers.settings import GatewaySettings  # noqa: E402
from servers.sql.engine import open_connection  # noqa: E402

RUNS = {"trivial (1 node)": ["answer"], "real (4 nodes, flights into pandas)": ["delay_profile"]}


def gateway_with_bench_pipeline(settings: GatewaySettings):
    """The real gateway with the bench dataflow added to its pipelines namespace."""
    return create_gateway(settings, served_pipelines=with_bench_pipeline())


async def measure(client: Client, database: Path, settings: GatewaySettings, n: int) -> dict:
    connection = open_connection(database, settings.sql, own_folder(settings.scratch_dir), [])
    direct_driver = driver.Builder().with_modules(bench_dataflow).build()

    def direct(outputs: list[str]) -> float:
        cursor = connection.cursor()
        started = time.perf_counter()
        direct_driver.execute(outputs, inputs={"x": 41, "db": cursor})
        elapsed = time.perf_counter() - started
        cursor.close()
        return elapsed

    async def gateway(outputs: list[str]) -> float:
        started = time.perf_counter()
        await client.call_tool(
            "pipelines_run_pipeline", {"name": "bench", "inputs": {"x": 41}, "outputs": outputs}
        )
        return time.perf_counter() - started

    report = {}
    for label, outputs in RUNS.items():
        for _ in range(3):  # warm up: worker process started, drivers built, caches filled
            direct(outputs)
            await gateway(outputs)
        direct_s, gateway_s = [], []
        for _ in range(n):
            direct_s.append(direct(outputs))
            gateway_s.append(await gateway(outputs))
        d, g = statistics.median(direct_s), statistics.median(gateway_s)
        report[label] = {
            "driver_execute": summary(direct_s),
            "gateway": summary(gateway_s),
            "added_ms": round((g - d) * 1000, 2),
            "ratio": round(g / d, 3),
        }
    connection.close()
    return report


async def main(quick: bool) -> None:
    data_dir = ROOT / "data"
    database = ensure_sample_database(data_dir)
    settings = GatewaySettings.load(data_dir=data_dir, mcpServers={})
    gateway = gateway_with_bench_pipeline(settings)
    n = 10 if quick else 40
    report = {"machine": machine(), "samples_per_path": n}
    # Legacy clients get a foreground run; modern clients a background task (queue pickup).
    for mode in ("legacy", "auto"):
        async with Client(gateway, mode=mode, log_handler=ignore_log) as client:
            report[f"client {mode}"] = await measure(client, database, settings, n)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 samples per path, not 40")
    asyncio.run(main(parser.parse_args().quick))
