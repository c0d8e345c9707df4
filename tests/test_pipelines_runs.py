"""Pipeline runs through the pipelines server: results, refusals, progress, deadlines,
cancellation and background runs. Every run happens in a real worker process."""

import os

import anyio
import pytest
from fastmcp import Client
from fastmcp.exceptions import ToolError

from pipelines import Pipeline, registry
from servers.pipelines.server import create_server
from servers.settings import GatewaySettings
from tests.fixtures import slow_pipeline
from tests.pipeline_processes import group_alive, wait_for_pid, wait_until_gone

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(data_dir):
    """The pipelines server over the real registry plus the slow fixture pipeline, twice: as
    `slow` (the default 60 s limit) and as `slow_limited` (20 s: a warm run of the quick path
    fits in it on a loaded machine, a 10-minute one does not)."""
    settings = GatewaySettings.load(
        data_dir=data_dir,
        mcpServers={},
        sql={"max_rows": 40},
        pipelines={"concurrency": 2, "overrides": {"slow_limited": {"run_timeout_s": 20}}},
    )
    slow = Pipeline(slow_pipeline, slow_pipeline.OUTPUTS)
    return create_server(settings, pipelines={**registry(), "slow": slow, "slow_limited": slow})


@pytest.fixture(params=["auto", "legacy"])
async def client(request, server):
    async with Client(server, mode=request.param) as connected:
        yield connected


async def test_a_typed_run_tool_returns_the_pipelines_numbers(client):
    result = await client.call_tool("run_route_profile", {"origin": "LGA", "dest": "ATL"})
    outputs = result.structured_content["outputs"]
    summary = outputs["route_summary"]
    assert summary["flights"] == 10263
    assert sum(row[1] for row in outputs["route_monthly_flights"]["rows"]) == 10263
    assert result.structured_content["inputs"] == {"origin": "LGA", "dest": "ATL"}


async def test_run_pipeline_computes_only_the_outputs_asked_for(client):
    result = await client.call_tool(
        "run_pipeline",
        {"name": "carrier_delays", "inputs": {"origin": "JFK"}, "outputs": ["carrier_ranking"]},
    )
    outputs = result.structured_content["outputs"]
    assert list(outputs) == ["carrier_ranking"]
    ranking = outputs["carrier_ranking"]
    assert [c["name"] for c in ranking["columns"]][:3] == ["rank", "carrier", "carrier_name"]
    assert [row[0] for row in ranking["rows"]] == list(range(1, ranking["row_count"] + 1))


async def test_a_large_table_is_capped_like_a_sql_result_and_says_so(client):
    result = await client.call_tool(
        "run_pipeline", {"name": "carrier_delays", "outputs": ["delays_by_carrier_month"]}
    )
    table = result.structured_content["outputs"]["delays_by_carrier_month"]
    assert (table["row_count"], table["truncated"], table["truncated_reason"]) == (40, True, "rows")
    assert "first 40 rows" in table["hint"]


@pytest.mark.parametrize(
    ("tool", "arguments", "message"),
    [
        ("run_pipeline", {"name": "flight_delays"}, "no pipeline named 'flight_delays'"),
        ("run_route_profile", {"origin": "BOS"}, "origin: Input should be 'EWR', 'JFK' or 'LGA'"),
        ("run_route_profile", {"dest": 7}, "dest: Input should be a valid string"),
        ("run_carrier_delays", {"min_flights": "many"}, "min_flights: Input should be"),
        ("run_carrier_delays", {"_filtered_flights": "x"}, "Unknown inputs .*_filtered_flights"),
        ("run_pipeline", {"name": "slow"}, "marker: Field required"),
        (
            "run_pipeline",
            {"name": "route_profile", "outputs": ["_route_flights"]},
            "no public output '_route_flights'; choose from route_monthly_flights",
        ),
        (
            "run_pipeline",
            {"name": "route_profile", "inputs": {"route_summary": {}}},
            "Unknown inputs .*route_summary",
        ),
    ],
)
async def test_wrong_calls_are_refused_listing_what_is_expected(client, tool, arguments, message):
    with pytest.raises(ToolError, match=message):
        await client.call_tool(tool, arguments)


async def test_an_error_a_node_raises_reaches_the_client_as_its_message(client):
    inputs = {"start_date": "2013-06-01", "end_date": "2013-05-01"}
    with pytest.raises(ToolError, match="start_date \\(2013-06-01\\) is after end_date"):
        await client.call_tool("run_carrier_delays", inputs)


