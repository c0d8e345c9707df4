"""Stdio backends started first: ``servers.backends.launch`` starts their processes before the
gateway composes itself, and each backend's link takes its process over instead of starting
another; processes no link took are stopped."""

import anyio
import psutil
from fastmcp import Client

from gateway import create_gateway
from servers.backends import launch
from servers.settings import GatewaySettings
from tests.backend_helpers import alive, stdio_backend


def backend_children() -> list[psutil.Process]:
    children = []
    for child in psutil.Process().children(recursive=True):
        try:
            if "tests.backend_server" in " ".join(child.cmdline()):
                children.append(child)
        except psutil.Error:  # gone meanwhile
            pass
    return children


async def the_backend_child() -> psutil.Process:
    """The one backend process, once it shows (its command line is readable once it runs)."""
    for _ in range(1200):  # up to about a minute
        if children := backend_children():
            [child] = children
            return child
        await anyio.sleep(0.05)
    seen = [(c.pid, c.status()) for c in psutil.Process().children(recursive=True)]
    raise AssertionError(f"no backend process among this process's children: {seen}")


async def test_the_process_started_early_is_the_one_the_backend_uses(data_dir):
    settings = GatewaySettings.load(data_dir=data_dir, mcpServers={"proc": stdio_backend()})
    await launch.start_early(settings.backends)
    try:
        early = await the_backend_child()  # started before the gateway is even composed
        gateway = create_gateway(settings)
        async with Client(gateway, timeout=60) as client:
            assert (await client.call_tool("proc_pid", {})).data == early.pid
            assert [child.pid for child in backend_children()] == [early.pid]
            status = (await client.call_tool("admin_status", {})).structured_content
            assert status["backends"]["proc"]["restarts"] == 0
    finally:
        await launch.discard_early()


async def test_processes_no_backend_took_are_stopped():
    settings = GatewaySettings.load(mcpServers={"proc": stdio_backend()})
    await launch.start_early(settings.backends)
    early = await the_backend_child()
    await launch.discard_early()
    with anyio.fail_after(60):
        while alive(early.pid):
            await anyio.sleep(0.05)


async def test_disabled_and_unstartable_entries_are_left_to_their_links():
    entries = {
        "off": {**stdio_backend(), "enabled": False},
        "typo": {"command": "npx-typo-not-installed"},
        "nowhere": {**stdio_backend(), "cwd": "/no/such/folder"},
    }
    await launch.start_early(GatewaySettings.load(mcpServers=entries).backends)
    assert backend_children() == []
    await launch.discard_early()
