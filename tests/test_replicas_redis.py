"""Redis faults and secrets: a real redis-server with a password, stopped and started again
under a running gateway, and a task worker whose log must not show the password.

Needs the `redis-server` binary (Debian package redis-server; .ci/run installs it).
"""

import os
import shutil
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
import redis
from fastmcp import Client
from fastmcp.exceptions import ToolError

from servers.settings import PROJECT_ROOT, GatewaySettings
from tests.conftest import free_port

pytestmark = pytest.mark.slow

PASSWORD = "redis-secret-" + uuid.uuid4().hex
INPUTS = {"start_date": "2013-01-01", "end_date": "2013-01-07"}


class RedisServer:
    """A private redis-server with a password, on a fixed loopback port, without persistence:
    stopping and starting it loses every key, as a Redis restart without AOF does."""

    def __init__(self) -> None:
        self.binary = shutil.which("redis-server")
        if self.binary is None:
            pytest.skip("redis-server is not installed (apt-get install redis-server)")
        self.port = free_port()
        self.url = f"redis://:{PASSWORD}@127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1"]
            + ["--requirepass", PASSWORD, "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        client = redis.Redis(host="127.0.0.1", port=self.port, password=PASSWORD, socket_timeout=1)
        for _ in range(300):  # up to ~30 s on a loaded machine
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited: {self.process.stderr.read()[-300:]}")
            try:
                client.ping()
                return
            except redis.ConnectionError:
                threading.Event().wait(0.1)
        raise TimeoutError("redis-server did not answer within 30 s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
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