async def test_a_client_receives_node_progress_and_log_lines(server):
    progress, logs = [], []

    async def on_progress(done, total, message):
        progress.append((done, total, message))

    async def on_log(params):
        logs.append(params.data["msg"])

    # A legacy client runs in the foreground: progress arrives as notifications.
    async with Client(
        server, mode="legacy", progress_handler=on_progress, log_handler=on_log
    ) as client:
        await client.call_tool("run_route_profile", {})
    total = progress[-1][1]
    assert total >= 5
    assert [p[0] for p in progress] == list(range(1, int(total) + 1))
    assert progress[0][2].startswith(f"route_profile: 1/{total:g} nodes done, last ")
    assert any("last route_summary" in p[2] for p in progress)
    assert logs[0].startswith("Running pipeline route_profile")
    assert logs[-1].startswith("Pipeline route_profile finished in")


async def test_a_background_run_reports_node_progress_then_its_result(server, tmp_path):
    marker = tmp_path / "pid"
    async with Client(server) as client:
        started = await client.call_tool(
            "start_run",
            {"name": "slow", "inputs": {"marker": str(marker), "seconds": 0.8}},
        )
        run_id = started.data["run_id"]
        seen = set()
        with anyio.fail_after(30):
            while (status := (await client.call_tool("get_run", {"run_id": run_id})).data)[
                "status"
            ] == "working":
                seen.add(status.get("progress"))
                await anyio.sleep(0.1)
    assert status["status"] == "completed", status
    assert any(p and "nodes done, last started" in p for p in seen)
    assert status["result"]["outputs"]["quick"] == {"pid": int(marker.read_text())}


async def test_a_run_past_its_deadline_is_stopped_and_its_worker_is_gone(client, tmp_path):
    marker = tmp_path / "pid"
    arguments = {"marker": str(marker), "seconds": 0}
    await client.call_tool("run_slow_limited", arguments)  # a warm worker: the clock is the run's
    marker.unlink()
    stopped = "ran longer than 20 s and was stopped"
    with anyio.fail_after(300), pytest.raises(ToolError, match=stopped):
        await client.call_tool("run_slow_limited", {**arguments, "seconds": 600})
    killed = await wait_for_pid(marker)
    await wait_until_gone(killed)
    # The server stays responsive and the next run gets a fresh worker.
    result = await client.call_tool("run_slow_limited", arguments)
    assert result.structured_content["outputs"]["quick"]["pid"] != killed


async def test_the_event_loop_answers_while_a_run_works(server, tmp_path):
    marker = tmp_path / "pid"
    async with Client(server, mode="legacy") as client:
        async with anyio.create_task_group() as group:
            group.start_soon(client.call_tool, "run_slow", {"marker": str(marker), "seconds": 60})
            pid = await wait_for_pid(marker)
            with anyio.fail_after(50):  # the run goes on for a minute
                listed = await client.call_tool("list_pipelines", {})
            assert group_alive(pid)
            # The worker yields the CPU to the server's fast calls (pipelines.worker_nice).
            assert os.getpriority(os.PRIO_PROCESS, pid) == min(19, os.nice(0) + 10)
            group.cancel_scope.cancel()
        assert "slow" in {p["name"] for p in listed.structured_content["result"]}
        await wait_until_gone(pid)


async def test_a_client_cancelling_its_call_kills_the_run(server, tmp_path):
    marker = tmp_path / "pid"
    async with Client(server, mode="legacy") as client:
        async with anyio.create_task_group() as group:
            group.start_soon(client.call_tool, "run_slow", {"marker": str(marker), "seconds": 60})
            pid = await wait_for_pid(marker)
            group.cancel_scope.cancel()  # the client gives up: its request is cancelled
        await wait_until_gone(pid)


async def test_cancel_run_stops_a_background_run_and_kills_its_worker(server, tmp_path):
    marker = tmp_path / "pid"
    async with Client(server) as client:
        started = await client.call_tool(
            "start_run", {"name": "slow", "inputs": {"marker": str(marker), "seconds": 60}}
        )
        run_id = started.data["run_id"]
        pid = await wait_for_pid(marker)
        cancelled = await client.call_tool("cancel_run", {"run_id": run_id})
        assert cancelled.data["status"] == "cancelled"
        await wait_until_gone(pid)
        assert (await client.call_tool("get_run", {"run_id": run_id})).data["status"] == "cancelled"


async def test_an_unknown_run_id_is_refused_with_what_to_do(client):
    with pytest.raises(ToolError, match="no background run 'nope'.*start_run"):
        await client.call_tool("get_run", {"run_id": "nope"})


async def test_start_run_checks_inputs_before_queueing(client):
    with pytest.raises(ToolError, match="origin: Input should be"):
        await client.call_tool("start_run", {"name": "route_profile", "inputs": {"origin": "X"}})
