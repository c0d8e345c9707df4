"""Per-client rate limits, the response size limit, the request body limit and error masking."""

import logging
import socket
import uuid
from collections.abc import Iterator

import anyio
import httpx
import pytest
from fastmcp import Client, FastMCP
from fastmcp.exceptions import ToolError
from fastmcp.utilities.tests import asgi_server

from gateway import create_app, create_gateway
from servers.gateway.audit import Audit, AuditMiddleware
from servers.gateway.auth import new_token
from servers.gateway.limits import SharedBuckets
from servers.settings import GatewaySettings
from tests.conftest import free_port
from tests.deploy import RedisServer


@pytest.fixture(scope="module")
def tokens(tmp_path_factory):
    made = {name: new_token(name, ["*"]) for name in ("alice", "bob")}
    path = tmp_path_factory.mktemp("limits") / "tokens.jsonl"
    path.write_text("\n".join(line for _, line in made.values()))
    return path, {name: token for name, (token, _) in made.items()}


@pytest.fixture(scope="module")
def limited(data_dir, tokens):
    path, _ = tokens
    settings = GatewaySettings.load(
        data_dir=data_dir,
        mcpServers={},
        auth={"tokens_file": path},
        limits={
            "rate_per_s": 0.01,
            "rate_burst": 3,
            "max_response_bytes": 5_000,
            "max_body_bytes": 10_000,
        },
    )
    return settings, create_gateway(settings)


async def test_a_client_over_its_rate_gets_a_clear_error_and_others_are_unaffected(limited, tokens):
    _, gateway = limited
    _, by_name = tokens
    async with asgi_server(gateway) as server:
        async with server.client(auth=by_name["alice"]) as alice:
            for _ in range(3):
                await alice.call_tool("sql_list_tables", {})
            refused = r"Rate limit reached for client 'token:alice'.*Retry"
            with pytest.raises(ToolError, match=refused):
                await alice.call_tool("sql_list_tables", {})
        async with server.client(auth=by_name["bob"]) as bob:
            assert (await bob.call_tool("sql_list_tables", {})).structured_content


async def test_a_response_over_the_size_limit_is_refused_with_advice(limited):
    _, gateway = limited
    async with Client(gateway) as client:
        with pytest.raises(ToolError, match="over the gateway's limit of 5000; ask for less"):
            await client.call_tool("sql_query", {"sql": "select * from flights limit 200"})
        assert (await client.call_tool("sql_query", {"sql": "select 1 as one"})).structured_content


async def test_a_request_body_over_the_limit_gets_413(limited, tokens):
    settings, gateway = limited
    _, by_name = tokens
    app = create_app(settings, gateway)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
        response = await http.post(
            "/mcp",
            content=b"{" + b" " * 20_000 + b"}",
            headers={
                "Authorization": f"Bearer {by_name['bob']}",
                "Content-Type": "application/json",
                "Accept": "application/json, text/event-stream",
            },
        )
    assert response.status_code == 413
    assert "10000 bytes" in response.json()["error"]


async def test_an_unexpected_error_reaches_the_client_with_a_correlation_id_only(
    data_dir, tmp_path, caplog
):
    """The details (a host path, the message, the traceback) go to the server log, on one line."""
    child = FastMCP("child", mask_error_details=True)

    @child.tool
    def explode() -> str:
        raise RuntimeError("cannot open /srv/private/db.duckdb\nforged: line")

    server = FastMCP("root", mask_error_details=True)
    server.mount(child, namespace="child")
    settings = GatewaySettings.load(data_dir=data_dir, audit={"file": tmp_path / "a.jsonl"})
    audit = Audit(settings)
    server.add_middleware(AuditMiddleware(audit))
    with caplog.at_level(logging.ERROR, logger="gateway.errors"):
        async with Client(server) as client:
            with pytest.raises(ToolError) as refused:
                await client.call_tool("child_explode", {})
    message = str(refused.value)
    assert "correlation id" in message and "/srv/private" not in message
    correlation = audit.recent[-1].correlation_id
    assert correlation in message and audit.recent[-1].error_class == "RuntimeError"
    logged = [r.getMessage() for r in caplog.records if r.name == "gateway.errors"]
    assert len(logged) == 1 and correlation in logged[0] and "/srv/private" in logged[0]
    assert "\n" not in logged[0] and "RuntimeError" in logged[0]


