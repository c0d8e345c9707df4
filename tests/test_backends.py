"""Remote backends through the gateway, against a real backend process on a loopback port:
what clients see (names, filters, components), what reaches them (progress, logs, list
changes), what never reaches a backend (local calls, repeated listings) and what never crosses
between clients (session state)."""

import anyio
import pytest
from fastmcp import Client
from fastmcp.client.messages import MessageHandler
from fastmcp.exceptions import ToolError

from tests.backend_helpers import LONG_TOOL_PREFIX, backend_process, gateway_with
from tests.backend_server import LONG_TOOL

pytestmark = pytest.mark.slow

MODES = ["auto", "legacy"]


@pytest.fixture(scope="module")
def backend():
    with backend_process() as running:
        yield running


@pytest.fixture(scope="module")
def handshake_backend():
    with backend_process("--handshake-only") as running:
        yield running


@pytest.mark.parametrize("mode", MODES)
async def test_a_backends_tools_resources_and_prompts_are_offered_under_its_namespace(
    data_dir, backend, mode
):
    gateway = gateway_with(data_dir, remote={"url": backend.url})
    async with Client(gateway, mode=mode) as client:
        names = {tool.name for tool in await client.list_tools()}
        assert {"remote_echo", "remote_slow", "sql_query"} <= names
        assert (await client.call_tool("remote_echo", {"text": "hi"})).data == "hi"
        greeting = await client.read_resource("test://remote/greeting")
        assert greeting[0].text == "hello from the backend"
        item = await client.read_resource("test://remote/items/42")
        assert '"42"' in item[0].text
        prompt = await client.get_prompt("remote_hello", {"name": "Ada"})
        assert "Ada" in prompt.messages[0].content.text


async def test_a_backend_over_the_older_sse_transport_is_offered_too(data_dir):
    with backend_process(transport="sse") as sse_backend:
        gateway = gateway_with(data_dir, old={"url": sse_backend.url})
        async with Client(gateway) as client:
            echoed = (await client.call_tool("old_echo", {"text": "via sse"})).data
            status = (await client.call_tool("admin_status", {})).structured_content
    assert echoed == "via sse"
    assert status["backends"]["old"]["transport"] == "sse"


async def test_a_backends_catalog_is_refreshed_on_a_timer_without_being_told(data_dir):
    with backend_process() as own_backend:
        entry = {"url": own_backend.url, "refresh_interval_s": 0.2}
        gateway = gateway_with(data_dir, remote=entry)
        async with Client(gateway) as client:
            await client.call_tool("remote_grow", {"name": "quiet", "announce": False})
            with anyio.fail_after(10):
                while "remote_quiet" not in {t.name for t in await client.list_tools()}:
                    await anyio.sleep(0.05)


async def test_a_name_too_long_for_clients_is_shortened_and_the_mapping_shown(data_dir, backend):
    gateway = gateway_with(data_dir, remote={"url": backend.url})
    async with Client(gateway) as client:
        names = [tool.name for tool in await client.list_tools()]
        status = (await client.call_tool("admin_status", {})).structured_content
        (short,) = [name for name in names if name.startswith(LONG_TOOL_PREFIX)]
        assert len(short) <= 64
        assert status["backends"]["remote"]["renamed"] == {short: LONG_TOOL}
        assert (await client.call_tool(short, {})).data == "long"


async def test_allow_and_deny_lists_decide_which_backend_tools_are_offered(data_dir, backend):
    entry = {"url": backend.url, "allow_tools": ["e*", "slow", "crash"], "deny_tools": ["crash"]}
    gateway = gateway_with(data_dir, remote=entry)
    async with Client(gateway) as client:
        remote = {t.name for t in await client.list_tools() if t.name.startswith("remote_")}
        status = (await client.call_tool("admin_status", {})).structured_content
        with pytest.raises(ToolError, match="Unknown tool"):
            await client.call_tool("remote_crash", {})
    assert remote == {"remote_echo", "remote_slow"}
    assert "crash" in status["backends"]["remote"]["withheld_tools"]


