"""Several sources (GATEWAY_SQL__SOURCES): DuckDB files attached read-only, folders of Parquet,
CSV and JSON files as views, files added and removed seen without a restart, the same gate and
readable-directories rules, and clear start-up errors."""

import json
import time
from pathlib import Path

import anyio
import duckdb
import pytest
from fastmcp import Client
from fastmcp.exceptions import ToolError

from gateway import create_gateway, main
from servers.settings import GatewaySettings
from tests.writers import make_database, writer

pytestmark = pytest.mark.slow


def _copy_to(sql: str, target: Path) -> None:
    """Write a file with DuckDB in memory (never the engine's files)."""
    con = duckdb.connect()
    con.execute(f"COPY ({sql}) TO '{target}'")
    con.close()


@pytest.fixture
def world(tmp_path) -> dict[str, Path]:
    """A database of one's own, a DuckDB file of orders, and a folder of Parquet and CSV."""
    lake = tmp_path / "lake"
    lake.mkdir()
    _copy_to("SELECT range AS id, range * 2 AS amount FROM range(5)", lake / "payments.parquet")
    _copy_to("SELECT 'EWR' AS code, 'Newark' AS city", lake / "airports.csv")
    return {
        "database": make_database(tmp_path / "mine.duckdb", "CREATE TABLE notes AS SELECT 1 n"),
        "shop": make_database(tmp_path / "shop.duckdb", "CREATE TABLE orders AS SELECT 9 total"),
        "lake": lake,
    }


def _settings(tmp_path: Path, world: dict[str, Path], **sql) -> GatewaySettings:
    sources = {"shop": world["shop"], "lake": world["lake"]}
    sql = {"database": world["database"], "sources": sources, "idle_release_s": 0.2, **sql}
    return GatewaySettings.load(data_dir=tmp_path / "data", mcpServers={}, sql=sql)


async def _names(client: Client) -> set[str]:
    tables = await client.call_tool("sql_list_tables", {"detail": "names"})
    return {t["name"] for t in tables.data}


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_every_source_is_listed_described_and_queryable(tmp_path, world, mode):
    async with Client(create_gateway(_settings(tmp_path, world)), mode=mode) as client:
        names = await _names(client)
        orders = await client.call_tool("sql_query", {"sql": "SELECT total FROM shop.orders"})
        joined = await client.call_tool(
            "sql_query",
            {"sql": "SELECT sum(amount) FROM lake.payments, notes WHERE n = 1"},
        )
        described = (await client.call_tool("sql_describe_table", {"table": "lake.airports"})).data
        resource = await client.read_resource("sql://sql/tables")
        schema = await client.read_resource("sql://sql/tables/lake.payments/schema")
    assert names == {"notes", "shop.orders", "lake.payments", "lake.airports"}
    assert orders.structured_content["rows"] == [[9]]
    assert joined.structured_content["rows"] == [[20]]
    assert described["sample"]["rows"] == [["EWR", "Newark"]]
    assert {t["name"] for t in json.loads(resource[0].text)} == names
    assert [c["name"] for c in json.loads(schema[0].text)] == ["id", "amount"]


async def test_files_added_to_and_removed_from_a_folder_show_up_without_a_restart(tmp_path, world):
    async with Client(create_gateway(_settings(tmp_path, world))) as client:
        assert "lake.weather" not in await _names(client)
        _copy_to("SELECT 21.5 AS temp", world["lake"] / "weather.csv")
        _copy_to("SELECT 1 AS x", world["lake"] / "extra.parquet")
        (world["lake"] / "payments.parquet").unlink()
        with anyio.fail_after(90):  # seen once the files are opened again after an idle moment
            while await _names(client) != {
                "notes",
                "shop.orders",
                "lake.airports",
                "lake.weather",
                "lake.extra",
            }:
                await anyio.sleep(0.3)
        weather = await client.call_tool("sql_query", {"sql": "SELECT temp FROM lake.weather"})
        with pytest.raises(ToolError, match="payments"):
            await client.call_tool("sql_query", {"sql": "SELECT * FROM lake.payments"})
    assert weather.structured_content["rows"] == [[21.5]]


