"""Admin changes reach every process of a deployment (tests/deploy.py: replica A with two
uvicorn workers, replica B one stateless process, one Redis): a component hidden through one
replica is hidden on the other, a token removed by a reload on one is refused by every other
process, a client's listen stream on another replica hears list_changed, and with Redis down a
change says the other replicas did not get it.
"""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import mcp as mcp_sdk
import pytest
import redis
from fastmcp import Client
from fastmcp.exceptions import ToolError
from mcp.client.streamable_http import streamable_http_client

from servers.admin.shared import NOT_SENT, SENT
from servers.gateway.auth import new_token
from tests.conftest import INITIALIZE, MCP_HEADERS, free_port
from tests.deploy import Deployment, answers, started, wait_for
from tests.deploy import deployment as deploy

pytestmark = pytest.mark.slow

TOKEN = "replicas-admin-token-" + uuid.uuid4().hex  # every scope: admin_* callable
BOUND_S = 90  # how long a change may take to reach a process, generously on a loaded machine


@pytest.fixture(scope="module")
def tokens_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    """A tokens file with one client whose token a reload will revoke."""
    token, line = new_token("revoked-later", ["sql"])
    path = tmp_path_factory.mktemp("tokens") / "tokens.jsonl"
    path.write_text(line + "\n")
    return path, token, line


@pytest.fixture(scope="module")
def deployment(
    data_dir: Path, tmp_path_factory: pytest.TempPathFactory, tokens_file
) -> Iterator[Deployment]:
    env = {
        "GATEWAY_AUTH__TOKENS_FILE": str(tokens_file[0]),
        "GATEWAY_AUTH__FAILURES_PER_MINUTE": "1000",  # the refused requests here are on purpose
    }
    with deploy(tmp_path_factory.mktemp("replicas"), data_dir, TOKEN, env) as running:
        yield running


def mcp(base: str) -> str:
    return f"{base}/mcp"


async def listed(client: Client) -> set[str]:
    return {tool.name for tool in await client.list_tools()}


async def set_enabled(client: Client, component: str, enabled: bool) -> dict:
    arguments = {"component": component, "enabled": enabled, "confirm": True}
    return (await client.call_tool("admin_set_enabled", arguments)).structured_content


async def poll(check, what: str, bound_s: float = BOUND_S) -> None:
    """Return once ``await check()`` is true; fail after bound_s."""
    with anyio.move_on_after(bound_s):
        while not await check():
            await anyio.sleep(0.2)
        return
    raise AssertionError(f"{what}: not within {bound_s} s")


def listing(client: Client, tool: str, shown: bool, times: int = 1):
    """A check: is tool listed (shown) or not, in each of several listings in a row (each may
    reach another worker)?"""

    async def check() -> bool:
        return {tool in await listed(client) for _ in range(times)} == {shown}

    return check


@pytest.mark.parametrize(("mode", "tool"), [("auto", "sql_explain"), ("legacy", "sql_chart")])
async def test_a_tool_hidden_through_replica_a_is_hidden_on_replica_b_and_shown_again(
    deployment: Deployment, mode: str, tool: str
):
    a, b = (mcp(url) for url in deployment.replicas)
    async with (
        Client(a, auth=TOKEN, mode=mode, timeout=60) as on_a,
        Client(b, auth=TOKEN, mode=mode, timeout=60) as on_b,
    ):
        assert tool in await listed(on_b)
        hidden = await set_enabled(on_a, tool, False)
        assert hidden["deployment"] == SENT and tool in hidden["hidden"]
        await poll(listing(on_b, tool, False), f"{tool} hidden on B")
        with pytest.raises(ToolError):
            await on_b.call_tool(tool, {"sql": "SELECT 1"})
        # Both workers of replica A: several listings in a row, none shows it.
        await poll(listing(on_a, tool, False, 6), f"{tool} hidden on A")

        shown = await set_enabled(on_a, tool, True)
        assert shown["deployment"] == SENT and tool not in shown["hidden"]
        await poll(listing(on_b, tool, True), f"{tool} shown on B")
        await poll(listing(on_a, tool, True, 6), f"{tool} shown on A")
    if tool == "sql_explain":
        async with Client(b, auth=TOKEN, mode=mode, timeout=60) as on_b:
            explained = await on_b.call_tool(tool, {"sql": "SELECT 1"})
            assert not explained.is_error


def initialize_status(base: str, token: str) -> int:
    """The status of a raw initialize with this token, on a fresh connection (so requests to
    a replica with two workers are spread over both)."""
    headers = MCP_HEADERS | {"Authorization": f"Bearer {token}"}
    with httpx.Client(timeout=30) as http:
        return http.post(mcp(base), json=INITIALIZE, headers=headers).status_code


