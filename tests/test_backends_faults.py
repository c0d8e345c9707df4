"""Backends that fail, proved with real processes on loopback: down at start, killed mid-call,
hung (accepts TCP, never answers), crashing over stdio. The gateway and its local namespaces
keep working; waits are bounded by the backend's timeouts, and by nothing once its circuit is
open; a backend that comes back is used again without restarting the gateway."""

import anyio
import pytest
from fastmcp import Client
from fastmcp.client.messages import MessageHandler
from fastmcp.exceptions import ToolError

from servers.backends.provider import BackendsProvider
from tests.backend_helpers import (
    BackendProcess,
    alive,
    blackhole,
    closed_port_url,
    gateway_with,
    stdio_backend,
)

pytestmark = pytest.mark.slow

MODES = ["auto", "legacy"]
LOCAL_CALL = ("sql_query", {"sql": "SELECT 42 AS answer"})


async def status_of(client: Client, name: str) -> dict:
    return (await client.call_tool("admin_status", {})).structured_content["backends"][name]


async def local_call_answers(client: Client) -> None:
    result = await client.call_tool(*LOCAL_CALL)
    assert result.structured_content["rows"] == [[42]]


@pytest.mark.parametrize("mode", MODES)
async def test_a_backend_down_at_start_leaves_the_gateway_and_its_local_namespaces_working(
    data_dir, mode
):
    gateway = gateway_with(data_dir, down={"url": closed_port_url()})
    async with Client(gateway, mode=mode) as client:
        with anyio.fail_after(60):  # a generous outer bound: the listing waits for no timeout
            names = {tool.name for tool in await client.list_tools()}
        await local_call_answers(client)
        with pytest.raises(ToolError, match="backend 'down' is unavailable: connection refused"):
            await client.call_tool("down_echo", {"text": "x"})
        report = (await client.call_tool("admin_status", {})).structured_content
    assert "sql_query" in names and not [n for n in names if n.startswith("down_")]
    assert report["status"] == "degraded"
    assert report["backends"]["down"]["status"] == "down"
    assert report["backends"]["down"]["catalog"]["state"] == "none"


@pytest.mark.parametrize("mode", MODES)
async def test_a_backend_killed_mid_call_fails_that_call_fast_and_serves_again_once_back(
    data_dir, mode
):
    backend = BackendProcess().start()
    started = anyio.Event()

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        started.set()

    try:
        gateway = gateway_with(data_dir, remote={"url": backend.url, "timeout_s": 30})
        async with Client(gateway, mode=mode, progress_handler=on_progress) as client:

            async def long_call() -> None:
                with pytest.raises(ToolError, match="backend 'remote' is unavailable"):
                    with anyio.fail_after(10):  # well inside its 30 s call timeout
                        await client.call_tool("remote_slow", {"steps": 600, "delay_s": 0.05})

            async with anyio.create_task_group() as group:
                group.start_soon(long_call)
                with anyio.fail_after(10):
                    await started.wait()
                backend.kill()
                await local_call_answers(client)  # while the proxied call is failing
            assert (await status_of(client, "remote"))["status"] == "down"
            backend.start()  # the same port, a new process
            with anyio.fail_after(10):
                assert (await client.call_tool("remote_echo", {"text": "back"})).data == "back"
            assert (await status_of(client, "remote"))["status"] == "up"
    finally:
        backend.stop()


@pytest.mark.parametrize("mode", MODES)
async def test_a_hung_backend_delays_a_listing_at_most_its_timeouts_once_and_then_never(
    data_dir, mode
):
    limits = {"timeout_s": 2, "connect_timeout_s": 2, "circuit_failures": 1, "circuit_reset_s": 60}
    with blackhole() as hole:
        gateway = gateway_with(data_dir, hung={"url": hole.url, **limits})
        async with Client(gateway, mode=mode) as client:
            with anyio.fail_after(30):  # its 2 s connect timeout, once (generous under load)
                names = {tool.name for tool in await client.list_tools()}
                await local_call_answers(client)
            assert "sql_query" in names and not [n for n in names if n.startswith("hung_")]
            status = await status_of(client, "hung")
            with anyio.fail_after(1.5):  # open circuit: below the 2 s a wait would take
                await client.list_tools()
                await local_call_answers(client)
                with pytest.raises(ToolError, match="stopped calling it"):
                    await client.call_tool("hung_echo", {"text": "x"})
    assert status["circuit"]["state"] == "open"
    assert status["error"] == "no answer within the 2 s connect timeout"


