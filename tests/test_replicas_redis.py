"""Redis faults and secrets: a real redis-server with a password, stopped and started again
under a running gateway, and a task worker whose log must not show the password.

Needs the `redis-server` binary (Debian package redis-server; .ci/run installs it).
"""

import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import psutil
import pytest
from fastmcp import Client
from fastmcp.exceptions import ToolError

from servers.settings import PROJECT_ROOT, GatewaySettings
from tests.deploy import RedisServer

pytestmark = pytest.mark.slow

PASSWORD = "redis-secret-" + uuid.uuid4().hex
INPUTS = {"start_date": "2013-01-01", "end_date": "2013-01-07"}


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer(PASSWORD)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def settings_for(data_dir: Path, url: str) -> GatewaySettings:
    pipelines = {"tasks_url": url, "tasks_name": f"faults-{uuid.uuid4().hex[:8]}"}
    return GatewaySettings.load(data_dir=data_dir, mcpServers={}, pipelines=pipelines)


async def finished(client: Client, run_id: str, timeout_s: float = 90) -> dict:
    with anyio.fail_after(timeout_s):
        while True:
            status = (await client.call_tool("pipelines_get_run", {"run_id": run_id})).data
            if status["status"] != "working":
                return status
            await anyio.sleep(0.2)


async def ready(gateway) -> dict:
    transport = httpx.ASGITransport(app=gateway.http_app(path="/mcp"))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
        return (await http.get("/ready")).json()


@pytest.mark.timeout(400)
@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_redis_down_says_the_queue_cannot_be_reached_and_runs_work_again_when_it_returns(
    redis_server: RedisServer, data_dir: Path, mode: str
):
    from gateway import create_gateway

    gateway = create_gateway(settings_for(data_dir, redis_server.url))
    async with Client(gateway, mode=mode, timeout=60) as client:
        before = await client.call_tool(
            "pipelines_start_run", {"name": "carrier_delays", "inputs": INPUTS}
        )
        assert (await finished(client, before.data["run_id"]))["status"] == "completed"
        assert (await ready(gateway))["services"]["queue"] == {"status": "up"}

        redis_server.stop()
        with pytest.raises(ToolError, match="(?i)background runs are unavailable: the queue"):
            await client.call_tool(
                "pipelines_start_run", {"name": "carrier_delays", "inputs": INPUTS}
            )
        with pytest.raises(ToolError, match="(?i)background runs are unavailable: the queue"):
            await client.call_tool("pipelines_get_run", {"run_id": before.data["run_id"]})
        report = await ready(gateway)
        assert report["status"] == "degraded"
        assert report["services"]["queue"]["status"] == "down"
        assert PASSWORD not in str(report)

        redis_server.start()  # empty: the earlier run is gone with Redis's data
        with anyio.fail_after(60):  # no restart of the gateway: it reconnects by itself
            while True:
                try:
                    after = await client.call_tool(
                        "pipelines_start_run", {"name": "carrier_delays", "inputs": INPUTS}
                    )
                    break
                except ToolError as exc:
                    assert "queue cannot be reached" in str(exc)
                    await anyio.sleep(0.5)
        status = await finished(client, after.data["run_id"])
        assert status["status"] == "completed", status
        assert (await ready(gateway))["status"] == "ready"
        lost_run = "no background run .* in the queue: the id is wrong, or the queue lost it"
        with pytest.raises(ToolError, match=lost_run) as lost:
            await client.call_tool("pipelines_get_run", {"run_id": before.data["run_id"]})
        assert "expired" not in str(lost.value) and "kept for a while" not in str(lost.value)


def test_the_task_worker_log_names_the_queue_without_its_password(
    redis_server: RedisServer, data_dir: Path
):
    env = {
        "GATEWAY_DATA_DIR": str(data_dir),
        "GATEWAY_PIPELINES__TASKS_URL": redis_server.url,
        "GATEWAY_PIPELINES__TASKS_NAME": f"log-{uuid.uuid4().hex[:8]}",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "servers.pipelines.task_worker"],
        cwd=PROJECT_ROOT,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    started = threading.Event()

    def read() -> None:
        for line in process.stdout:
            lines.append(line)
            if "Concurrency" in line:
                started.set()
        started.set()

    threading.Thread(target=read, daemon=True).start()
    try:
        assert started.wait(90) and process.poll() is None, "".join(lines[-30:])
    finally:
        for child in psutil.Process(process.pid).children(recursive=True):
            child.kill()
        process.kill()
        process.wait(timeout=30)
    log = "".join(lines)
    assert f"redis://***@127.0.0.1:{redis_server.port}/0" in log
    assert PASSWORD not in log
