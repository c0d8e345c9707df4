"""Charts of pipeline outputs: the same chart tool, over a pipeline's table."""

import base64

import pytest
from fastmcp import Client
from fastmcp.exceptions import ToolError

from servers.pipelines.server import create_server

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def server(settings):
    return create_server(settings)


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_a_pipeline_table_is_drawn_as_a_bar_chart(server, mode):
    async with Client(server, mode=mode) as client:
        result = await client.call_tool(
            "chart_output",
            {
                "name": "carrier_delays",
                "output": "carrier_ranking",
                "inputs": {"origin": "JFK"},
                "kind": "bar",
                "x": "carrier",
                "y": "arr_delayed_15_share",
                "title": "Late arrivals by carrier, JFK 2013",
            },
        )
    image = next(block for block in result.content if block.type == "image")
    png = base64.b64decode(image.data)
    assert png.startswith(PNG) and len(png) > 5_000
    data = result.structured_content
    assert data["kind"] == "bar" and len(data["rows"]) >= 5
    description = next(block.text for block in result.content if block.type == "text")
    async with Client(server) as client:
        ranking = (
            await client.call_tool(
                "run_pipeline",
                {
                    "name": "carrier_delays",
                    "inputs": {"origin": "JFK"},
                    "outputs": ["carrier_ranking"],
                },
            )
        ).structured_content["outputs"]["carrier_ranking"]
    names = [c["name"] for c in ranking["columns"]]
    share, carrier = names.index("arr_delayed_15_share"), names.index("carrier")
    best = min(ranking["rows"], key=lambda row: row[share])
    assert description.startswith("Bar chart 'Late arrivals by carrier, JFK 2013'")
    assert f"lowest {best[share]} at {best[carrier]}" in description


async def test_charting_a_summary_output_is_refused_clearly(server):
    async with Client(server) as client:
        with pytest.raises(ToolError, match="not a table"):
            await client.call_tool(
                "chart_output", {"name": "carrier_delays", "output": "carrier_delay_summary"}
            )


async def test_bad_pipeline_inputs_are_refused_as_for_a_run(server):
    async with Client(server) as client:
        with pytest.raises(ToolError, match="origin"):
            await client.call_tool(
                "chart_output",
                {"name": "route_profile", "output": "route_carriers", "inputs": {"origin": "BOS"}},
            )