async def test_a_writer_holding_a_source_makes_its_query_wait_and_fail_while_others_answer(
    tmp_path, world
):
    settings = _settings(tmp_path, world, lock_wait_s=1.0)
    async with Client(create_gateway(settings)) as client:
        with writer(world["shop"], "INSERT INTO orders VALUES (10)"):
            started = time.monotonic()
            with pytest.raises(ToolError) as refused:
                await client.call_tool("sql_query", {"sql": "SELECT * FROM shop.orders"})
            waited = time.monotonic() - started
            names = await _names(client)
            lake = await client.call_tool(
                "sql_query", {"sql": "SELECT count(*) FROM lake.payments"}
            )
        with anyio.fail_after(90):
            while True:
                try:
                    after = await client.call_tool(
                        "sql_query", {"sql": "SELECT sum(total) FROM shop.orders"}
                    )
                    break
                except ToolError:
                    await anyio.sleep(0.2)
    assert str(refused.value) == (
        "The source shop is being written by another process; try again shortly."
    )
    assert waited >= 1.0
    assert {"notes", "lake.payments", "lake.airports"} <= names
    assert lake.structured_content["rows"] == [[5]]
    assert after.structured_content["rows"] == [[19]]  # what the writer committed


async def test_sources_keep_the_gate_and_the_readable_directories(tmp_path, world):
    outside_csv = tmp_path / "outside.csv"
    outside_csv.write_text("secret\n1\n")
    async with Client(create_gateway(_settings(tmp_path, world))) as client:
        with pytest.raises(ToolError, match="read-only") as write:
            await client.call_tool("sql_query", {"sql": "INSERT INTO shop.orders VALUES (1)"})
        with pytest.raises(ToolError, match="only the served database"):
            await client.call_tool("sql_query", {"sql": f"ATTACH '{world['shop']}' AS again"})
        with pytest.raises(ToolError, match="Files and network locations") as outside:
            await client.call_tool("sql_query", {"sql": f"SELECT * FROM read_csv('{outside_csv}')"})
        in_folder = await client.call_tool(
            "sql_query", {"sql": f"SELECT city FROM read_csv('{world['lake']}/airports.csv')"}
        )
    assert str(tmp_path) not in str(write.value)
    assert "outside.csv" in str(outside.value)  # the path the client wrote, nothing more
    assert in_folder.structured_content["rows"] == [["Newark"]]
    con = duckdb.connect(str(world["shop"]), read_only=True)
    assert con.execute("SELECT total FROM orders").fetchall() == [(9,)]
    con.close()


def test_a_source_that_is_neither_a_duckdb_file_nor_a_folder_stops_start_up(
    tmp_path, world, capsys
):
    stray = tmp_path / "notes.txt"
    stray.write_text("not data")
    config = tmp_path / "gateway.json"
    config.write_text(
        json.dumps(
            {
                "data_dir": str(tmp_path / "data"),
                "mcpServers": {},
                "sql": {"database": str(world["database"]), "sources": {"notes": str(stray)}},
            }
        )
    )
    assert main(["--config", str(config)]) == 2
    error = capsys.readouterr().err
    assert "GATEWAY_SQL__SOURCES entry 'notes'" in error
    assert "neither a DuckDB database file nor a folder" in error


def test_a_csv_file_as_the_database_stops_start_up_saying_how_to_serve_it(tmp_path, capsys):
    csv = tmp_path / "sales.csv"
    csv.write_text("id,amount\n1,2\n")
    config = tmp_path / "gateway.json"
    config.write_text(
        json.dumps(
            {"data_dir": str(tmp_path / "data"), "mcpServers": {}, "sql": {"database": str(csv)}}
        )
    )
    assert main(["--config", str(config)]) == 2
    error = capsys.readouterr().err
    assert "not a DuckDB database" in error
    assert "GATEWAY_SQL__SOURCES" in error
