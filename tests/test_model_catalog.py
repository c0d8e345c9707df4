"""The catalog bill: what tools/list costs the model that reads it, before the user asks anything.

Model-visible part: each tool's name, description and input schema as compact JSON, in tokens
estimated as bytes / 4; the whole tools/list result as sent. Targets (issue 17): at most 2,500
tokens and 16 KB for the default gateway, at most 150 tokens per further pipeline and 100 per
canned query. docs/benchmarks.md records the same figures per namespace (`python -m
tests.test_model_catalog` prints them).
"""

import asyncio
import json
import sys
import tempfile
from pathlib import Path

import pytest
from fastmcp import Client
from fastmcp.exceptions import ToolError

from pipelines import registry
from servers.settings import GatewaySettings
from tests.conftest import wait_for_backend

MODEL_TOKENS = 2_500
LISTING_BYTES = 16 * 1024
PER_PIPELINE_TOKENS = 150
PER_CANNED_TOKENS = 100

CANNED = {
    "delays_from": {
        "title": "Departure delays from one airport",
        "description": "Mean departure delay per carrier from one NYC airport in one month.",
        "sql": "SELECT carrier, avg(dep_delay) AS mean_delay FROM flights "
        "WHERE origin = $origin AND month = $month GROUP BY carrier",
        "parameters": {
            "origin": {"enum": ["EWR", "JFK", "LGA"], "description": "NYC airport"},
            "month": {"type": "integer", "minimum": 1, "maximum": 12},
        },
    }
}


def model_tokens(tool) -> int:
    seen = {"name": tool.name, "description": tool.description, "inputSchema": tool.inputSchema}
    return -(-len(json.dumps(seen, separators=(",", ":"), ensure_ascii=False).encode()) // 4)


async def bill(client: Client) -> dict:
    """Tokens per namespace, the total, and the bytes of the whole listing."""
    listed = await client.session.list_tools()
    per_namespace: dict[str, int] = {}
    for tool in listed.tools:
        namespace = tool.name.split("_")[0]
        per_namespace[namespace] = per_namespace.get(namespace, 0) + model_tokens(tool)
    return {
        "tokens": sum(per_namespace.values()),
        "namespaces": per_namespace,
        "listing_bytes": len(listed.model_dump_json(by_alias=True, exclude_none=True).encode()),
        "tools": {tool.name: tool for tool in listed.tools},
    }


def gateway_without_backends(data_dir: Path, served=None, **sql):
    from gateway import create_gateway

    settings = GatewaySettings.load(data_dir=data_dir, mcpServers={}, sql=sql)
    return create_gateway(settings, served_pipelines=served)


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_the_default_gateway_listing_fits_the_model_budget(gateway, mode):
    async with Client(gateway, mode=mode) as client:
        await wait_for_backend(client, "demo")
        seen = await bill(client)
    assert {"sql", "pipelines", "demo"} <= set(seen["namespaces"])
    assert seen["tokens"] <= MODEL_TOKENS, seen["namespaces"]
    assert seen["listing_bytes"] <= LISTING_BYTES


async def test_no_tool_sends_an_empty_output_schema_or_null_branches(client):
    seen = await bill(client)
    for name, tool in seen["tools"].items():
        assert tool.outputSchema != {"type": "object", "additionalProperties": True}, name
        assert '{"type": "null"}' not in json.dumps(tool.inputSchema), name
        assert len(tool.description) <= 300, name


async def test_an_optional_argument_listed_without_null_still_accepts_null(client):
    result = await client.call_tool("sql_query", {"sql": "SELECT 1 AS one", "max_rows": None})
    assert result.structured_content["rows"] == [[1]]
    with pytest.raises(ToolError, match="rows is not an argument"):
        await client.call_tool("sql_query", {"sql": "SELECT 1", "rows": 3})


async def test_each_further_pipeline_and_canned_query_stays_within_its_share(data_dir):
    pipelines = dict(registry())
    async with Client(gateway_without_backends(data_dir, pipelines)) as client:
        full = await bill(client)
    added = {}
    for name in pipelines:
        without = {k: v for k, v in pipelines.items() if k != name}
        async with Client(gateway_without_backends(data_dir, without)) as client:
            added[name] = full["tokens"] - (await bill(client))["tokens"]
    canned_gateway = gateway_without_backends(data_dir, pipelines, canned_queries=CANNED)
    async with Client(canned_gateway) as client:
        canned = await bill(client)
    assert all(0 < tokens <= PER_PIPELINE_TOKENS for tokens in added.values()), added
    assert 0 < canned["tokens"] - full["tokens"] <= PER_CANNED_TOKENS
    assert "sql_delays_from" in canned["tools"]


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_admin_tools_are_unlisted_by_default_yet_callable(gateway, mode):
    async with Client(gateway, mode=mode) as client:
        names = {tool.name for tool in await client.list_tools()}
        status = await client.call_tool("admin_status", {})
    assert not {n for n in names if n.startswith("admin_")}
    assert status.structured_content["status"] in ("ready", "degraded")


async def test_listing_every_namespace_is_a_setting(data_dir):
    from gateway import create_gateway

    settings = GatewaySettings.load(
        data_dir=data_dir, mcpServers={}, tool_search={"unlisted_namespaces": []}
    )
    async with Client(create_gateway(settings)) as client:
        seen = await bill(client)
    assert "admin_status" in seen["tools"]
    assert seen["namespaces"]["admin"] > 0


async def test_the_app_view_is_listed_only_to_clients_that_render_apps(client):
    names = {tool.name for tool in await client.list_tools()}
    assert "sql_chart" in names and "sql_chart_view" not in names


async def test_the_search_threshold_counts_only_the_tools_this_client_is_shown(data_dir):
    from gateway import create_gateway

    async with Client(gateway_without_backends(data_dir)) as client:
        shown = len(await client.list_tools())
    settings = GatewaySettings.load(
        data_dir=data_dir, mcpServers={}, tool_search={"threshold": shown}
    )
    async with Client(create_gateway(settings)) as client:
        names = {tool.name for tool in await client.list_tools()}
    # Counting the unlisted admin tools too would pass the threshold and hide every tool.
    assert "search_tools" not in names and "sql_query" in names


async def _print_bill() -> None:
    from gateway import create_gateway
    from servers.sample_data import ensure_sample_database

    with tempfile.TemporaryDirectory() as directory:
        ensure_sample_database(Path(directory))
        settings = GatewaySettings.load(data_dir=Path(directory))
        async with Client(create_gateway(settings)) as client:
            await wait_for_backend(client, "demo")
            seen = await bill(client)
    print(json.dumps({k: v for k, v in seen.items() if k != "tools"}, indent=1))


if __name__ == "__main__":
    asyncio.run(_print_bill())
    sys.exit(0)
