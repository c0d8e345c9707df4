"""The composed gateway in memory, in both protocol eras: every namespace lists and answers."""

import pytest
from fastmcp import Client
from fastmcp.exceptions import ToolError

from gateway import create_gateway
from servers.settings import GatewaySettings
from tests.conftest import wait_for_backend

LOCAL_TOOLS = {
    "sql_query",
    "sql_explain",
    "sql_list_tables",
    "sql_describe_table",
    "sql_read_result",
    "sql_chart",
    "sql_chart_view",
    "pipelines_list_pipelines",
    "pipelines_describe_pipeline",
    "pipelines_run_pipeline",
    "pipelines_run_carrier_delays",
    "pipelines_run_route_profile",
    "pipelines_run_weather_delays",
    "pipelines_start_run",
    "pipelines_chart_output",
    "pipelines_get_run",
    "pipelines_cancel_run",
    "admin_status",
    "admin_recent_calls",
    "admin_set_enabled",
    "admin_reload",
    "admin_cancel_run",
    "admin_clear_caches",
}
READ_ONLY_TOOLS = {
    name for name in LOCAL_TOOLS if name.startswith(("sql_", "admin_status", "pipelines_list"))
} | {"pipelines_describe_pipeline", "pipelines_get_run"}
DEMO_TOOLS = {"demo_convert_units", "demo_distance", "demo_convert_time", "demo_countdown"}
# Listed to a local client: admin_* is callable but unlisted by default, and sql_chart_view is
# listed only to clients that render MCP apps (tests/test_model_catalog.py).
LISTED_TOOLS = {n for n in LOCAL_TOOLS if not n.startswith("admin_")} - {"sql_chart_view"}


async def test_every_namespace_lists_its_tools_under_its_prefix(client: Client):
    names = {tool.name for tool in await client.list_tools()}
    assert names == LISTED_TOOLS | DEMO_TOOLS


async def test_resources_templates_and_prompts_carry_their_namespace(client: Client):
    resources = {str(r.uri) for r in await client.list_resources()}
    # The chart view's app renderer (ui://...) is listed by fastmcp's apps support.
    apps = {uri for uri in resources if uri.startswith("ui://")}
    assert resources - apps == {"sql://sql/tables", "sql://sql/cheatsheet", "demo://demo/units"}
    assert apps and all(uri.endswith("/renderer.html") for uri in apps)
    templates = {t.uri_template for t in await client.list_resource_templates()}
    assert templates == {
        "sql://sql/tables/{table}/schema",
        "sql://sql/results/{result_id}{?offset,limit}",
        "pipelines://pipelines/{name}/dag",
        "demo://demo/zones/{region}",
    }
    prompts = {p.name for p in await client.list_prompts()}
    assert prompts == {"sql_explore_dataset", "sql_answer_with_sql", "demo_trip_facts"}


async def test_read_only_tools_say_so(client: Client):
    for tool in await client.list_tools():
        if tool.name in READ_ONLY_TOOLS:
            assert tool.annotations.read_only_hint is True, tool.name
            assert tool.annotations.open_world_hint is False, tool.name


async def test_sql_namespace_answers_a_query_on_the_sample_data(client: Client):
    result = await client.call_tool(
        "sql_query", {"sql": "SELECT count(*) AS flights FROM flights WHERE origin = 'JFK'"}
    )
    assert result.structured_content["rows"] == [[111279]]
    assert result.structured_content["columns"] == [{"name": "flights", "type": "BIGINT"}]


async def test_pipelines_namespace_runs_a_pipeline(client: Client):
    result = await client.call_tool("pipelines_run_route_profile", {"origin": "JFK", "dest": "LAX"})
    summary = result.structured_content["outputs"]["route_summary"]
    monthly = result.structured_content["outputs"]["route_monthly_flights"]
    assert summary["flights"] == 11262
    assert sum(row[1] for row in monthly["rows"]) == 11262


async def test_admin_namespace_reports_every_mount_and_backend(client: Client):
    status = await wait_for_backend(client, "demo")  # "starting" until its process answers
    assert status["status"] == "ready"
    assert set(status["mounts"]) == {"sql", "pipelines"}
    assert status["backends"]["demo"]["status"] == "up"


async def test_proxied_backend_tools_resources_and_prompts_answer(client: Client):
    converted = await client.call_tool(
        "demo_convert_units", {"value": 100, "from_unit": "mi", "to_unit": "km"}
    )
    assert converted.data == {"value": 160.9344, "unit": "km"}
    units = await client.read_resource("demo://demo/units")
    assert '"temperature"' in units[0].text
    zones = await client.read_resource("demo://demo/zones/Europe")
    assert "Europe/London" in zones[0].text
    prompt = await client.get_prompt("demo_trip_facts", {"origin": "JFK", "destination": "LAX"})
    assert "JFK" in prompt.messages[0].content.text


async def test_pipeline_dag_resource_is_mermaid(client: Client):
    contents = await client.read_resource("pipelines://pipelines/route_profile/dag")
    text = contents[0].text
    assert text.startswith("flowchart LR")
    assert "route_summary" in text


async def test_backend_errors_reach_the_client_as_tool_errors(client: Client):
    with pytest.raises(ToolError, match="cannot convert"):
        arguments = {"value": 1, "from_unit": "mi", "to_unit": "C"}
        await client.call_tool("demo_convert_units", arguments)


async def test_unnamespaced_names_are_not_reachable(client: Client):
    with pytest.raises(ToolError, match="Unknown tool"):
        await client.call_tool("query", {"sql": "SELECT 1"})


async def test_a_gateway_without_backends_serves_the_local_namespaces(data_dir):
    settings = GatewaySettings.load(data_dir=data_dir, mcpServers={})
    async with Client(create_gateway(settings)) as client:
        names = {tool.name for tool in await client.list_tools()}
        status = (await client.call_tool("admin_status", {})).structured_content
    assert names == LISTED_TOOLS
    assert status["backends"] == {}


async def test_a_disabled_backend_is_not_mounted(data_dir):
    settings = GatewaySettings.load(
        data_dir=data_dir,
        mcpServers={"demo": {"command": "python", "args": ["-c", "pass"], "enabled": False}},
    )
    async with Client(create_gateway(settings)) as client:
        names = {tool.name for tool in await client.list_tools()}
    assert names == LISTED_TOOLS


async def test_a_result_handle_through_the_gateway_can_be_read(client: Client):
    page = await client.call_tool("sql_query", {"sql": "SELECT range FROM range(600)"})
    handle = page.structured_content["result"]
    assert handle["uri"].startswith("sql://sql/results/")
    contents = await client.read_resource(handle["uri"] + "?offset=590")
    assert '"next_offset":null' in contents[0].text.replace(" ", "")
