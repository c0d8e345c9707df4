"""Pipelines from your own folders (GATEWAY_PIPELINES__PATHS): registered at start-up with the
same validation, run on run workers and on a Redis task worker; the samples only where they
apply; a pipeline whose tables are missing is left out; `new-pipeline` writes one that passes."""

import json
import logging
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import anyio
import psutil
import pytest
from fastmcp import Client, FastMCP
from fastmcp.exceptions import ToolError

from gateway import create_gateway
from servers.pipelines.registry import PipelineError
from servers.pipelines.server import create_server, tasks_extension
from servers.settings import PROJECT_ROOT, GatewaySettings
from tests.test_pipelines_redis import redis_url, task_worker  # noqa: F401 (a fixture)
from tests.writers import make_database, writer

pytestmark = pytest.mark.slow

ORDER_TOTALS = textwrap.dedent('''\
    """Order totals: how many orders there are and their total, from the orders table."""

    import duckdb
    import pandas as pd
    from pydantic import BaseModel, Field

    TABLES = ("orders",)
    OUTPUTS = ("totals",)


    class Inputs(BaseModel):
        minimum: int = Field(0, description="Only orders of at least this total.")


    def totals(db: duckdb.DuckDBPyConnection, minimum: int) -> pd.DataFrame:
        """Count and sum of the orders of at least `minimum`."""
        sql = "SELECT count(*) AS orders, sum(total) AS amount FROM orders WHERE total >= ?"
        return db.execute(sql, [minimum]).df()
''')

NEEDS_REFUNDS = ORDER_TOTALS.replace('TABLES = ("orders",)', 'TABLES = ("orders", "refunds")')


@pytest.fixture
def own(tmp_path) -> dict[str, Path]:
    """A database of one's own and a pipelines folder outside the repository."""
    folder = tmp_path / "my_pipelines"
    folder.mkdir()
    (folder / "order_totals.py").write_text(ORDER_TOTALS)
    database = make_database(
        tmp_path / "shop.duckdb",
        "CREATE TABLE orders AS SELECT range AS id, range * 10 AS total FROM range(1, 6)",
    )
    return {"folder": folder, "database": database, "data": tmp_path / "data"}


def _settings(own: dict[str, Path], **pipelines) -> GatewaySettings:
    return GatewaySettings.load(
        data_dir=own["data"],
        mcpServers={},
        sql={"database": own["database"], "idle_release_s": 0.2},
        pipelines={"paths": [own["folder"]], **pipelines},
    )


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_a_folder_outside_the_repository_is_served_and_runs(own, mode):
    async with Client(create_gateway(_settings(own)), mode=mode) as client:
        listed = (await client.call_tool("pipelines_list_pipelines", {})).data
        ran = await client.call_tool("pipelines_run_order_totals", {"minimum": 30})
        with pytest.raises(ToolError, match="minimum"):
            await client.call_tool("pipelines_run_pipeline", {
                "name": "order_totals", "inputs": {"minimum": "lots"},
            })  # fmt: skip
    assert [p["name"] for p in listed] == ["order_totals"]  # no samples with your own data
    assert listed[0]["description"].startswith("Order totals")
    assert ran.structured_content["outputs"]["totals"]["rows"] == [[3, 120]]


async def test_a_run_waits_for_validation_within_its_own_budget_then_says_try_again(own):
    # A folder of its own: validated afresh (verdicts are reused only for the same files).
    async with Client(create_gateway(_settings(own, validation_wait_s=0.01))) as client:
        with pytest.raises(ToolError, match=r"still being validated after 0.01 s .*try again"):
            await client.call_tool("pipelines_run_order_totals", {"minimum": 30})
        with anyio.fail_after(300):  # it runs once validation has answered
            while True:
                try:
                    ran = await client.call_tool("pipelines_run_order_totals", {"minimum": 30})
                    break
                except ToolError as exc:
                    assert "still being validated" in str(exc)
                    await anyio.sleep(0.2)
    assert ran.structured_content["outputs"]["totals"]["rows"] == [[3, 120]]


async def test_the_samples_are_served_with_the_sample_database_or_when_named(own, data_dir):
    with_sample = GatewaySettings.load(data_dir=data_dir, mcpServers={})
    named = _settings(own, sample_pipelines=["carrier_delays"])
    async with Client(create_gateway(with_sample)) as client:
        sample_names = {
            p["name"] for p in (await client.call_tool("pipelines_list_pipelines")).data
        }
    assert sample_names == {"carrier_delays", "route_profile", "weather_delays"}
    with pytest.raises(PipelineError, match="sample_pipelines names"):
        create_gateway(_settings(own, sample_pipelines=["nope"]))
    # Named, but its tables (flights, airlines) are not in this database: left out.
    async with Client(create_gateway(named)) as client:
        names = {p["name"] for p in (await client.call_tool("pipelines_list_pipelines")).data}
    assert names == {"order_totals"}