class Recorder(MessageHandler):
    def __init__(self) -> None:
        self.tool_list_changes = 0

    async def on_tool_list_changed(self, message) -> None:
        self.tool_list_changes += 1


@pytest.mark.parametrize("mode", MODES)
async def test_progress_and_log_messages_from_the_backend_reach_the_caller(data_dir, backend, mode):
    progress, logs = [], []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append((value, total, message))

    async def on_log(message) -> None:
        logs.append(message.data["msg"] if isinstance(message.data, dict) else message.data)

    gateway = gateway_with(data_dir, remote={"url": backend.url})
    async with Client(gateway, mode=mode, progress_handler=on_progress, log_handler=on_log) as c:
        result = await c.call_tool("remote_slow", {"steps": 3, "delay_s": 0.01})
    assert result.data == "3 steps done"
    assert progress == [(1, 3, "step 1"), (2, 3, "step 2"), (3, 3, "step 3")]
    assert logs == ["working on step 1", "working on step 2", "working on step 3"]


@pytest.mark.parametrize("mode", MODES)
async def test_a_backends_tool_list_change_reaches_clients_and_the_new_tool_is_callable(
    data_dir, mode
):
    with backend_process() as own_backend:  # grow changes the backend: not the shared one
        gateway = gateway_with(data_dir, remote={"url": own_backend.url})
        watcher, caller = Recorder(), Recorder()
        async with (
            Client(gateway, mode="legacy", message_handler=watcher) as other,
            Client(gateway, mode=mode, message_handler=caller) as client,
        ):
            assert "remote_added" not in {t.name for t in await client.list_tools()}
            await other.list_tools()  # the other client is connected and listening
            await client.call_tool("remote_grow", {"name": "added"})
            assert "remote_added" in {t.name for t in await client.list_tools()}
            assert (await client.call_tool("remote_added", {"text": "new"})).data == "new"
            with anyio.fail_after(10):
                while not watcher.tool_list_changes:
                    await anyio.sleep(0.02)
        assert caller.tool_list_changes >= 1


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("flavour", ["2026-07-28", "handshake-only"])
async def test_two_clients_calling_one_backend_never_see_each_others_session_state(
    data_dir, backend, handshake_backend, mode, flavour
):
    url = backend.url if flavour == "2026-07-28" else handshake_backend.url
    gateway = gateway_with(data_dir, remote={"url": url})

    async def session_of(value: str) -> list:
        async with Client(gateway, mode=mode) as client:
            await client.call_tool("remote_remember", {"value": value})
            return [(await client.call_tool("remote_recall", {})).data for _ in range(3)]

    results = {}
    async with anyio.create_task_group() as group:
        for value in ("alice", "bob"):

            async def run(value: str = value) -> None:
                results[value] = await session_of(value)

            group.start_soon(run)
    assert "bob" not in results["alice"]
    assert "alice" not in results["bob"]


async def test_repeated_listings_and_calls_are_served_without_relisting_the_backend(
    data_dir, backend
):
    gateway = gateway_with(data_dir, remote={"url": backend.url})
    async with Client(gateway) as client:
        await client.list_tools()
        before = backend.stats().get("tools/list", 0)
        for _ in range(5):
            await client.list_tools()
            await client.call_tool("remote_echo", {"text": "x"})
        await client.call_tool("sql_query", {"sql": "SELECT 42 AS answer"})
        after = backend.stats().get("tools/list", 0)
    assert after == before


async def test_a_bearer_token_from_the_environment_is_sent_to_the_backend(
    data_dir, backend, monkeypatch
):
    monkeypatch.setenv("REMOTE_TOKEN", "s3cret-token")
    gateway = gateway_with(
        data_dir, remote={"url": backend.url, "bearer_token_env": "REMOTE_TOKEN"}
    )
    async with Client(gateway) as client:
        headers = (await client.call_tool("remote_headers", {})).data
        status = (await client.call_tool("admin_status", {})).structured_content
    assert headers["authorization"] == "Bearer s3cret-token"
    assert "s3cret-token" not in str(status)