async def test_an_open_circuit_refuses_at_once_then_probes_and_closes_when_the_backend_returns(
    data_dir,
):
    backend = BackendProcess().start()
    try:
        entry = {"url": backend.url, "circuit_failures": 2, "circuit_reset_s": 0.5}
        gateway = gateway_with(data_dir, remote=entry)
        async with Client(gateway) as client:
            await client.list_tools()
            backend.kill()
            for _ in range(2):
                with pytest.raises(ToolError, match="connection refused"):
                    await client.call_tool("remote_echo", {"text": "x"})
            with pytest.raises(ToolError, match="after 2 failures in a row"):
                await client.call_tool("remote_echo", {"text": "x"})
            assert (await status_of(client, "remote"))["circuit"]["state"] == "open"
            (provider,) = [p for p in gateway.providers if isinstance(p, BackendsProvider)]
            numbers = provider.metrics()["remote"]  # what a metrics exporter publishes
            assert (numbers["up"], numbers["circuit_state"], numbers["refused_total"]) == (0, 2, 1)
            backend.start()
            with anyio.fail_after(15):  # probes every 0.5 s until one succeeds
                while (await status_of(client, "remote"))["circuit"]["state"] != "closed":
                    await anyio.sleep(0.1)
            assert (await client.call_tool("remote_echo", {"text": "ok"})).data == "ok"
    finally:
        backend.stop()


class ToolListWatcher(MessageHandler):
    def __init__(self) -> None:
        self.changes = 0

    async def on_tool_list_changed(self, message) -> None:
        self.changes += 1


async def remote_tools(client: Client) -> set[str]:
    return {tool.name for tool in await client.list_tools() if tool.name.startswith("remote_")}


async def test_a_down_backends_last_catalog_is_offered_for_the_grace_period_then_withdrawn(
    data_dir,
):
    backend = BackendProcess().start()
    watcher = ToolListWatcher()
    try:
        entry = {"url": backend.url, "stale_grace_s": 1.0, "circuit_reset_s": 0.3}
        gateway = gateway_with(data_dir, remote=entry)
        async with Client(gateway, mode="legacy", message_handler=watcher) as client:
            offered = await remote_tools(client)
            backend.kill()
            with pytest.raises(ToolError, match="unavailable"):
                await client.call_tool("remote_echo", {"text": "x"})
            assert await remote_tools(client) == offered  # stale, still offered
            assert (await status_of(client, "remote"))["catalog"]["state"] == "stale"
            with anyio.fail_after(10):
                while await remote_tools(client):
                    await anyio.sleep(0.1)
            assert (await status_of(client, "remote"))["catalog"]["state"] == "expired"
            with anyio.fail_after(5):
                while not watcher.changes:
                    await anyio.sleep(0.05)
            backend.start()
            with anyio.fail_after(15):  # back: its tools return
                while await remote_tools(client) != offered:
                    await anyio.sleep(0.1)
    finally:
        backend.stop()


async def test_a_crashed_stdio_backend_is_restarted_with_backoff_and_stopped_with_the_gateway(
    data_dir,
):
    entry = {**stdio_backend(), "restart_backoff_s": 0.2, "timeout_s": 10, "connect_timeout_s": 10}
    gateway = gateway_with(data_dir, proc=entry)
    async with Client(gateway) as client:
        first = (await client.call_tool("proc_pid", {})).data
        with pytest.raises(ToolError, match="backend 'proc' is unavailable"):
            await client.call_tool("proc_crash", {})
        with anyio.fail_after(20):
            while True:
                try:
                    second = (await client.call_tool("proc_pid", {})).data
                    break
                except ToolError:
                    await anyio.sleep(0.1)
        status = await status_of(client, "proc")
    assert second != first and not alive(first)
    assert status["restarts"] >= 1 and status["running"]
    with anyio.fail_after(10):  # the gateway stopped: so did its stdio backend
        while alive(second):
            await anyio.sleep(0.05)