def workers_answering(base: str, tries: int = 40) -> set[str]:
    """The processes that answered /ready on fresh connections (each names its replica)."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    names = set()
    for _ in range(tries):
        with httpx.Client(timeout=30) as http:
            names.add(http.get(f"{base}/ready", headers=headers).json()["replica"])
        if len(names) == 2:
            break
    return names


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_a_token_removed_by_a_reload_on_one_replica_is_refused_by_every_process(
    deployment: Deployment, tokens_file, mode: str
):
    path, token, line = tokens_file
    a, b = deployment.replicas
    path.write_text(line + "\n")  # the token is valid again (the other mode's run removed it)
    async with Client(mcp(a), auth=TOKEN, mode=mode, timeout=60) as admin_a:
        reloaded = (await admin_a.call_tool("admin_reload", {"confirm": True})).structured_content
    assert reloaded["deployment"] == SENT

    async def accepted_everywhere() -> bool:
        return all(initialize_status(url, token) == 200 for url in (a, a, a, a, b))

    await poll(accepted_everywhere, "the token accepted by every process")
    assert len(workers_answering(a)) == 2  # replica A really has two processes answering

    path.write_text("")  # the client is removed from the tokens file...
    async with Client(mcp(b), auth=TOKEN, mode=mode, timeout=60) as admin_b:
        reloaded = (await admin_b.call_tool("admin_reload", {"confirm": True})).structured_content
    # ...and reloaded through replica B only
    assert reloaded["deployment"] == SENT
    assert reloaded["applied"][0].startswith("auth")
    assert initialize_status(b, token) == 401

    async def refused_by_a() -> bool:
        return initialize_status(a, token) == 401

    await poll(refused_by_a, "the token refused by replica A")
    # Then every request to replica A, whichever of its two workers takes it, is refused.
    assert {initialize_status(a, token) for _ in range(12)} == {401}
    assert initialize_status(a, TOKEN) == 200  # the admin token stays valid


def notified(received: list[str]):
    async def note(message) -> None:
        received.append(type(getattr(message, "root", message)).__name__)

    return note


@pytest.fixture(scope="module")
def stateful_replica(deployment: Deployment, tmp_path_factory: pytest.TempPathFactory):
    """A third replica, one stateful process (handshake-era clients keep a GET stream on it):
    the deployment's replicas are stateless (A has two workers, B is set so)."""
    port = free_port()
    log = tmp_path_factory.mktemp("replica-c") / "gateway-c.log"
    command = [sys.executable, "gateway.py", "--config", str(deployment.config)]
    with started([*command, "--port", str(port)], deployment.env, log) as process:
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: answers(f"{base}/health"), process, log, "replica C", timeout_s=120)
        yield base


async def test_a_legacy_client_on_another_replica_hears_the_tool_list_changed(
    deployment: Deployment, stateful_replica: str
):
    received: list[str] = []
    b = mcp(deployment.replicas[1])
    async with Client(
        mcp(stateful_replica), auth=TOKEN, mode="legacy", message_handler=notified(received)
    ) as watcher:
        assert "sql_explain" in await listed(watcher)
        async with Client(b, auth=TOKEN, mode="auto", timeout=60) as admin_b:
            assert (await set_enabled(admin_b, "sql_explain", False))["deployment"] == SENT

            async def heard() -> bool:
                return "ToolListChangedNotification" in received

            await poll(heard, "list_changed on replica C's stream")
            assert "sql_explain" not in await listed(watcher)
            received.clear()
            await set_enabled(admin_b, "sql_explain", True)
            await poll(heard, "list_changed again on replica C's stream")
            assert "sql_explain" in await listed(watcher)


async def test_a_2026_listen_stream_on_replica_a_hears_a_change_made_through_replica_b(
    deployment: Deployment,
):
    a, b = (mcp(url) for url in deployment.replicas)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(headers=headers, timeout=BOUND_S) as http:
        transport = streamable_http_client(a, http_client=http)
        async with (
            mcp_sdk.Client(transport) as listener,
            listener.listen(tools_list_changed=True) as subscription,
            Client(b, auth=TOKEN, timeout=60) as admin_b,
        ):
            await set_enabled(admin_b, "sql_explain", False)
            try:
                with anyio.fail_after(BOUND_S):
                    event = await anext(aiter(subscription))
            finally:
                await set_enabled(admin_b, "sql_explain", True)
    assert type(event).__name__ == "ToolsListChanged"


async def test_a_replica_started_later_hides_what_is_hidden(deployment: Deployment):
    a = mcp(deployment.replicas[0])
    async with Client(a, auth=TOKEN, timeout=60) as admin_a:
        assert "sql_chart" in await listed(admin_a)
        assert (await set_enabled(admin_a, "sql_chart", False))["deployment"] == SENT
        try:
            port = free_port()
            log = Path(str(deployment.config)).parent / "gateway-d.log"
            command = [sys.executable, "gateway.py", "--config", str(deployment.config)]
            with started([*command, "--port", str(port)], deployment.env, log) as process:
                base = f"http://127.0.0.1:{port}"
                wait_for(lambda: answers(f"{base}/health"), process, log, "replica D", 120)
                async with Client(mcp(base), auth=TOKEN, timeout=60) as on_d:
                    names = await listed(on_d)
                    assert "sql_chart" not in names and "sql_explain" in names
        finally:
            await set_enabled(admin_a, "sql_chart", True)


