"""The compose topology without Docker, as real processes on 127.0.0.1 (tests/deploy.py):
redis-server, the demo backend over HTTP, two gateway replicas (one with two uvicorn worker
processes, one stateless single process), a pipeline task worker, and nginx in front running
deploy/nginx.conf.
"""

import json
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import psutil
import pytest
from fastmcp import Client

from tests.deploy import Deployment
from tests.deploy import deployment as deploy

pytestmark = pytest.mark.slow

TOKEN = "deploy-test-token-" + uuid.uuid4().hex


@pytest.fixture(scope="module")
def deployment(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    with deploy(tmp_path_factory.mktemp("deploy"), data_dir, TOKEN) as running:
        yield running


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
    bases = [deployment.url.removesuffix("/mcp"), *deployment.replicas]
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(headers=headers, timeout=60) as http:
        for base in bases:  # nginx, then each replica directly
            csv = await http.get(base + handle["csv"])
            assert csv.status_code == 200, (base, csv.text[:200])
            assert csv.content.count(b"\n") == rows + 1
