"""Backends that come up, proved with real processes: each backend shows its state (starting,
up, down with the real reason), a stdio process gets its own start-up budget, the first listing
of a fresh gateway waits for backends still starting, a stopped backend is no longer "up", and
a backend that returns is used again as soon as it answers, without waiting out the circuit."""

import sys
import time

import anyio
import pytest
from fastmcp import Client
from fastmcp.exceptions import ToolError

from gateway import create_gateway
from servers.settings import GatewaySettings
from tests.backend_helpers import BackendProcess, gateway_with, stdio_backend
from tests.conftest import wait_for_backend

pytestmark = pytest.mark.slow

MODES = ["auto", "legacy"]


async def status_of(client: Client, name: str) -> dict:
    return (await client.call_tool("admin_status", {})).structured_content["backends"][name]


async def wait_for_error(client: Client, name: str, starting: str = "", timeout_s=60) -> dict:
    """Poll until backend ``name`` is down (with an error starting so); return its status."""
    with anyio.fail_after(timeout_s):
        while True:
            status = await status_of(client, name)
            if status["status"] == "down" and status["error"].startswith(starting):
                return status
            await anyio.sleep(0.1)


@pytest.mark.parametrize("mode", MODES)
async def test_the_first_listing_of_a_fresh_gateway_holds_the_demo_backends_tools(data_dir, mode):
    gateway = create_gateway(GatewaySettings.load(data_dir=data_dir))  # the bundled demo, stdio
    async with Client(gateway, mode=mode) as client:
        names = {tool.name for tool in await client.list_tools()}  # the very first request
        status = await status_of(client, "demo")
    assert {"demo_convert_units", "sql_query", "pipelines_run_pipeline"} <= names, sorted(names)
    assert status["status"] == "up" and status["catalog"]["state"] == "fresh"


async def test_a_wrong_command_is_down_with_command_not_found(data_dir):
    gateway = gateway_with(data_dir, typo={"command": "npx-typo", "args": ["-y", "server"]})
    async with Client(gateway) as client:
        status = await wait_for_error(client, "typo", starting="command not found")
        with pytest.raises(ToolError, match="command not found: npx-typo"):
            await client.call_tool("typo_anything", {})
        numbers = (await client.call_tool("admin_status", {})).structured_content
    assert status["error"].startswith("command not found: npx-typo")
    assert status["last_exit"] == "command not found: npx-typo"
    assert numbers["status"] == "degraded"


async def test_a_backend_that_exits_reports_its_exit_code_and_last_stderr_line(data_dir):
    script = "import sys; print('loading', file=sys.stderr); sys.exit('config.toml: no such table')"
    gateway = gateway_with(data_dir, broken={"command": sys.executable, "args": ["-c", script]})
    async with Client(gateway) as client:
        # The health check itself may time out on a loaded machine: wait for the real reason.
        status = await wait_for_error(client, "broken", starting="exited")
    assert status["error"] == "exited with code 1: config.toml: no such table"
    assert status["running"] is False and "restart_in_s" in status


async def test_a_process_that_never_answers_is_down_after_its_start_up_budget(data_dir):
    entry = {
        "command": sys.executable,
        "args": ["-c", "import time; time.sleep(600)"],
        "start_timeout_s": 1.5,
        "first_listing_wait_s": 0,
    }
    gateway = gateway_with(data_dir, mute=entry)
    async with Client(gateway) as client:
        status = await wait_for_error(client, "mute", starting="no answer within the")
    assert status["error"] == "no answer within the 1.5 s start-up budget"


async def test_a_slow_starting_backend_is_starting_then_announced_when_it_comes_up(data_dir):
    # A backend that takes 3 s to start; the first listing does not wait for it here.
    script = (
        "import time, runpy, sys; time.sleep(3); sys.argv = ['x']; "
        "runpy.run_module('tests.backend_server', run_name='__main__')"
    )
    entry = {**stdio_backend(), "args": ["-c", script], "first_listing_wait_s": 0}
    entry |= {"start_timeout_s": 60, "timeout_s": 10}
    announced = anyio.Event()

    async def on_message(message) -> None:
        if type(message).__name__ == "ToolListChangedNotification":
            announced.set()

    gateway = gateway_with(data_dir, late=entry)
    async with Client(gateway, mode="legacy", message_handler=on_message) as client:
        first = {tool.name for tool in await client.list_tools()}
        state = (await status_of(client, "late"))["status"]
        with anyio.fail_after(90):
            await announced.wait()
        later = {tool.name for tool in await client.list_tools()}
    assert state == "starting" and not [n for n in first if n.startswith("late_")]
    assert "late_echo" in later


async def test_a_stopped_stdio_backend_is_no_longer_shown_up(data_dir):
    entry = {**stdio_backend(), "restart_backoff_s": 30, "restart_backoff_max_s": 30}
    gateway = gateway_with(data_dir, proc=entry)
    async with Client(gateway) as client:
        await wait_for_backend(client, "proc")
        with pytest.raises(ToolError):
            await client.call_tool("proc_crash", {})
        status = await wait_for_error(client, "proc", "exited")
        numbers = (await client.call_tool("admin_status", {})).structured_content
    assert status["error"].startswith("exited with code 3")
    assert status["running"] is False
    assert numbers["status"] == "degraded"


@pytest.mark.parametrize("mode", MODES)
async def test_a_killed_and_restarted_backend_is_used_again_as_soon_as_it_answers(data_dir, mode):
    backend = BackendProcess().start()
    # The circuit would stay open for 10 minutes: only the background probe can close it.
    entry = {"url": backend.url, "circuit_failures": 1, "circuit_reset_s": 600}
    try:
        gateway = gateway_with(data_dir, remote=entry)
        async with Client(gateway, mode=mode) as client:
            assert (await client.call_tool("remote_echo", {"text": "a"})).data == "a"
            backend.kill()
            with pytest.raises(ToolError, match="backend 'remote' is unavailable"):
                await client.call_tool("remote_echo", {"text": "b"})
            await anyio.sleep(3)  # down a while: the probe interval has grown to its cap
            backend.start()  # returns once the new process answers /health
            back_at = time.monotonic()
            with anyio.fail_after(60):  # generous under load; the figure is printed below
                while True:
                    try:
                        answer = (await client.call_tool("remote_echo", {"text": "c"})).data
                        break
                    except ToolError:
                        await anyio.sleep(0.02)
            used_again_s = time.monotonic() - back_at
            status = await status_of(client, "remote")
    finally:
        backend.stop()
    print(f"killed and restarted backend used again {used_again_s:.2f} s after it answered")
    assert answer == "c"
    assert status["status"] == "up" and status["circuit"]["state"] == "closed"
