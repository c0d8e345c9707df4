"""Engines and caching: the same pipeline gives the same outputs on every engine, Dask's worker
processes included, and Hamilton's cache serves a repeated run."""

import pytest
from fastmcp import Client
from fastmcp.exceptions import ToolError

from pipelines import Pipeline, carrier_delays, route_profile
from servers.pipelines.server import create_server
from servers.sample_data import ensure_sample_database
from servers.settings import GatewaySettings
from tests.fixtures import slow_pipeline
from tests.pipeline_processes import wait_for_pid, wait_until_gone

pytestmark = pytest.mark.slow

INPUTS = {"start_date": "2013-03-01", "end_date": "2013-05-31", "origin": "EWR"}


async def run_on(engine: str, data_dir) -> dict:
    settings = GatewaySettings.load(data_dir=data_dir, mcpServers={})
    pipelines = {"carrier_delays": Pipeline(carrier_delays, carrier_delays.OUTPUTS, engine=engine)}
    async with Client(create_server(settings, pipelines=pipelines), mode="legacy") as client:
        result = await client.call_tool("run_carrier_delays", INPUTS)
    return result.structured_content["outputs"]


@pytest.fixture(scope="module")
async def local_outputs(data_dir):
    return await run_on("local", data_dir)


@pytest.mark.parametrize("engine", ["threads", "dask"])
async def test_every_engine_gives_the_same_outputs_as_local(engine, data_dir, local_outputs):
    outputs = await run_on(engine, data_dir)
    assert outputs == local_outputs
    assert outputs["carrier_delay_summary"]["origin"] == "EWR"


async def test_a_cached_pipeline_serves_a_repeated_run_from_its_cache(data_dir, tmp_path):
    settings = GatewaySettings.load(
        data_dir=tmp_path, sql={"database": ensure_sample_database(data_dir)}, mcpServers={}
    )
    pipelines = {
        "route_profile": Pipeline(route_profile, route_profile.OUTPUTS, cache=True),
    }
    async with Client(create_server(settings, pipelines=pipelines), mode="legacy") as client:
        first = (await client.call_tool("run_route_profile", {"dest": "SFO"})).structured_content
        again = (await client.call_tool("run_route_profile", {"dest": "SFO"})).structured_content
        other = (await client.call_tool("run_route_profile", {"dest": "ORD"})).structured_content
    assert first["outputs"] == again["outputs"]
    assert first["run"]["cache"]["from_cache"] == 0
    assert again["run"]["cache"]["computed"] == 0
    assert again["run"]["cache"]["from_cache"] >= len(route_profile.OUTPUTS)
    assert other["run"]["cache"]["computed"] >= len(route_profile.OUTPUTS)
    assert other["outputs"]["route_summary"]["dest"] != first["outputs"]["route_summary"]["dest"]


async def test_dask_runs_nodes_in_other_processes_and_a_timeout_kills_them(data_dir, tmp_path):
    settings = GatewaySettings.load(
        data_dir=data_dir,
        mcpServers={},
        pipelines={
            "concurrency": 1,
            # Generous for the warm-up (a local cluster starting on a loaded machine); the slow
            # run is stopped at its own limit, far below its 10 minutes.
            "run_timeout_s": 600,
            "overrides": {"dask_slow": {"run_timeout_s": 30}},
        },
    )
    pipelines = {
        name: Pipeline(slow_pipeline, slow_pipeline.OUTPUTS, engine="dask")
        for name in ("dask_quick", "dask_slow")
    }
    marker = tmp_path / "pid"
    async with Client(create_server(settings, pipelines=pipelines), mode="legacy") as client:
        warm = await client.call_tool("run_dask_quick", {"marker": str(marker), "seconds": 0})
        node_pid = warm.structured_content["outputs"]["quick"]["pid"]
        assert node_pid != warm.structured_content["run"]["worker_pid"]
        marker.unlink()
        with pytest.raises(ToolError, match="ran longer than 30 s"):
            await client.call_tool("run_dask_slow", {"marker": str(marker), "seconds": 600})
    await wait_until_gone(await wait_for_pid(marker))