async def test_a_pipeline_whose_tables_are_missing_is_left_out_with_a_line_naming_them(own, caplog):
    (own["folder"] / "refund_totals.py").write_text(NEEDS_REFUNDS)
    with caplog.at_level(logging.WARNING, logger="gateway.pipelines"):
        gateway = create_gateway(_settings(own))
    async with Client(gateway) as client:
        names = [p["name"] for p in (await client.call_tool("pipelines_list_pipelines")).data]
    assert names == ["order_totals"]
    assert "pipeline refund_totals left out: the served data has no table refunds" in caplog.text


def test_a_broken_module_in_a_folder_stops_start_up_naming_it(own):
    (own["folder"] / "broken.py").write_text('"""Broken."""\nOUTPUTS = ("nothing",)\n')
    with pytest.raises(PipelineError, match="broken"):
        create_gateway(_settings(own))


def test_new_pipeline_writes_a_module_that_is_served(own, tmp_path):
    folder = tmp_path / "scaffolded"
    made = subprocess.run(
        [sys.executable, "gateway.py", "new-pipeline", "order_preview", "--dir", str(folder),
         "--table", "orders"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    again = subprocess.run(
        [sys.executable, "gateway.py", "new-pipeline", "order_preview", "--dir", str(folder)],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr[-2000:]
    assert "passes validation" in made.stdout
    assert again.returncode == 2 and "exists" in again.stdout
    text = (folder / "order_preview.py").read_text()
    assert 'TABLES = ("orders",)' in text and "# " in text  # commented
    settings = _settings({**own, "folder": folder})

    async def run() -> dict:
        async with Client(create_gateway(settings)) as client:
            result = await client.call_tool("pipelines_run_order_preview", {"limit": 2})
            return result.structured_content["outputs"]

    outputs = anyio.run(run)
    assert outputs["row_count"] == 5
    assert outputs["preview"]["rows"] == [[1, 10], [2, 20]]


@pytest.fixture
def folder_worker(redis_url, own):  # noqa: F811
    """A Redis task worker process configured with the pipelines folder and the database."""
    env = {
        "GATEWAY_DATA_DIR": str(own["data"]),
        "GATEWAY_SQL__DATABASE": str(own["database"]),
        "GATEWAY_SQL__IDLE_RELEASE_S": "0.2",
        "GATEWAY_PIPELINES__PATHS": json.dumps([str(own["folder"])]),
        "GATEWAY_PIPELINES__TASKS_URL": redis_url,
        "GATEWAY_PIPELINES__TASKS_NAME": f"test-{uuid.uuid4().hex[:8]}",
    }
    with task_worker(env, start_s=90) as process:
        yield process, env


async def test_a_redis_task_worker_runs_a_pipeline_from_the_folder(folder_worker, own):
    process, env = folder_worker
    settings = _settings(
        own,
        tasks_url=env["GATEWAY_PIPELINES__TASKS_URL"],
        tasks_name=env["GATEWAY_PIPELINES__TASKS_NAME"],
        tasks_concurrency=1,
    )
    tasks = tasks_extension(settings, namespace="pipelines")
    gateway = FastMCP("gateway")
    gateway.add_extension(tasks)
    gateway.mount(create_server(settings, tasks=tasks), namespace="pipelines")
    async with Client(gateway) as client:
        run_ids = []
        for minimum in (10, 20, 30, 40):
            started = await client.call_tool(
                "pipelines_start_run", {"name": "order_totals", "inputs": {"minimum": minimum}}
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
    assert {r["status"] for r in results.values()} == {"completed"}, results
    executors = {psutil.Process(r["result"]["run"]["worker_pid"]).ppid() for r in results.values()}
    assert process.pid in executors  # the worker process took some, with the folder's module
    rows = [results[i]["result"]["outputs"]["totals"]["rows"] for i in run_ids]
    assert rows == [[[5, 150]], [[4, 140]], [[3, 120]], [[2, 90]]]


async def test_a_run_worker_lets_the_file_go_when_idle_and_waits_for_a_writer(own):
    settings = GatewaySettings.load(
        data_dir=own["data"],
        mcpServers={},
        sql={"database": own["database"], "idle_release_s": 0.2, "lock_wait_s": 1.0},
        pipelines={"paths": [own["folder"]]},
    )
    async with Client(create_gateway(settings)) as client:
        first = await client.call_tool("pipelines_run_order_totals", {"minimum": 0})
        # The gateway and its idle run worker let the file go: the writer gets it and commits.
        with (
            writer(own["database"], "INSERT INTO orders VALUES (6, 60)"),
            pytest.raises(ToolError) as refused,
        ):
            await client.call_tool("pipelines_run_order_totals", {"minimum": 0})
        after = await client.call_tool("pipelines_run_order_totals", {"minimum": 0})
    assert first.structured_content["outputs"]["totals"]["rows"] == [[5, 150]]
    assert "The database is being written by another process; try again shortly." in str(
        refused.value
    )
    assert after.structured_content["outputs"]["totals"]["rows"] == [[6, 210]]