async def test_a_process_that_lost_its_subscription_catches_up_from_redis(
    deployment: Deployment, tokens_file
):
    """Changes made while the subscribers were cut off (written to Redis, never published)
    are applied when they subscribe again: the hidden set and a missed reload."""
    path, token, line = tokens_file
    a, b = deployment.replicas
    name = deployment.env["GATEWAY_PIPELINES__TASKS_NAME"]
    store = redis.Redis.from_url(deployment.redis.url)
    entry = json.dumps({"kind": "tools", "key": "tool:sql_explain@"})
    path.write_text(line + "\n")
    async with Client(mcp(b), auth=TOKEN, timeout=60) as on_b:
        await on_b.call_tool("admin_reload", {"confirm": True})  # the token is valid everywhere
        await poll(
            lambda: anyio.to_thread.run_sync(
                lambda: {initialize_status(url, token) for url in (a, a, a, b)} == {200}
            ),
            "the token accepted again",
        )
        assert "sql_explain" in await listed(on_b)
        path.write_text("")
        store.hset(f"{name}:gateway:admin:hidden", "sql_explain", entry)
        store.incr(f"{name}:gateway:admin:reloads")
        assert store.client_kill_filter(_type="pubsub") >= 3  # A's two workers and B
        await poll(listing(on_b, "sql_explain", False), "B caught up with the hidden set")
        await poll(
            lambda: anyio.to_thread.run_sync(
                lambda: {initialize_status(url, token) for url in (a, a, a, b)} == {401}
            ),
            "every process caught up with the missed reload",
        )
        async with Client(mcp(a), auth=TOKEN, timeout=60) as on_a:
            await poll(listing(on_a, "sql_explain", False, 6), "A caught up with the hidden set")
            shown = await set_enabled(on_a, "sql_explain", True)
        assert shown["hidden"] == [] and shown["deployment"] == SENT
        await poll(listing(on_b, "sql_explain", True), "shown again on B")
    store.close()


async def test_garbage_on_the_channel_is_ignored_and_changes_still_arrive(
    deployment: Deployment,
):
    channel = f"{deployment.env['GATEWAY_PIPELINES__TASKS_NAME']}:gateway:admin:changes"
    store = redis.Redis.from_url(deployment.redis.url)
    hide = {"origin": "elsewhere", "action": "hide", "component": "sql_explain"}
    for garbage in (
        b"not json",
        b"x" * 100_000,
        json.dumps({**hide, "kind": "nonsense", "key": "tool:sql_explain@"}),
        json.dumps({"origin": "elsewhere", "action": "reload", "generation": "many"}),
    ):
        assert store.publish(channel, garbage) >= 3  # A's two workers and B got it
    store.close()
    a, b = (mcp(url) for url in deployment.replicas)
    async with (
        Client(a, auth=TOKEN, timeout=60) as on_a,
        Client(b, auth=TOKEN, timeout=60) as on_b,
    ):
        assert "sql_explain" in await listed(on_b)
        await set_enabled(on_a, "sql_explain", False)
        await poll(listing(on_b, "sql_explain", False), "hidden on B after the garbage")
        await set_enabled(on_a, "sql_explain", True)
        await poll(listing(on_b, "sql_explain", True), "shown on B after the garbage")


async def test_with_redis_down_a_change_applies_here_says_so_and_redis_wins_when_back(
    deployment: Deployment,
):
    """Runs last: it stops and restarts Redis (which loses every key)."""
    a, b = (mcp(url) for url in deployment.replicas)
    deployment.redis.stop()
    try:
        async with (
            Client(b, auth=TOKEN, timeout=60) as on_b,
            Client(a, auth=TOKEN, timeout=60) as on_a,
        ):
            hidden = await set_enabled(on_b, "sql_describe_table", False)
            assert hidden["deployment"] == NOT_SENT
            assert "did NOT" in hidden["deployment"] and "redis://" not in json.dumps(hidden)
            assert "sql_describe_table" not in await listed(on_b)
            assert "sql_describe_table" in await listed(on_a)
            reloaded = (await on_b.call_tool("admin_reload", {"confirm": True})).structured_content
            assert reloaded["deployment"] == NOT_SENT
            deployment.redis.start()
            # Back, Redis's (empty) hidden set is the truth again, on B too.
            await poll(
                listing(on_b, "sql_describe_table", True),
                "B follows Redis again",
            )
    finally:
        if deployment.redis.process.poll() is not None:
            deployment.redis.start()
    logs = [path.read_text() for path in Path(deployment.config).parent.glob("gateway-*.log")]
    assert all(deployment.redis.url not in text for text in logs)
    assert any("shared admin state: Redis unreachable" in text for text in logs)
