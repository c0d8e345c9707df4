"""REST APIs as backends (an OpenAPI spec and a base URL, against a real API on a loopback
port), and tool search once the catalog grows past the threshold."""

import json
from pathlib import Path

import pytest
from fastmcp import Client
from fastmcp.exceptions import ToolError

from gateway import create_gateway
from servers.settings import GatewaySettings
from tests.backend_helpers import closed_port_url, gateway_with
from tests.conftest import serving
from tests.rest_api import SPEC

TOKEN = "api-token-123"


@pytest.fixture(scope="module")
def rest_api():
    with serving(["-m", "tests.rest_api"], {"REST_API_TOKEN": TOKEN}) as base:
        yield base


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["auto", "legacy"])
@pytest.mark.parametrize("spec_from", ["url", "file"])
async def test_a_rest_api_becomes_a_namespace_of_tools_and_resource_templates(
    data_dir, rest_api, tmp_path: Path, monkeypatch, mode, spec_from
):
    monkeypatch.setenv("AIRPORTS_TOKEN", TOKEN)
    spec_file = tmp_path / "airports.json"
    spec_file.write_text(json.dumps(SPEC))
    spec = f"{rest_api}/openapi.json" if spec_from == "url" else str(spec_file)
    entry = {"openapi": spec, "base_url": rest_api, "bearer_token_env": "AIRPORTS_TOKEN"}
    gateway = gateway_with(data_dir, airports=entry)
    async with Client(gateway, mode=mode) as client:
        names = {tool.name for tool in await client.list_tools()}
        templates = {t.uri_template for t in await client.list_resource_templates()}
        distance = await client.call_tool("airports_distance", {"origin": "JFK", "dest": "LAX"})
        airport = await client.read_resource("resource://airports/get_airport/JFK")
        status = (await client.call_tool("admin_status", {})).structured_content
    assert "airports_distance" in names
    assert "resource://airports/get_airport/{code}" in templates
    assert distance.structured_content == {"miles": 2475}
    assert json.loads(airport[0].text) == {"code": "JFK", "name": "John F Kennedy Intl"}
    assert status["backends"]["airports"]["transport"] == "openapi"
    assert TOKEN not in json.dumps(status)


@pytest.mark.slow
async def test_a_rest_api_without_its_token_refuses_and_the_tool_says_so(data_dir, rest_api):
    gateway = gateway_with(
        data_dir, airports={"openapi": f"{rest_api}/openapi.json", "base_url": rest_api}
    )
    async with Client(gateway) as client:
        with pytest.raises(ToolError, match="401"):
            await client.call_tool("airports_distance", {"origin": "JFK", "dest": "LAX"})


async def test_a_rest_api_whose_spec_is_unreachable_is_reported_down_not_fatal(data_dir):
    url = closed_port_url().replace("/mcp", "")
    gateway = gateway_with(data_dir, airports={"openapi": f"{url}/openapi.json", "base_url": url})
    async with Client(gateway) as client:
        names = {tool.name for tool in await client.list_tools()}
        status = (await client.call_tool("admin_status", {})).structured_content
    assert "sql_query" in names
    assert status["backends"]["airports"]["status"] == "down"
    assert status["backends"]["airports"]["spec"] == "not loaded"


def search_gateway(data_dir: Path):
    settings = GatewaySettings.load(data_dir=data_dir, mcpServers={}, tool_search={"threshold": 5})
    gateway = create_gateway(settings)
    gateway.disable(names={"sql_query"})  # hidden from clients: search must not reveal it
    return gateway


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_more_tools_than_the_threshold_turn_the_listing_into_a_search(data_dir, mode):
    async with Client(search_gateway(data_dir), mode=mode) as client:
        names = {tool.name for tool in await client.list_tools()}
        found = (await client.call_tool("search_tools", {"query": "describe a table"})).data
        via_proxy = await client.call_tool(
            "call_tool", {"name": "sql_list_tables", "arguments": {}}
        )
        direct = await client.call_tool("sql_list_tables", {})
    assert names == {"search_tools", "call_tool"}
    assert "sql_describe_table" in {tool["name"] for tool in found}
    assert via_proxy.structured_content == direct.structured_content


async def test_tool_search_never_finds_or_calls_a_hidden_tool(data_dir):
    async with Client(search_gateway(data_dir)) as client:
        found = (await client.call_tool("search_tools", {"query": "sql query select"})).data
        with pytest.raises(ToolError, match="Unknown tool"):
            await client.call_tool("call_tool", {"name": "sql_query", "arguments": {"sql": "1"}})
    assert "sql_query" not in {tool["name"] for tool in found}


async def test_at_or_below_the_threshold_every_tool_is_listed(data_dir):
    settings = GatewaySettings.load(
        data_dir=data_dir, mcpServers={}, tool_search={"threshold": 1000}
    )
    async with Client(create_gateway(settings)) as client:
        names = {tool.name for tool in await client.list_tools()}
    assert "sql_query" in names and "search_tools" not in names
