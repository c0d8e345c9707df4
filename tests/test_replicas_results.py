"""Large results any replica serves: two gateway processes sharing a data directory (as replicas
on a shared volume do) page and download each other's stored results, and a replica that
starts or stops deletes none of the other's live results."""

import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest
from fastmcp import Client

from servers.settings import PROJECT_ROOT
from tests.conftest import free_port, wait_until_serving

pytestmark = pytest.mark.slow

ROWS = 150_000  # more than two chunks of the store


@contextmanager
def replica(env: dict[str, str]) -> Iterator[tuple[str, subprocess.Popen]]:
    """A gateway process on a loopback port; its base URL once it answers."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "gateway.py", "--port", str(port)],
        cwd=PROJECT_ROOT,
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(process, f"{base}/health", timeout_s=90)
        yield base, process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture(scope="module")
def shared(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Settings of replicas sharing one data directory (the database read-only beside it)."""
    return {
        "GATEWAY_SQL__DATABASE": str(data_dir / "nycflights13.duckdb"),
        "GATEWAY_DATA_DIR": str(tmp_path_factory.mktemp("shared") / "state"),
        "GATEWAY_SQL__MAX_ROWS": "100",
    }


@pytest.fixture(scope="module")
def replicas(shared: dict[str, str]) -> Iterator[list[str]]:
    with ExitStack() as stack:
        yield [stack.enter_context(replica(shared))[0] for _ in range(2)]


async def stored_on(url: str, mode: str) -> dict:
    sql = f"SELECT range AS i, 'n' || range AS s FROM range({ROWS})"
    async with Client(f"{url}/mcp", mode=mode, timeout=60) as client:
        page = (await client.call_tool("sql_query", {"sql": sql})).structured_content
    assert page["truncated"] and page["result"] is not None
    return page["result"]


async def last_page(url: str, handle: dict, mode: str) -> dict:
    async with Client(f"{url}/mcp", mode=mode, timeout=90) as client:
        page = await client.call_tool(
            "sql_read_result", {"result_id": handle["id"], "offset": ROWS - 10, "limit": 50}
        )
    return page.structured_content


async def downloads_from(url: str, handle: dict) -> tuple[pa.Table, pa.Table]:
    async with httpx.AsyncClient(base_url=url, timeout=90) as http:
        csv = await http.get(handle["csv"])
        parquet = await http.get(handle["parquet"])
    assert csv.status_code == 200 and parquet.status_code == 200
    return pa_csv.read_csv(io.BytesIO(csv.content)), pq.read_table(io.BytesIO(parquet.content))


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_a_handle_made_on_one_replica_is_paged_and_downloaded_through_the_other(
    replicas: list[str], mode: str
):
    a, b = replicas
    handle = await stored_on(a, mode)
    page = await last_page(b, handle, mode)
    assert page["rows"][0] == [ROWS - 10, f"n{ROWS - 10}"]
    assert page["next_offset"] is None and page["complete"] is True
    async with Client(f"{b}/mcp", mode=mode, timeout=90) as client:
        contents = await client.read_resource(f"{handle['uri']}?offset=70000&limit=2")
    assert json.loads(contents[0].text)["rows"] == [[70000, "n70000"], [70001, "n70001"]]
    csv, parquet = await downloads_from(b, handle)
    assert csv.num_rows == ROWS and parquet.num_rows == ROWS
    assert csv.column("s")[ROWS - 1].as_py() == f"n{ROWS - 1}"


async def test_results_outlive_the_replica_that_stored_them_and_a_later_replica_keeps_them(
    shared: dict[str, str],
):
    with replica(shared) as (a, process_a):
        handle = await stored_on(a, "auto")
        await last_page(a, handle, "auto")  # stored completely
    assert process_a.returncode is not None  # replica A is gone, as a stopped container is
    with replica(shared) as (c, _):  # started later, as a new container on the volume
        page = await last_page(c, handle, "legacy")
        csv, _ = await downloads_from(c, handle)
    assert page["rows"][0] == [ROWS - 10, f"n{ROWS - 10}"]
    assert csv.num_rows == ROWS
