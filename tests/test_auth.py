"""Authentication and per-client scopes over the real HTTP stack (the ASGI app, no socket)."""

import json
import subprocess
import sys

import anyio
import pytest
from fastmcp.exceptions import ToolError
from fastmcp.server.auth.providers.jwt import RSAKeyPair
from fastmcp.utilities.tests import asgi_server

from gateway import create_gateway
from servers.gateway.auth import insecure_bind_refusal, new_token
from servers.settings import PROJECT_ROOT, GatewaySettings
from tests.conftest import INITIALIZE, MCP_HEADERS

ISSUER = "https://issuer.test"
AUDIENCE = "gateway"


@pytest.fixture(scope="module")
def keys() -> RSAKeyPair:
    return RSAKeyPair.generate()


@pytest.fixture(scope="module")
def tokens(tmp_path_factory) -> dict[str, str]:
    """Clients by name: sql only, pipelines plus the demo backend, admin."""
    made = {
        "alice": new_token("alice", ["sql"]),
        "bob": new_token("bob", ["pipelines", "backend:demo"]),
        "root": new_token("root", ["*"]),
    }
    return {name: token for name, (token, _) in made.items()} | {
        "_file_lines": "\n".join(line for _, line in made.values())
    }


@pytest.fixture(scope="module")
def secured(data_dir, tmp_path_factory, keys, tokens):
    directory = tmp_path_factory.mktemp("auth")
    tokens_file = directory / "tokens.jsonl"
    tokens_file.write_text("# clients\n" + tokens["_file_lines"] + "\n")
    settings = GatewaySettings.load(
        data_dir=data_dir,
        auth={
            "tokens_file": tokens_file,
            "jwt_public_key": keys.public_key,
            "jwt_issuer": ISSUER,
            "jwt_audience": AUDIENCE,
            "base_url": "https://gateway.example.com",
        },
        audit={"file": directory / "audit.jsonl"},
    )
    return create_gateway(settings)


@pytest.fixture
async def server(secured):
    async with asgi_server(secured) as running:
        yield running


async def post_initialize(server, headers: dict[str, str], query: str = ""):
    async with server.http_client() as http:
        return await http.post(f"/mcp{query}", json=INITIALIZE, headers=MCP_HEADERS | headers)


async def test_a_request_without_a_token_is_refused_with_401_and_a_bearer_challenge(server):
    response = await post_initialize(server, {})
    assert response.status_code == 401
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith("Bearer")
    assert "/.well-known/oauth-protected-resource/mcp" in challenge


async def test_protected_resource_metadata_names_the_jwt_issuer(server):
    async with server.http_client() as http:
        response = await http.get("/.well-known/oauth-protected-resource/mcp")
    assert response.status_code == 200
    assert response.json()["authorization_servers"] == [ISSUER + "/"]


@pytest.mark.parametrize(
    "case", ["unknown token", "expired", "wrong issuer", "wrong audience", "bad signature"]
)
async def test_an_invalid_token_is_refused_with_401(server, keys, case):
    make = {
        "unknown token": lambda: "gw_not-a-real-token",
        "expired": lambda: keys.create_token(
            issuer=ISSUER, audience=AUDIENCE, scopes=["sql"], expires_in_seconds=-60
        ),
        "wrong issuer": lambda: keys.create_token(
            issuer="https://evil.test", audience=AUDIENCE, scopes=["sql"]
        ),
        "wrong audience": lambda: keys.create_token(
            issuer=ISSUER, audience="another-service", scopes=["sql"]
        ),
        "bad signature": lambda: RSAKeyPair.generate().create_token(
            issuer=ISSUER, audience=AUDIENCE, scopes=["sql"]
        ),
    }
    response = await post_initialize(server, {"Authorization": f"Bearer {make[case]()}"})
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")


async def test_a_token_in_the_query_string_is_ignored(server, tokens):
    response = await post_initialize(server, {}, query=f"?access_token={tokens['root']}")
    assert response.status_code == 401


