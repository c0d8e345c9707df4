"""A person runs a pipeline, then asks questions of its full output with sql_query."""

import pytest
from fastmcp import Client

from servers.settings import GatewaySettings

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def gateway(data_dir):
    from gateway import create_gateway

    settings = GatewaySettings.load(
        data_dir=data_dir, mcpServers={}, sql={"max_rows": 5}, pipelines={"persist_results": True}
    )
    return create_gateway(settings)


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_a_saved_pipeline_table_is_queried_by_name_with_sql_query(gateway, mode):
    async with Client(gateway, mode=mode) as client:
        run = await client.call_tool("pipelines_run_carrier_delays", {"origin": "LGA"})
        saved = run.structured_content["parquet"]
        monthly = run.structured_content["outputs"]["delays_by_carrier_month"]
        assert monthly["truncated"] is True  # only 5 rows inline ...
        assert set(saved) == {
            "delays_by_carrier_month",
            "delays_by_month",
            "carrier_totals",
            "carrier_ranking",
        }
        name = saved["delays_by_carrier_month"]
        assert name.startswith("pipeline_outputs/carrier_delays_") and name.endswith(".parquet")
        query = f"SELECT count(*), sum(flights) FROM '{name}'"
        answer = await client.call_tool("sql_query", {"sql": query})
    # ... but every row is in the saved table: one per carrier and month, all LGA flights.
    rows, flights = answer.structured_content["rows"][0]
    assert rows > 5
    assert flights == run.structured_content["outputs"]["carrier_delay_summary"]["flights"]
