"""What a global rate limit costs per call: a client's bucket in Redis (one Lua script,
``servers.gateway.limits.SharedBuckets``) vs the in-process bucket (``TokenBucket``).

    uv run python -m bench.bench_rate_bucket [--quick]

A private redis-server on a loopback port (no persistence), on this machine, so the figure is a
round trip over loopback plus the script, not a network hop: add your network's round trip for
Redis on another host. The two paths alternate round by round in one process, so both see the
same machine load; each take is timed with perf_counter after a warm-up. The rate is high
enough that no take is refused. Prints p50 and p99 per path and the p50 Redis adds.
"""

import argparse
import asyncio
import json
import os
import tempfile
import time
import uuid
from pathlib import Path

from bench.common import machine, summary
from servers.gateway.limits import SharedBuckets, TokenBucket
from servers.settings import GatewaySettings
from tests.deploy import RedisServer


async def compare(rounds: int, n: int) -> dict:
    server = RedisServer()
    server.start()
    try:
        with tempfile.TemporaryDirectory() as data_dir:
            settings = GatewaySettings.load(
                data_dir=Path(data_dir),
                mcpServers={},
                pipelines={"tasks_url": server.url, "tasks_name": f"bench-{uuid.uuid4().hex}"},
                limits={"rate_per_s": 1_000_000, "rate_burst": 1_000_000},
            )
            shared = SharedBuckets(settings)
            local = TokenBucket(settings.limits.rate_per_s, float(settings.limits.rate_burst))
            paths: dict[str, list[float]] = {"in process": [], "redis": []}
            for _ in range(200):  # warm up: connection made, script loaded
                assert await shared.take("token:bench", settings.limits) == 0.0
            for _ in range(rounds):
                for _ in range(n):
                    started = time.perf_counter()
                    local.take()
                    paths["in process"].append(time.perf_counter() - started)
                for _ in range(n):
                    started = time.perf_counter()
                    await shared.take("token:bench", settings.limits)
                    paths["redis"].append(time.perf_counter() - started)
            await shared.redis.aclose()
    finally:
        server.stop()
    report = {name: summary(samples) for name, samples in paths.items()}
    report["redis adds p50_ms"] = round(
        report["redis"]["p50_ms"] - report["in process"]["p50_ms"], 3
    )
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    rounds, n = (5, 200) if args.quick else (20, 500)
    report = asyncio.run(compare(rounds, n))
    report["machine"] = {**machine(), "load_average": os.getloadavg()}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
