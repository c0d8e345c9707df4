"""Large results: a handle to page through every row, downloads as CSV and Parquet, expiry and
bounded storage."""

import io
import json
from pathlib import Path

import anyio
import httpx
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest
from fastmcp import Client
from fastmcp.exceptions import ToolError

from servers.settings import GatewaySettings
from servers.sql.result_store import CHUNK_ROWS
from tests.sql_fixtures import private_server


@pytest.fixture
def server(data_dir, tmp_path):
    return private_server(data_dir, tmp_path, max_rows=100)


async def first_page(client: Client, sql: str) -> dict:
    return (await client.call_tool("query", {"sql": sql})).structured_content


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_paging_through_a_handle_reaches_the_last_row_in_order(server, mode):
    async with Client(server, mode=mode) as client:
        page = await first_page(client, "SELECT range AS i FROM range(1234) ORDER BY i")
        handle = page["result"]
        assert page["truncated"] and handle["uri"] == f"sql://results/{handle['id']}"
        seen, offset = [], 0
        with anyio.fail_after(20):
            while offset is not None:
                next_page = await client.call_tool(
                    "read_result", {"result_id": handle["id"], "offset": offset}
                )
                seen += [row[0] for row in next_page.structured_content["rows"]]
                offset = next_page.structured_content["next_offset"]
        assert seen == list(range(1234))
        assert next_page.structured_content["complete"] is True


async def test_the_first_page_of_the_handle_is_the_page_the_query_returned(server):
    async with Client(server) as client:
        page = await first_page(client, "SELECT range AS i, range * 2 AS j FROM range(500)")
        again = await client.call_tool(
            "read_result", {"result_id": page["result"]["id"], "limit": 100}
        )
    assert again.structured_content["rows"] == page["rows"]


async def test_a_page_across_a_chunk_boundary_is_continuous(server):
    async with Client(server) as client:
        page = await first_page(client, f"SELECT range AS i FROM range({CHUNK_ROWS + 500})")
        rows = await client.call_tool(
            "read_result",
            {"result_id": page["result"]["id"], "offset": CHUNK_ROWS - 50, "limit": 100},
        )
    assert [r[0] for r in rows.structured_content["rows"]] == list(
        range(CHUNK_ROWS - 50, CHUNK_ROWS + 50)
    )


async def test_pages_can_be_read_as_a_resource(server):
    async with Client(server) as client:
        page = await first_page(client, "SELECT range AS i FROM range(250)")
        contents = await client.read_resource(f"{page['result']['uri']}?offset=200&limit=100")
    data = json.loads(contents[0].text)
    assert [r[0] for r in data["rows"]] == list(range(200, 250))
    assert data["next_offset"] is None


async def test_an_unknown_handle_is_a_clear_error(server):
    async with Client(server) as client:
        with pytest.raises(ToolError, match="expired .* or never existed"):
            await client.call_tool("read_result", {"result_id": "nope"})


