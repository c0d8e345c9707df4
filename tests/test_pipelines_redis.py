"""Background runs on a real Redis: a separate worker process picks queued runs up.

Needs the `redis-server` binary (Debian package redis-server; .ci/run installs it).
"""

import os
import shutil
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import anyio
import psutil
import pytest
import redis
from fastmcp import Client, FastMCP

from servers.pipelines.server import create_server
from servers.pipelines.tasks import tasks_extension
from servers.settings import PROJECT_ROOT, GatewaySettings
from tests.conftest import free_port

pytestmark = pytest.mark.slow

WORKER = "servers/pipelines/task_worker.py:create_worker_server"


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A private redis-server on a loopback port, without persistence."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server; .ci/run does)")
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        _wait_for_redis(process, port)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(timeout=10)


def _wait_for_redis(process: subprocess.Popen, port: int) -> None:
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1)
    for _ in range(600):  # up to ~60 s on a loaded machine
        if process.poll() is not None:
            pytest.fail(f"redis-server could not start: {process.stderr.read().decode()[-300:]}")
        try:
            client.ping()
            return
        except redis.ConnectionError:
            threading.Event().wait(0.1)
    pytest.fail("redis-server did not answer within 60 s")


@contextmanager
def task_worker(env: dict[str, str], start_s: float) -> Iterator[subprocess.Popen]:
    """A task worker process (python -m fastmcp_tasks.worker_cli) with env, once it says it
    started (within start_s); it and its children are killed at the end."""
    process = subprocess.Popen(
        [sys.executable, "-m", "fastmcp_tasks.worker_cli", "worker", WORKER],
        cwd=PROJECT_ROOT,
        env={**os.environ, **env, "COLUMNS": "200"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    ready = threading.Event()
    lines: list[str] = []

    def read() -> None:
        for line in process.stdout:
            lines.append(line)
            if "Starting worker" in line:
                ready.set()
        ready.set()  # the worker exited

    threading.Thread(target=read, daemon=True).start()
    try:
        if not ready.wait(start_s) or process.poll() is not None:
            raise RuntimeError("the task worker did not start:\n" + "".join(lines[-30:]))
        yield process
    finally:
        for child in psutil.Process(process.pid).children(recursive=True):
            child.kill()
        process.kill()
        process.wait(timeout=10)


@pytest.fixture
def worker(redis_url, data_dir) -> Iterator[tuple[subprocess.Popen, dict]]:
    """A task worker process (python -m fastmcp_tasks.worker_cli) on the Redis queue."""
    env = {
        "GATEWAY_DATA_DIR": str(data_dir),
        "GATEWAY_PIPELINES__TASKS_URL": redis_url,
        "GATEWAY_PIPELINES__TASKS_NAME": f"test-{uuid.uuid4().hex[:8]}",
        "GATEWAY_PIPELINES__TASKS_CONCURRENCY": "2",
    }
    with task_worker(env, start_s=60) as process:
        yield process, env


async def test_a_worker_process_executes_runs_queued_on_redis(worker, data_dir):
    process, env = worker
    settings = GatewaySettings.load(
        data_dir=data_dir,
        mcpServers={},
        pipelines={
            "tasks_url": env["GATEWAY_PIPELINES__TASKS_URL"],
            "tasks_name": env["GATEWAY_PIPELINES__TASKS_NAME"],
            "tasks_concurrency": 1,
        },
    )
    # Mounted as in the gateway, so the queued runs' names match the worker's.
    tasks = tasks_extension(settings, namespace="pipelines")
    gateway = FastMCP("gateway")
    gateway.add_extension(tasks)
    gateway.mount(create_server(settings, tasks=tasks), namespace="pipelines")
    async with Client(gateway) as client:
        run_ids = []
        for month in range(1, 7):
            inputs = {"start_date": f"2013-{month:02d}-01", "end_date": f"2013-{month:02d}-28"}
            started = await client.call_tool(
                "pipelines_start_run", {"name": "carrier_delays", "inputs": inputs}
            )
            run_ids.append(started.data["run_id"])
        results = {}
        with anyio.fail_after(90):
            while len(results) < len(run_ids):
                for run_id in set(run_ids) - set(results):
                    status = (await client.call_tool("pipelines_get_run", {"run_id": run_id})).data
                    if status["status"] != "working":
                        results[run_id] = status
                await anyio.sleep(0.2)
    assert {r["status"] for r in results.values()} == {"completed"}
    executors = {psutil.Process(r["result"]["run"]["worker_pid"]).ppid() for r in results.values()}
    assert process.pid in executors
    flights = [results[i]["result"]["outputs"]["carrier_delay_summary"]["flights"] for i in run_ids]
    assert all(n > 20_000 for n in flights)
