"""Draw the README's example chart with the gateway's own sql_chart tool, over the sample data.

uv run python -m docs.make_chart_image      # writes docs/chart-delays-by-month.png
"""

import asyncio
import base64

from fastmcp import Client

from gateway import create_gateway
from servers.settings import PROJECT_ROOT, GatewaySettings

OUTPUT = PROJECT_ROOT / "docs" / "chart-delays-by-month.png"
ARGUMENTS = {
    "sql": "SELECT month, avg(dep_delay) AS departure, avg(arr_delay) AS arrival "
    "FROM flights GROUP BY month ORDER BY month",
    "kind": "bar",
    "title": "Mean delay of flights from New York City by month, 2013",
    "y_label": "mean delay",
    "y_unit": "min",
}


async def main() -> None:
    settings = GatewaySettings.load(data_dir=PROJECT_ROOT / "data", mcpServers={})
    async with Client(create_gateway(settings)) as client:
        result = await client.call_tool("sql_chart", ARGUMENTS)
    image = next(block for block in result.content if block.type == "image")
    OUTPUT.write_bytes(base64.b64decode(image.data))
    print(next(block.text for block in result.content if block.type == "text"))
    print(f"wrote {OUTPUT.relative_to(PROJECT_ROOT)}")


if __name__ == "__main__":
    asyncio.run(main())
