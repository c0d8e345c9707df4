"""Discovery (list_tables, describe_table with statistics), canned queries with typed parameters,
the ad-hoc SQL switch, resources, prompts and the server's instructions."""

import json
import shutil

import duckdb
import pytest
from fastmcp import Client
from fastmcp.exceptions import ToolError
from pydantic import ValidationError

from servers.sample_data import ensure_sample_database
from servers.settings import GatewaySettings
from servers.sql.server import create_server
from tests.sql_fixtures import private_server

CANNED = {
    "delays_by_origin": {
        "title": "Departure delays from one airport",
        "description": "Mean departure delay per carrier from one NYC airport in one month.",
        "sql": "SELECT carrier, round(avg(dep_delay), 2) AS mean_delay, count(*) AS flights "
        "FROM flights WHERE origin = $origin AND month = $month "
        "GROUP BY carrier HAVING count(*) >= $min_flights ORDER BY carrier",
        "parameters": {
            "origin": {"enum": ["EWR", "JFK", "LGA"], "description": "NYC airport"},
            "month": {"type": "integer", "minimum": 1, "maximum": 12},
            "min_flights": {"type": "integer", "minimum": 1, "default": 1},
        },
        "max_rows": 50,
    },
    "airline_named": {
        "description": "The airline with this name.",
        "sql": "SELECT carrier, name FROM airlines WHERE name = $name",
        "parameters": {"name": {"description": "Full airline name", "max_length": 60}},
    },
}


@pytest.fixture(scope="module")
def server(settings):
    return create_server(settings)


@pytest.fixture(scope="module")
async def client(server):
    async with Client(server) as connected:
        yield connected


@pytest.fixture(scope="module")
async def canned(data_dir, tmp_path_factory):
    server = private_server(data_dir, tmp_path_factory.mktemp("canned"), canned_queries=CANNED)
    async with Client(server) as connected:
        yield connected


async def test_list_tables_gives_rows_columns_and_comments(client):
    tables = (await client.call_tool("list_tables", {"pattern": "fl%"})).structured_content
    assert tables["result"] == [
        {
            "name": "flights",
            "kind": "table",
            "comment": tables["result"][0]["comment"],
            "row_estimate": 336776,
            "columns": 19,
        }
    ]
    names = (await client.call_tool("list_tables", {"detail": "names"})).structured_content
    assert [t["name"] for t in names["result"]] == [
        "airlines",
        "airports",
        "flights",
        "planes",
        "weather",
    ]


async def test_describe_table_checks_the_name_against_the_catalog(client):
    with pytest.raises(ToolError, match="no table or view named 'flights; DROP TABLE x'"):
        await client.call_tool("describe_table", {"table": "flights; DROP TABLE x"})


async def test_describe_table_with_statistics(client):
    description = (
        await client.call_tool("describe_table", {"table": "airlines", "stats": True})
    ).structured_content
    assert [c["name"] for c in description["column_list"]] == ["carrier", "name"]
    assert description["sample"]["row_count"] == 3
    stats = {s["column_name"]: s for s in description["stats"]}
    assert stats["carrier"]["count"] == 16 and stats["carrier"]["min"] == "9E"
    assert "stats_timed_out" not in description


async def test_statistics_that_exceed_their_budget_say_so(data_dir, tmp_path):
    server = private_server(data_dir, tmp_path, stats_timeout_s=0.001)
    async with Client(server) as client:
        description = (
            await client.call_tool("describe_table", {"table": "flights", "stats": True})
        ).structured_content
    assert description["stats_timed_out"] is True and description["stats"] is None
    assert description["column_list"]  # the rest of the description is still there


async def test_canned_queries_are_tools_with_typed_schemas(canned):
    tools = {tool.name: tool for tool in await canned.list_tools()}
    schema = tools["delays_by_origin"].input_schema
    assert schema["properties"]["origin"]["enum"] == ["EWR", "JFK", "LGA"]
    assert schema["properties"]["month"]["minimum"] == 1
    assert schema["properties"]["month"]["maximum"] == 12
    assert set(schema["required"]) == {"origin", "month"}
    assert tools["delays_by_origin"].title == "Departure delays from one airport"
    assert tools["delays_by_origin"].annotations.read_only_hint is True


