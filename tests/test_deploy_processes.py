"""The compose topology without Docker, as real processes on 127.0.0.1: redis-server, the demo
backend over HTTP, two gateway replicas (one with two uvicorn worker processes, one stateless
single process), a pipeline task worker, and nginx in front running deploy/nginx.conf.

Needs the `redis-server` and `nginx` binaries (Debian packages; .ci/run installs them).
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio
import httpx
import psutil
import pytest
from fastmcp import Client

from servers.sample_data import ensure_sample_database
from servers.settings import PROJECT_ROOT
from tests.conftest import free_port
from tests.test_deploy_config import nginx_binary, render_nginx_conf

pytestmark = pytest.mark.slow

TOKEN = "deploy-test-token-" + uuid.uuid4().hex


@dataclass
class Deployment:
    url: str  # the MCP endpoint, through nginx
    access_log: Path
    replica_ports: list[int]
    task_worker_pid: int


@contextmanager
def started(command: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen]:
    """A process in its own session (so its workers go with it), logging to a file."""
    with log.open("wb") as output:
        process = subprocess.Popen(
            command,
            cwd=PROJECT_ROOT,
            env={**os.environ, **env},
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield process
    finally:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=15)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)


def wait_for(check, process: subprocess.Popen, log: Path, what: str, timeout_s: float = 90):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited early:\n{log.read_text()[-3000:]}")
        try:
            if check():
                return
        except (httpx.HTTPError, OSError):
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{what} did not start within {timeout_s} s:\n{log.read_text()[-3000:]}")


def answers(url: str) -> bool:
    return httpx.get(url, timeout=1).status_code == 200


@pytest.fixture(scope="module")
def deployment(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    redis_server = shutil.which("redis-server")
    if redis_server is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server; .ci/run does)")
    nginx = nginx_binary()
    tmp = tmp_path_factory.mktemp("deploy")
    ports = {name: free_port() for name in ("redis", "demo", "a", "b", "nginx")}
    config = tmp / "gateway.json"
    demo_url = f"http://127.0.0.1:{ports['demo']}/mcp"
    config.write_text(json.dumps({"mcpServers": {"demo": {"url": demo_url}}}))
    # As in docker-compose.yml: the database read-only on its own, scratch in a separate
    # directory, one Redis queue, a token from the environment.
    env = {
        "GATEWAY_SQL__DATABASE": str(ensure_sample_database(data_dir)),
        "GATEWAY_DATA_DIR": str(tmp / "state"),
        "GATEWAY_PIPELINES__TASKS_URL": f"redis://127.0.0.1:{ports['redis']}/0",
        "GATEWAY_PIPELINES__TASKS_NAME": f"deploy-{uuid.uuid4().hex[:8]}",
        "GATEWAY_PIPELINES__TASKS_CONCURRENCY": "1",
        "GATEWAY_AUTH__TOKEN": TOKEN,
        "GATEWAY_LIMITS__RATE_PER_S": "0",
    }
    gateway = [sys.executable, "gateway.py", "--config", str(config), "--port"]
    with ExitStack() as stack:

        def start(name: str, command: list[str], extra: dict[str, str] | None = None):
            log = tmp / f"{name}.log"
            return stack.enter_context(started(command, {**env, **(extra or {})}, log)), log

        redis, redis_log = start(
            "redis",
            [redis_server, "--port", str(ports["redis"]), "--bind", "127.0.0.1", "--save", ""]
            + ["--appendonly", "no"],
        )
        demo, demo_log = start(
            "demo",
            [sys.executable, "-m", "servers.demo_backend", "--transport", "http"]
            + ["--port", str(ports["demo"])],
        )
        replica_a, a_log = start("gateway-a", [*gateway, str(ports["a"]), "--workers", "2"])
        replica_b, b_log = start(
            "gateway-b", [*gateway, str(ports["b"])], {"GATEWAY_STATELESS_HTTP": "true"}
        )
        worker, worker_log = start(
            "task-worker",
            [sys.executable, "-m", "servers.pipelines.task_worker"],
            {"GATEWAY_CONFIG": str(config), "GATEWAY_PIPELINES__TASKS_CONCURRENCY": "4"},
        )
        prefix = tmp / "nginx"
        conf = render_nginx_conf(
            prefix, ports["nginx"], [f"127.0.0.1:{ports['a']}", f"127.0.0.1:{ports['b']}"]
        )
        proxy, proxy_log = start(
            "nginx",
            [nginx, "-e", "stderr", "-p", str(prefix), "-c", str(conf)] + ["-g", "daemon off;"],
        )
        base = f"http://127.0.0.1:{ports['nginx']}"
        wait_for(lambda: answers(f"{base}/nginx-health"), proxy, proxy_log, "nginx")
        wait_for(lambda: _redis_up(ports["redis"]), redis, redis_log, "redis-server")
        wait_for(lambda: _listening(ports["demo"]), demo, demo_log, "the demo backend")
        for port, process, log in ((ports["a"], replica_a, a_log), (ports["b"], replica_b, b_log)):
            health = f"http://127.0.0.1:{port}/health"
            wait_for(lambda url=health: answers(url), process, log, "gateway")
        wait_for(lambda: "Starting worker" in worker_log.read_text(), worker, worker_log, "worker")
        yield Deployment(f"{base}/mcp", prefix / "access.log", [ports["a"], ports["b"]], worker.pid)


def _redis_up(port: int) -> bool:
    import redis

    return bool(redis.Redis(host="127.0.0.1", port=port, socket_timeout=1).ping())


def _listening(port: int) -> bool:
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=1):
        return True


def upstreams_of_mcp_requests(access_log: Path) -> set[int]:
    lines = access_log.read_text().splitlines()
    return {
        int(p)
        for p in re.findall(r'"POST /mcp [^"]*" \d+ upstream=127\.0\.0\.1:(\d+)', "\n".join(lines))
    }


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_a_client_through_nginx_lists_and_calls_every_namespace_on_both_replicas(
    deployment: Deployment, mode: str
):
    async with Client(deployment.url, auth=TOKEN, mode=mode, timeout=30) as client:
        names = {tool.name for tool in await client.list_tools()}
        # admin_* is callable by name but listed only to tokens naming the admin scope
        assert {n.split("_")[0] for n in names} >= {"sql", "pipelines", "demo"}
        count = await client.call_tool("sql_query", {"sql": "SELECT count(*) AS n FROM flights"})
        assert count.structured_content["rows"] == [[336776]]
        listed = await client.call_tool("pipelines_list_pipelines", {})
        assert "carrier_delays" in json.dumps(listed.structured_content)
        status = await client.call_tool("admin_status", {})
        assert "demo" in json.dumps(status.structured_content)
        km = await client.call_tool(
            "demo_convert_units", {"value": 1, "from_unit": "mi", "to_unit": "km"}
        )
        assert km.structured_content["value"] == pytest.approx(1.609344)
        for _ in range(4):  # enough requests for round robin to reach both replicas
            await client.call_tool("sql_list_tables", {})
    assert upstreams_of_mcp_requests(deployment.access_log) == set(deployment.replica_ports)


async def test_a_request_without_the_token_is_refused_through_nginx(deployment: Deployment):
    async with httpx.AsyncClient() as http:
        response = await http.post(
            deployment.url, json={"jsonrpc": "2.0", "id": 1, "method": "ping"}
        )
    assert response.status_code == 401


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_progress_notifications_arrive_through_nginx_while_the_call_runs(
    deployment: Deployment, mode: str
):
    arrivals: list[float] = []

    async def progress(done: float, total: float | None, message: str | None) -> None:
        arrivals.append(time.monotonic())

    async with Client(deployment.url, auth=TOKEN, mode=mode, timeout=30) as client:
        result = await client.call_tool("demo_countdown", {"seconds": 3}, progress_handler=progress)
        finished = time.monotonic()
    assert result.data == "counted down 3 s"
    # The first notification came about 3 s before the result: nothing held it back.
    assert len(arrivals) >= 3 and finished - arrivals[0] > 1.5


async def test_a_pipeline_run_through_nginx_reports_its_nodes_as_progress(deployment: Deployment):
    messages: list[str | None] = []

    async def progress(done: float, total: float | None, message: str | None) -> None:
        messages.append(message)

    inputs = {"start_date": "2013-01-01", "end_date": "2013-01-31"}
    async with Client(deployment.url, auth=TOKEN, mode="legacy", timeout=60) as client:
        result = await client.call_tool(
            "pipelines_run_pipeline",
            {"name": "carrier_delays", "inputs": inputs},
            progress_handler=progress,
        )
    assert result.structured_content["outputs"]["carrier_delay_summary"]["flights"] > 20_000
    assert len([m for m in messages if m]) >= 2


async def test_background_runs_submitted_through_nginx_are_executed_by_the_task_worker(
    deployment: Deployment,
):
    async with Client(deployment.url, auth=TOKEN, timeout=30) as client:
        run_ids = []
        for month in range(1, 9):
            inputs = {"start_date": f"2013-{month:02d}-01", "end_date": f"2013-{month:02d}-28"}
            started_run = await client.call_tool(
                "pipelines_start_run", {"name": "carrier_delays", "inputs": inputs}
            )
            run_ids.append(started_run.data["run_id"])
        results: dict[str, dict] = {}
        with anyio.fail_after(45):
            while len(results) < len(run_ids):
                for run_id in set(run_ids) - set(results):
                    # Any replica answers: the run's state lives in Redis, not in a process.
                    status = (await client.call_tool("pipelines_get_run", {"run_id": run_id})).data
                    if status["status"] != "working":
                        results[run_id] = status
                await anyio.sleep(0.3)
    assert {r["status"] for r in results.values()} == {"completed"}
    executors = {psutil.Process(r["result"]["run"]["worker_pid"]).ppid() for r in results.values()}
    assert deployment.task_worker_pid in executors


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_a_large_result_made_through_nginx_is_paged_and_downloaded_through_every_replica(
    deployment: Deployment, mode: str
):
    rows = 100_000
    sql = f"SELECT range AS i FROM range({rows})"
    async with Client(deployment.url, auth=TOKEN, mode=mode, timeout=60) as client:
        first = await client.call_tool("sql_query", {"sql": sql, "max_rows": 10})
        handle = first.structured_content["result"]
        for offset in range(0, rows, rows // 8):  # round robin spreads these over the replicas
            page = await client.call_tool(
                "sql_read_result", {"result_id": handle["id"], "offset": offset, "limit": 2}
            )
            assert page.structured_content["rows"] == [[offset], [offset + 1]]
    bases = [deployment.url.removesuffix("/mcp")] + [
        f"http://127.0.0.1:{port}" for port in deployment.replica_ports
    ]
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(headers=headers, timeout=60) as http:
        for base in bases:  # nginx, then each replica directly
            csv = await http.get(base + handle["csv"])
            assert csv.status_code == 200, (base, csv.text[:200])
            assert csv.content.count(b"\n") == rows + 1
