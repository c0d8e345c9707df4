"""One rate limit and one view across a deployment's processes (tests/deploy.py: replica A with
two uvicorn workers, replica B a single stateless process, one Redis): a client's burst is
counted once whichever process answers; admin_recent_calls and admin_status cover every process;
with Redis stopped calls still go through on each process's own bucket, and the limit is global
again once it is back."""

import itertools
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import anyio
import httpx
import pytest
from fastmcp import Client
from fastmcp.exceptions import ToolError

from servers.gateway.auth import new_token
from tests.deploy import Deployment
from tests.deploy import deployment as deploy

pytestmark = pytest.mark.slow

BURST = 8
PROCESSES = 3  # replica A's two workers and replica B
PRINCIPALS = {
    **{f"spread-{mode}": ["sql"] for mode in ("auto", "legacy")},
    **{f"outage-{mode}": ["sql"] for mode in ("auto", "legacy")},
    # Admin calls are rate limited too: each one by the next viewer of a pool.
    **{f"viewer-{n}": ["admin", "metrics", "sql"] for n in range(40)},
}


@pytest.fixture(scope="module")
def tokens(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    made = {name: new_token(name, scopes) for name, scopes in PRINCIPALS.items()}
    path = tmp_path_factory.mktemp("tokens") / "tokens.jsonl"
    path.write_text("\n".join(line for _, line in made.values()) + "\n")
    return path, {name: token for name, (token, _) in made.items()}


@pytest.fixture(scope="module")
def viewers(tokens) -> Iterator[str]:
    _, by_name = tokens
    return itertools.cycle([token for name, token in by_name.items() if name.startswith("view")])


@pytest.fixture(scope="module")
def deployment(
    data_dir: Path, tmp_path_factory: pytest.TempPathFactory, tokens
) -> Iterator[Deployment]:
    path, _ = tokens
    env = {
        "GATEWAY_AUTH__TOKENS_FILE": str(path),
        # A refill of one call per 1000 s: whatever the test takes, a burst is all there is.
        "GATEWAY_LIMITS__RATE_PER_S": "0.001",
        "GATEWAY_LIMITS__RATE_BURST": str(BURST),
        "GATEWAY_AUDIT__HEARTBEAT_S": "1",
        # A machine this loaded can stall a process past the default 0.5 s: the process then
        # uses its own bucket (by design), which would let extra calls through here.
        "GATEWAY_LIMITS__SHARED_TIMEOUT_S": "5",
    }
    operator = "replicas-test-token-" + uuid.uuid4().hex
    with deploy(tmp_path_factory.mktemp("replicas"), data_dir, operator, env) as running:
        yield running


async def call(url: str, token: str, mode: str, name: str, arguments: dict) -> dict | None:
    """One call on a new connection (so replica A's workers both get some); None if refused
    by the rate limit."""
    async with Client(f"{url}/mcp", auth=token, mode=mode, timeout=60) as client:
        try:
            return (await client.call_tool(name, arguments)).structured_content
        except ToolError as refused:
            assert "Rate limit reached" in str(refused) and "Retry in" in str(refused)
            return None


async def calls_of(deployment: Deployment, viewers: Iterator[str], principal: str) -> list[dict]:
    status = await call(
        deployment.replicas[1], next(viewers), "auto", "admin_recent_calls",
        {"client": f"token:{principal}", "limit": 1000},
    )  # fmt: skip
    assert status is not None and status["scope"] == "deployment"
    return status["calls"]


async def spread_until_every_process_refused(
    deployment: Deployment, token: str, viewers: Iterator[str], principal: str, mode: str
) -> list[dict]:
    """Calls alternating between replica A and B until each of the three processes has
    refused at least one (bounded); the principal's records from admin_recent_calls."""
    records: list[dict] = []
    for _ in range(6):
        for i in range(24):
            await call(deployment.replicas[i % 2], token, mode, "sql_list_tables", {})
        records = await calls_of(deployment, viewers, principal)
        if len({r["replica"] for r in records if r["outcome"] == "error"}) >= PROCESSES:
            break
    return records


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_a_burst_spread_over_every_process_is_refused_after_burst_calls_in_total(
    deployment: Deployment, tokens, viewers, mode: str
):
    _, by_name = tokens
    principal = f"spread-{mode}"
    records = await spread_until_every_process_refused(
        deployment, by_name[principal], viewers, principal, mode
    )
    ok = [r for r in records if r["outcome"] == "ok"]
    refused_by = {r["replica"] for r in records if r["outcome"] == "error"}
    # Every process refused calls, yet all of them together let only one burst through: a
    # bucket per process would have let BURST through each before refusing any.
    assert len(refused_by) == PROCESSES
    assert len(ok) == BURST
    assert {r["error_class"] for r in records if r["outcome"] == "error"} == {"ToolError"}


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_calls_through_either_replica_appear_in_recent_calls_from_both_with_their_replica(
    deployment: Deployment, viewers, mode: str
):
    viewer = next(viewers)
    marks = {url: f"SELECT '{uuid.uuid4().hex}' AS mark" for url in deployment.replicas}
    served_by = {}
    for url, sql in marks.items():
        async with Client(f"{url}/mcp", auth=viewer, mode=mode, timeout=60) as client:
            await client.call_tool("sql_query", {"sql": sql})
            status = (await client.call_tool("admin_status", {})).structured_content
        served_by[url] = status["processes"]["answered_by"]
    for url in deployment.replicas:
        async with Client(f"{url}/mcp", auth=viewer, mode=mode, timeout=60) as client:
            recent = await client.call_tool("admin_recent_calls", {"tool": "sql_query"})
        assert recent.structured_content["scope"] == "deployment"
        calls = recent.structured_content["calls"]
        by_mark = {sql: [c for c in calls if sql in c["arguments"]] for sql in marks.values()}
        assert {sql: len(found) for sql, found in by_mark.items()} == dict.fromkeys(
            marks.values(), 1
        )
        # B is one process, so the call made there was served by the process that answered
        # its admin_status; A's call by one of A's two workers.
        b_call = by_mark[marks[deployment.replicas[1]]][0]
        assert b_call["replica"] == served_by[deployment.replicas[1]]
        assert by_mark[marks[deployment.replicas[0]]][0]["replica"] != b_call["replica"]


async def test_admin_status_from_either_replica_lists_every_live_process(
    deployment: Deployment, viewers
):
    viewer = next(viewers)
    seen = []
    for url in deployment.replicas:
        status = await call(url, viewer, "auto", "admin_status", {})
        processes = status["processes"]
        assert processes["scope"] == "deployment"
        labels = {entry["replica"] for entry in processes["live"]}
        assert processes["answered_by"] in labels
        assert all(entry["backends"] == {"demo": "up"} for entry in processes["live"])
        seen.append(labels)
    assert seen[0] == seen[1] and len(seen[0]) == PROCESSES
    # /metrics stays per process, each series labelled with the process that counted it.
    headers = {"Authorization": f"Bearer {viewer}"}
    b_label = status["processes"]["answered_by"]
    metrics = httpx.get(f"{deployment.replicas[1]}/metrics", headers=headers, timeout=30).text
    series = f'kind="tool",name="admin_status",outcome="ok",replica="{b_label}"'
    assert f"gateway_calls_total{{{series}}}" in metrics


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_with_redis_stopped_calls_go_through_and_the_limit_is_global_again_after(
    deployment: Deployment, tokens, viewers, mode: str
):
    _, by_name = tokens
    principal = f"outage-{mode}"
    token = by_name[principal]
    b = deployment.replicas[1]
    deployment.redis.stop()
    try:
        # Each process falls back to a bucket of its own: B lets a burst through, then refuses.
        outcomes = [await call(b, token, mode, "sql_list_tables", {}) for _ in range(BURST + 2)]
        assert all(outcomes[:BURST]) and outcomes[BURST:] == [None, None]
        status = await call(b, next(viewers), mode, "admin_status", {})
        assert status["processes"]["scope"] == "this process"
        assert "cannot be reached" in status["processes"]["note"]
        recent = await call(b, next(viewers), mode, "admin_recent_calls", {"limit": 5})
        assert recent["scope"] == "this process" and recent["calls"]
    finally:
        deployment.redis.start()
    restarted = datetime.now(UTC).isoformat(timespec="milliseconds")
    # Redis came back empty; every process registers again within a beat or two.
    with anyio.fail_after(90):
        while True:
            status = await call(b, next(viewers), mode, "admin_status", {})
            live = status["processes"].get("live", [])
            if status["processes"]["scope"] == "deployment" and len(live) == PROCESSES:
                break
            await anyio.sleep(0.5)
    records = await spread_until_every_process_refused(deployment, token, viewers, principal, mode)
    # B's calls made during the outage reach the list too, once it can: leave them out.
    after = [r for r in records if r["time"] > restarted]
    assert len({r["replica"] for r in after if r["outcome"] == "error"}) == PROCESSES
    assert len([r for r in after if r["outcome"] == "ok"]) == BURST
