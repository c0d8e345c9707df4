"""Each sub-server runs on its own with the same factory, over HTTP and over stdio."""

import sys
from pathlib import Path

import pytest
from fastmcp import Client
from fastmcp.client.transports import StdioTransport

from servers.settings import PROJECT_ROOT
from tests.conftest import serving

pytestmark = pytest.mark.slow

EXPECTED = {
    "servers.sql": {"query", "list_tables", "describe_table"},
    "servers.pipelines": {"list_pipelines", "describe_pipeline", "run_pipeline"},
    "servers.admin": {"status"},
    "servers.demo_backend": {"convert_units", "distance", "convert_time", "countdown"},
}


@pytest.mark.parametrize("module", list(EXPECTED))
async def test_sub_server_alone_over_http_answers_tools_list(module, data_dir: Path):
    args = ["-m", module, "--transport", "http"]
    with serving(args, {"GATEWAY_DATA_DIR": str(data_dir)}, ready_path="/mcp") as base:
        async with Client(base + "/mcp") as client:
            names = {tool.name for tool in await client.list_tools()}
    assert EXPECTED[module] <= names


async def test_sql_server_alone_over_stdio_answers_a_query(data_dir: Path):
    transport = StdioTransport(
        command=sys.executable,
        args=["-m", "servers.sql"],
        env={"GATEWAY_DATA_DIR": str(data_dir)},
        cwd=str(PROJECT_ROOT),
        keep_alive=False,
    )
    async with Client(transport) as client:
        result = await client.call_tool("query", {"sql": "SELECT count(*) FROM planes"})
    assert result.structured_content["rows"] == [[3322]]
