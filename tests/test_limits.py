"""Per-client rate limits, the response size limit, the request body limit and error masking."""

import logging

import httpx
import pytest
from fastmcp import Client, FastMCP
from fastmcp.exceptions import ToolError
from fastmcp.utilities.tests import asgi_server

from gateway import create_app, create_gateway
from servers.gateway.audit import Audit, AuditMiddleware
from servers.gateway.auth import new_token
from servers.settings import GatewaySettings


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