async def test_health_needs_no_token_and_reveals_nothing(server):
    async with server.http_client() as http:
        response = await http.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_a_static_token_sees_only_the_namespaces_of_its_scopes(server, tokens, mode):
    async with server.client(auth=tokens["alice"], mode=mode) as alice:
        tools = {t.name for t in await alice.list_tools()}
        assert "sql_query" in tools
        assert not {t for t in tools if t.startswith(("pipelines_", "admin_", "demo_"))}
        uris = {str(r.uri) for r in await alice.list_resources()}
        assert "sql://sql/tables" in uris and "demo://demo/units" not in uris
        templates = {t.uri_template for t in await alice.list_resource_templates()}
        assert not {t for t in templates if t.startswith(("pipelines://", "demo://"))}
        prompts = {p.name for p in await alice.list_prompts()}
        assert "sql_explore_dataset" in prompts and "demo_trip_facts" not in prompts


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_a_hidden_tool_resource_or_prompt_is_also_refused_when_used(server, tokens, mode):
    async with server.client(auth=tokens["alice"], mode=mode) as alice:
        with pytest.raises(ToolError, match="needs scope 'admin'"):
            await alice.call_tool("admin_status", {})
        with pytest.raises(ToolError, match="needs scope 'backend:demo'"):
            await alice.call_tool("demo_distance", {"origin": "JFK", "dest": "LAX"})
        with pytest.raises(Exception, match="needs scope 'backend:demo'"):
            await alice.read_resource("demo://demo/units")
        with pytest.raises(Exception, match="needs scope 'backend:demo'"):
            await alice.get_prompt("demo_trip_facts", {})
        assert (await alice.call_tool("sql_query", {"sql": "select 1 as one"})).structured_content


async def test_a_jwt_gets_the_scopes_of_its_scope_claim(server, keys):
    token = keys.create_token(subject="carol", issuer=ISSUER, audience=AUDIENCE, scopes=["admin"])
    async with server.client(auth=token) as carol:
        tools = {t.name for t in await carol.list_tools()}
        assert tools and all(t.startswith("admin_") for t in tools)
        assert (await carol.call_tool("admin_status", {})).structured_content["status"]


async def test_two_clients_connected_at_once_each_see_only_their_own_set(server, tokens):
    seen: dict[str, set[str]] = {}
    async with (
        server.client(auth=tokens["alice"], mode="legacy") as alice,
        server.client(auth=tokens["bob"], mode="legacy") as bob,
    ):

        async def listing(name, client):
            for _ in range(3):
                seen[name] = {t.name.split("_")[0] for t in await client.list_tools()}

        async with anyio.create_task_group() as group:
            group.start_soon(listing, "alice", alice)
            group.start_soon(listing, "bob", bob)
    assert seen == {"alice": {"sql"}, "bob": {"pipelines", "demo"}}


def test_a_public_address_without_auth_is_refused_and_the_reason_given():
    refusal = insecure_bind_refusal("0.0.0.0", auth_configured=False, insecure=False)
    assert "without authentication" in refusal and "--insecure" in refusal
    assert insecure_bind_refusal("0.0.0.0", auth_configured=True, insecure=False) is None
    assert insecure_bind_refusal("0.0.0.0", auth_configured=False, insecure=True) is None
    assert insecure_bind_refusal("127.0.0.1", auth_configured=False, insecure=False) is None
    assert insecure_bind_refusal("::1", auth_configured=False, insecure=False) is None


@pytest.mark.slow
def test_the_gateway_cli_refuses_a_public_address_without_auth():
    done = subprocess.run(
        [sys.executable, "gateway.py", "--host", "0.0.0.0"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "refusing to listen on 0.0.0.0 without authentication" in done.stderr


@pytest.mark.slow
def test_the_token_command_prints_a_token_and_a_file_line_with_only_its_hash():
    done = subprocess.run(
        [sys.executable, "gateway.py", "token", "--client", "alice", "--scopes", "sql,pipelines"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0
    lines = done.stdout.splitlines()
    token = lines[0].rsplit(" ", 1)[1]
    entry = json.loads(lines[-1])
    assert entry["client"] == "alice" and entry["scopes"] == ["sql", "pipelines"]
    assert token not in lines[-1] and len(entry["sha256"]) == 64


async def test_metrics_need_a_token_with_the_admin_scope_when_auth_is_on(server, tokens):
    async with server.http_client() as http:
        anonymous = await http.get("/metrics")
        alice = await http.get("/metrics", headers={"Authorization": f"Bearer {tokens['alice']}"})
        root = await http.get("/metrics", headers={"Authorization": f"Bearer {tokens['root']}"})
    assert anonymous.status_code == 401 and alice.status_code == 403
    assert root.status_code == 200 and "gateway_calls_total" in root.text


async def test_the_audit_names_the_client_of_each_call_and_records_refusals(server, tokens):
    async with server.client(auth=tokens["alice"]) as alice:
        await alice.call_tool("sql_list_tables", {})
        with pytest.raises(ToolError):
            await alice.call_tool("admin_status", {})
    async with server.client(auth=tokens["root"]) as root:
        calls = await root.call_tool("admin_recent_calls", {"client": "token:alice", "limit": 2})
    newest, older = calls.structured_content["calls"]
    assert (newest["name"], newest["outcome"], newest["error_class"]) == (
        "admin_status",
        "error",
        "ToolError",
    )
    assert (older["name"], older["outcome"]) == ("sql_list_tables", "ok")