async def test_a_canned_query_binds_its_parameters(canned, data_dir, tmp_path):
    result = await canned.call_tool(
        "delays_by_origin", {"origin": "JFK", "month": 7, "min_flights": 1000}
    )
    copy = shutil.copyfile(ensure_sample_database(data_dir), tmp_path / "independent.duckdb")
    with duckdb.connect(str(copy), read_only=True) as con:  # an independent reading
        expected = con.execute(
            "SELECT carrier, round(avg(dep_delay), 2), count(*) FROM flights "
            "WHERE origin = 'JFK' AND month = 7 GROUP BY carrier HAVING count(*) >= 1000 "
            "ORDER BY carrier"
        ).fetchall()
    assert result.structured_content["rows"] == [list(row) for row in expected]
    assert len(expected) >= 3


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"origin": "BOS", "month": 1}, "origin"),
        ({"origin": "JFK", "month": 13}, "month"),
        ({"origin": "JFK"}, "month"),
        ({"origin": "JFK", "month": "1; DROP TABLE flights"}, "month"),
        ({"origin": "JFK", "month": 1, "extra": 1}, "extra"),
    ],
)
async def test_bad_canned_arguments_are_refused_before_running(canned, arguments, message):
    with pytest.raises(ToolError, match=message):
        await canned.call_tool("delays_by_origin", arguments)


@pytest.mark.parametrize(
    "attack",
    [
        "United Air Lines Inc.' OR '1'='1",
        "x'; DROP TABLE airlines; --",
        "' UNION SELECT path, 1 FROM duckdb_databases() --",
    ],
)
async def test_injection_in_a_parameter_value_is_just_a_value(canned, attack):
    result = await canned.call_tool("airline_named", {"name": attack})
    assert result.structured_content["rows"] == []
    found = await canned.call_tool("airline_named", {"name": "United Air Lines Inc."})
    assert found.structured_content["rows"] == [["UA", "United Air Lines Inc."]]


async def test_turning_ad_hoc_sql_off_leaves_only_canned_queries(data_dir, tmp_path):
    server = private_server(data_dir, tmp_path, canned_queries=CANNED, allow_ad_hoc_sql=False)
    async with Client(server) as client:
        names = {tool.name for tool in await client.list_tools()}
        with pytest.raises(ToolError, match="Unknown tool"):
            await client.call_tool("query", {"sql": "SELECT 1"})
    assert "query" not in names and "explain" not in names
    assert {"delays_by_origin", "airline_named", "list_tables"} <= names
    assert "ad-hoc SQL is off" in server.instructions


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"description": "x", "sql": "DELETE FROM flights"}, "DELETE statements"),
        ({"description": "x", "sql": "SELECT 1; SELECT 2"}, "exactly one"),
    ],
)
def test_a_canned_query_the_gate_refuses_stops_start_up_naming_it(
    data_dir, tmp_path, entry, message
):
    with pytest.raises(ValueError, match=f"canned query 'bad': .*{message}"):
        private_server(data_dir, tmp_path, canned_queries={"bad": entry})


def test_canned_query_names_and_parameters_are_checked(data_dir, tmp_path):
    with pytest.raises(ValueError, match="canned query 'query'"):
        private_server(
            data_dir, tmp_path, canned_queries={"query": {"description": "x", "sql": "SELECT 1"}}
        )
    with pytest.raises(ValidationError, match=r"uses parameters \['x'\]"):
        GatewaySettings.load(
            sql={"canned_queries": {"q": {"description": "d", "sql": "SELECT $x"}}}
        )


async def test_a_canned_query_cannot_take_the_name_of_one_of_the_servers_own_tools(
    data_dir, tmp_path
):
    entry = {"description": "x", "sql": "SELECT 1"}
    with pytest.raises(ValueError, match="canned query 'chart_view'") as refused:
        private_server(data_dir, tmp_path, canned_queries={"chart_view": entry})
    async with Client(private_server(data_dir, tmp_path)) as client:
        own = sorted(tool.name for tool in await client.list_tools())
    assert own and f"not one of {own}" in str(refused.value)


async def test_resources_list_tables_schemas_and_the_cheat_sheet(client):
    tables = json.loads((await client.read_resource("sql://tables"))[0].text)
    assert {t["name"] for t in tables} >= {"flights", "weather"}
    schema = json.loads((await client.read_resource("sql://tables/planes/schema"))[0].text)
    assert schema[0] == {"name": "tailnum", "type": "VARCHAR", "nullable": True, "comment": None}
    sheet = (await client.read_resource("sql://cheatsheet"))[0].text
    assert "GROUP BY ALL" in sheet
    templates = {t.uri_template for t in await client.list_resource_templates()}
    assert templates == {"sql://tables/{table}/schema", "sql://results/{result_id}{?offset,limit}"}


async def test_prompts_guide_exploration_and_answering(client):
    explore = await client.get_prompt("explore_dataset", {"focus": "weather"})
    answer = await client.get_prompt("answer_with_sql", {"question": "Which carrier is latest?"})
    assert "weather" in explore.messages[0].content.text
    assert "Which carrier is latest?" in answer.messages[0].content.text


def test_instructions_state_the_live_limits_and_tables(server, settings):
    text = server.instructions
    assert f"{settings.sql.max_rows} rows" in text and "flights" in text and "weather" in text


async def test_every_tool_is_read_only_and_closed_world(canned):
    for tool in await canned.list_tools():
        assert tool.annotations.read_only_hint is True, tool.name
        assert tool.annotations.open_world_hint is False, tool.name
