"""The database file is shared with its writers: let go while idle, reopened on the next query,
waited for while a writer holds it, and a gateway starts (unready) against a locked file.

Writers are real processes (tests/writers.py); the gateway is in-memory or a real process.
"""

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio
import httpx
import pytest
from fastmcp import Client
from fastmcp.exceptions import ToolError

from gateway import create_gateway
from servers.settings import PROJECT_ROOT, GatewaySettings
from servers.sql.server import create_server
from tests.conftest import free_port, wait_until_serving
from tests.writers import make_database, poll, write, writer

pytestmark = pytest.mark.slow


def _settings(tmp_path: Path, database: Path, **sql) -> GatewaySettings:
    sql = {"database": database, "idle_release_s": 0.2, "lock_wait_s": 1.0, **sql}
    return GatewaySettings.load(data_dir=tmp_path / "data", mcpServers={}, sql=sql)


async def _until(check, timeout_s: float = 90):
    """Await check() until it returns something truthy (bounded generously)."""
    with anyio.fail_after(timeout_s):
        while not (seen := await check()):
            await anyio.sleep(0.1)
        return seen


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_what_a_writer_commits_while_the_gateway_serves_is_queryable_next(tmp_path, mode):
    database = make_database(tmp_path / "mine.duckdb", "CREATE TABLE sales AS SELECT 1 AS id")
    async with Client(create_gateway(_settings(tmp_path, database)), mode=mode) as client:
        first = await client.call_tool("sql_query", {"sql": "SELECT count(*) AS n FROM sales"})
        assert first.structured_content["rows"] == [[1]]
        # The writer gets the file once the gateway lets it go, and commits.
        write(
            database,
            "CREATE TABLE refunds AS SELECT 7 AS amount; ALTER TABLE sales ADD COLUMN region TEXT",
        )
        names = {t["name"] for t in (await client.call_tool("sql_list_tables", {})).data}
        described = (await client.call_tool("sql_describe_table", {"table": "sales"})).data
        refunds = await client.call_tool("sql_query", {"sql": "SELECT amount FROM refunds"})
        schema = await client.read_resource("sql://sql/tables/refunds/schema")
    assert names == {"sales", "refunds"}
    assert [c["name"] for c in described["column_list"]] == ["id", "region"]
    assert refunds.structured_content["rows"] == [[7]]
    assert [c["name"] for c in json.loads(schema[0].text)] == ["amount"]


async def test_the_servers_instructions_name_the_tables_a_writer_added(tmp_path):
    database = make_database(tmp_path / "mine.duckdb", "CREATE TABLE sales AS SELECT 1 AS id")
    server = create_server(_settings(tmp_path, database))
    assert "Tables: sales." in server.instructions
    write(database, "CREATE TABLE refunds AS SELECT 7 AS amount")
    async with Client(server) as client:
        await client.call_tool("list_tables", {})
    assert "Tables: refunds, sales." in server.instructions


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_a_query_waits_for_a_writer_then_fails_clearly_and_the_rest_keeps_serving(
    tmp_path, mode
):
    database = make_database(tmp_path / "mine.duckdb", "CREATE TABLE sales AS SELECT 1 AS id")
    async with Client(create_gateway(_settings(tmp_path, database)), mode=mode) as client:
        with writer(database):
            started = time.monotonic()
            with pytest.raises(ToolError) as refused:
                await client.call_tool("sql_query", {"sql": "SELECT * FROM sales"})
            waited = time.monotonic() - started
            status = (await client.call_tool("admin_status", {})).structured_content
            pipelines = await client.call_tool("pipelines_list_pipelines", {})
        answer = await _until(
            lambda: client.call_tool("sql_query", {"sql": "SELECT count(*) FROM sales"})
        )
    message = str(refused.value)
    assert message == "The database is being written by another process; try again shortly."
    assert waited >= 1.0  # it waited lock_wait_s for the writer first
    assert status["mounts"]["sql"]["status"] == "down"
    assert "being written by another process" in status["mounts"]["sql"]["reason"]
    assert pipelines.data == []  # other namespaces answered meanwhile
    assert answer.structured_content["rows"] == [[1]]


async def test_a_gateway_started_against_a_locked_file_serves_once_the_writer_exits(tmp_path):
    database = make_database(tmp_path / "mine.duckdb", "CREATE TABLE sales AS SELECT 1 AS id")
    with writer(database):
        gateway = create_gateway(_settings(tmp_path, database))
        async with Client(gateway) as client:
            down = (await client.call_tool("admin_status", {})).structured_content
    assert down["mounts"]["sql"] == {
        "status": "down",
        "database": "mine.duckdb",
        "reason": "the database is being written by another process",
    }
    async with Client(gateway) as client:

        async def sql_up():
            state = (await client.call_tool("admin_status", {})).structured_content
            return state["mounts"]["sql"]["status"] == "up"

        await _until(sql_up)
        answer = await client.call_tool("sql_query", {"sql": "SELECT id FROM sales"})
    assert answer.structured_content["rows"] == [[1]]


async def test_a_missing_database_starts_the_gateway_and_is_served_once_created(tmp_path):
    database = tmp_path / "later.duckdb"
    async with Client(create_gateway(_settings(tmp_path, database))) as client:
        status = (await client.call_tool("admin_status", {})).structured_content
        with pytest.raises(ToolError, match="does not exist yet"):
            await client.call_tool("sql_list_tables", {})
        write(database, "CREATE TABLE sales AS SELECT 1 AS id")
        names = await _until(lambda: client.call_tool("sql_list_tables", {"detail": "names"}))
    assert status["mounts"]["sql"]["reason"] == "the database file does not exist"
    assert names.data == [{"name": "sales"}]


def test_a_gateway_process_started_on_a_locked_file_becomes_ready_when_the_writer_exits(
    tmp_path,
):
    database = make_database(tmp_path / "mine.duckdb", "CREATE TABLE sales AS SELECT 1 AS id")
    config = tmp_path / "gateway.json"
    config.write_text(json.dumps({"mcpServers": {}}))
    env = {
        "GATEWAY_DATA_DIR": str(tmp_path / "data"),
        "GATEWAY_SQL__DATABASE": str(database),
        "GATEWAY_SQL__IDLE_RELEASE_S": "0.2",
    }
    with writer(database) as held, _gateway_process(config, env) as base:
        unready = httpx.get(f"{base}/ready", timeout=30)
        held.stdin.close()  # the writer commits nothing more and exits
        ready = poll(lambda: httpx.get(f"{base}/ready", timeout=30).status_code == 200)
        report = httpx.get(f"{base}/ready", timeout=30).json()
    assert unready.status_code == 503
    sql = unready.json()["mounts"]["sql"]
    assert sql["reason"] == "the database is being written by another process"
    assert str(tmp_path) not in unready.text
    assert ready and report["mounts"]["sql"]["status"] == "up"


@contextmanager
def _gateway_process(config: Path, env: dict[str, str]) -> Iterator[str]:
    """`gateway.py` as a process on a free port; its base URL once /health answers (start-up
    imports take a while on a loaded machine, hence the generous bound)."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "gateway.py", "--config", str(config), "--port", str(port)],
        cwd=PROJECT_ROOT,
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_until_serving(process, f"http://127.0.0.1:{port}/health", timeout_s=90)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