async def test_a_streamed_request_body_over_the_limit_gets_413_too(limited, tokens):
    settings, gateway = limited
    _, by_name = tokens

    async def chunks():
        for _ in range(20):
            yield b" " * 1_000

    app = create_app(settings, gateway)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http,
    ):
        response = await http.post(
            "/mcp",
            content=chunks(),
            headers={
                "Authorization": f"Bearer {by_name['bob']}",
                "Content-Type": "application/json",
                "Accept": "application/json, text/event-stream",
            },
        )
    assert response.status_code == 413


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    yield server
    server.stop()


def shared_settings(data_dir, url: str, **limits) -> GatewaySettings:
    return GatewaySettings.load(
        data_dir=data_dir,
        mcpServers={},
        pipelines={"tasks_url": url, "tasks_name": f"limits-{uuid.uuid4().hex[:8]}"},
        limits={"rate_per_s": 0.001, "rate_burst": 3, **limits},
    )


async def test_buckets_in_redis_are_one_bucket_for_every_process(data_dir, redis_server):
    settings = shared_settings(data_dir, redis_server.url)
    first, second = SharedBuckets(settings), SharedBuckets(settings)  # as two processes
    waits = [await (first, second)[i % 2].take("token:alice", settings.limits) for i in range(5)]
    assert waits[:3] == [0.0, 0.0, 0.0]
    # The next token comes after 1/rate seconds (less what has refilled meanwhile).
    assert all(900 < wait <= 1000 for wait in waits[3:])
    assert await second.take("token:bob", settings.limits) == 0.0


async def test_without_redis_each_process_limits_alone_says_so_once_and_uses_redis_again(
    data_dir, redis_server, caplog
):
    settings = shared_settings(data_dir, redis_server.url, shared_retry_s=0.2)
    buckets = SharedBuckets(settings)
    assert await buckets.take("token:alice", settings.limits) == 0.0
    redis_server.stop()
    with caplog.at_level(logging.WARNING, logger="gateway.limits"):
        for _ in range(5):  # every call answered: None means "use this process's bucket"
            assert await buckets.take("token:alice", settings.limits) is None
        redis_server.start()  # empty, as a Redis restarted without its append-only file
        with anyio.fail_after(60):
            while (wait := await buckets.take("token:alice", settings.limits)) is None:
                await anyio.sleep(0.05)
    assert wait == 0.0
    logged = [r.getMessage() for r in caplog.records if r.name == "gateway.limits"]
    assert len(logged) == 2
    assert "cannot be reached" in logged[0] and "answers again" in logged[1]
    assert str(redis_server.port) not in " ".join(logged)


async def test_a_redis_that_never_answers_does_not_hold_a_call(data_dir):
    with socket.socket() as silent:  # accepts connections (the kernel does) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
        settings = shared_settings(data_dir, url, shared_timeout_s=0.2)
        buckets = SharedBuckets(settings)
        with anyio.fail_after(30):
            assert await buckets.take("token:alice", settings.limits) is None


async def test_the_gateway_falls_back_to_its_own_bucket_when_redis_is_gone(data_dir, tokens):
    path, by_name = tokens
    settings = GatewaySettings.load(
        data_dir=data_dir,
        mcpServers={},
        auth={"tokens_file": path},
        pipelines={"tasks_url": f"redis://127.0.0.1:{free_port()}/0"},
        limits={"rate_per_s": 0.001, "rate_burst": 2},
    )
    gateway = create_gateway(settings)
    async with asgi_server(gateway) as server, server.client(auth=by_name["alice"]) as alice:
        for _ in range(2):
            await alice.call_tool("sql_list_tables", {})
        with pytest.raises(ToolError, match=r"Rate limit reached .*Retry in"):
            await alice.call_tool("sql_list_tables", {})