async def test_a_person_can_download_the_whole_result_as_csv_and_parquet(server):
    async with Client(server) as client:
        page = await first_page(client, "SELECT range AS i, 'n' || range AS s FROM range(70000)")
    handle = page["result"]
    transport = httpx.ASGITransport(app=server.http_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
        csv = await http.get(handle["csv"])
        parquet = await http.get(handle["parquet"])
        missing = await http.get("/sql/results/nope.csv")
    table = pa_csv.read_csv(io.BytesIO(csv.content))
    assert csv.status_code == 200 and table.num_rows == 70000
    assert table.column("s")[69999].as_py() == "n69999"
    assert pq.read_table(io.BytesIO(parquet.content)).num_rows == 70000
    assert missing.status_code == 404 and "never existed" in missing.json()["error"]


def stored_results(tmp_path: Path) -> Path:
    """Where a private_server keeps its stored results (its data_dir is tmp_path/data)."""
    return GatewaySettings.load(data_dir=tmp_path / "data").results_dir


async def test_handles_expire(data_dir, tmp_path):
    server = private_server(data_dir, tmp_path, max_rows=10, results_ttl_s=0.3)
    async with Client(server) as client:
        page = await first_page(client, "SELECT range FROM range(100)")
        await anyio.sleep(0.5)  # let the handle's lifetime pass
        with pytest.raises(ToolError, match="expired"):
            await client.call_tool("read_result", {"result_id": page["result"]["id"]})
    assert not [p for p in stored_results(tmp_path).rglob("*") if p.is_file()]


async def test_storage_is_bounded_and_a_cut_result_says_why(data_dir, tmp_path):
    server = private_server(data_dir, tmp_path, max_rows=10, results_max_bytes=1_000_000)
    async with Client(server) as client:
        page = await first_page(client, "SELECT range, md5(range::VARCHAR) FROM range(3000000)")
        last = await client.call_tool(
            "read_result", {"result_id": page["result"]["id"], "offset": 2_999_990}
        )
    data = last.structured_content
    assert data["complete"] is False and data["stopped"] == "storage"
    assert data["rows"] == [] and "full" in data["hint"]
    stored = sum(p.stat().st_size for p in stored_results(tmp_path).rglob("*"))
    assert stored < 1_000_000 + 2 * CHUNK_ROWS * 50  # at most one chunk past the bound


async def test_with_storing_off_a_truncated_result_says_it_has_no_handle(data_dir, tmp_path):
    server = private_server(data_dir, tmp_path, max_rows=10, results_max_running=0)
    async with Client(server) as client:
        page = await first_page(client, "SELECT range FROM range(100)")
    assert page["result"] is None and "not stored" in page["hint"]


async def test_a_long_query_reports_progress_to_a_client_that_asks(data_dir, tmp_path):
    # A query limit far above the query's own time: on a loaded machine it runs much longer.
    server = private_server(data_dir, tmp_path, progress_interval_s=0.2, query_timeout_s=600)
    reports: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        reports.append((progress, total, message))

    logs: list[str] = []

    async def on_log(message) -> None:
        logs.append(message.data["msg"] if isinstance(message.data, dict) else str(message.data))

    async with Client(server, progress_handler=on_progress, log_handler=on_log) as client:
        with anyio.fail_after(600):
            await first_page(client, "SELECT count(*) FROM range(1500000000) t(x) WHERE x % 7 = 3")
    assert reports, "no progress notification arrived"
    assert len(logs) == 1 and "still running" in logs[0]
    assert all(total == 100 and 0 <= progress <= 100 for progress, total, _ in reports)
    assert "% done" in reports[-1][2]


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_summarize_asks_the_clients_model_in_either_era(server, mode):
    asked: list[str] = []

    async def sampling(messages, params, context) -> str:
        asked.append(messages[0].content.text)
        return "Ids count up from zero."

    async with Client(server, mode=mode, sampling_handler=sampling) as client:
        result = await client.call_tool(
            "query", {"sql": "SELECT range AS id FROM range(1000)", "summarize": True}
        )
    assert result.structured_content["summary"] == "Ids count up from zero."
    assert result.structured_content["rows"][:2] == [[0], [1]]
    assert len(asked) == 1 and "cut at 100 rows" in asked[0] and "id (BIGINT)" in asked[0]


async def test_summarize_without_client_support_says_so_and_still_answers(server):
    async with Client(server) as client:
        result = await client.call_tool(
            "query", {"sql": "SELECT range FROM range(1000)", "summarize": True}
        )
    assert result.structured_content["summary"] is None
    assert "does not support sampling" in result.structured_content["summary_note"]
    assert result.structured_content["row_count"] == 100


def test_stores_sharing_a_directory_serve_each_others_results_and_remove_only_expired_ones(
    tmp_path,
):
    import json
    import os

    import pyarrow as pa

    from servers.results import Column
    from servers.settings import SqlSettings
    from servers.sql.result_store import ResultStore

    root = tmp_path / "results"
    legacy = root / "999999999-abcd"  # an older version's per-process store, long untouched
    legacy.mkdir(parents=True)
    (legacy / "000000.arrow").write_bytes(b"stale")
    os.utime(legacy, (0, 0))
    expired = root / "expired-result"
    expired.mkdir()
    (expired / "index.json").write_text(json.dumps({"expires_at": 1.0}))
    settings = SqlSettings(results_ttl_s=600)
    first = ResultStore(root, settings)
    kept = first.reserve([Column(name="x", type="BIGINT")])
    batch = pa.record_batch({"x": pa.array(range(10), pa.int64())})
    first.fill(kept, [batch], pa.RecordBatchReader.from_batches(batch.schema, []))
    second = ResultStore(root, settings)  # another process, as far as the store can tell
    page = second.page(kept.id, 8, 5, 1_000_000)
    assert page["rows"] == [[8], [9]] and page["complete"] and page["next_offset"] is None
    assert kept.directory.exists()
    assert not legacy.exists() and not expired.exists()
