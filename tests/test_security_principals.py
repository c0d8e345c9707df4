"""Hostile clients with tokens, through the real HTTP stack (ASGI, fastmcp clients in both
eras): JWTs with bad times, a JWT posing as a tokens-file client, another client's runs, made-up
names flooding the metrics, short static tokens, what the instructions tell, and chart values
no chart can draw (issue 19, items 6, 7, 8, 11 and 13)."""

import os
import subprocess
import sys
import time

import pytest
from fastmcp.exceptions import ToolError
from fastmcp.server.auth.providers.jwt import RSAKeyPair
from fastmcp.utilities.tests import asgi_server
from joserfc import jwt
from joserfc.jwk import RSAKey

from gateway import create_gateway
from pipelines import Pipeline, registry
from servers.gateway.auth import new_token
from servers.settings import PROJECT_ROOT, GatewaySettings
from tests.conftest import INITIALIZE, MCP_HEADERS
from tests.fixtures import slow_pipeline
from tests.pipeline_processes import wait_for_pid, wait_until_gone

ISSUER, AUDIENCE = "https://issuer.test", "gateway"
SCOPES = {"alice": ["sql", "pipelines"], "ops": ["admin"], "low": ["sql"]}


@pytest.fixture(scope="module")
def keys() -> RSAKeyPair:
    return RSAKeyPair.generate()


def signed(keys: RSAKeyPair, claims: dict) -> str:
    """A JWT with exactly these claims (the key pair's helper always adds exp and iat)."""
    key = RSAKey.import_key(keys.private_key.get_secret_value())
    base = {"iss": ISSUER, "aud": AUDIENCE, "scope": "sql pipelines"}
    return jwt.encode({"alg": "RS256"}, base | claims, key)


@pytest.fixture(scope="module")
def secured(data_dir, tmp_path_factory, keys):
    folder = tmp_path_factory.mktemp("principals")
    made = {name: new_token(name, scopes) for name, scopes in SCOPES.items()}
    (folder / "tokens.jsonl").write_text("\n".join(line for _, line in made.values()) + "\n")
    settings = GatewaySettings.load(
        data_dir=data_dir,
        auth={
            "tokens_file": folder / "tokens.jsonl",
            "jwt_public_key": keys.public_key,
            "jwt_issuer": ISSUER,
            "jwt_audience": AUDIENCE,
        },
        limits={"rate_per_s": 0},
        audit={"file": folder / "audit.jsonl"},
    )
    slow = Pipeline(slow_pipeline, slow_pipeline.OUTPUTS)
    gateway = create_gateway(settings, served_pipelines={**registry(), "slow": slow})
    return gateway, {name: token for name, (token, _) in made.items()}


@pytest.fixture
async def server(secured):
    gateway, _ = secured
    async with asgi_server(gateway) as running:
        yield running


@pytest.fixture
def tokens(secured) -> dict[str, str]:
    return secured[1]


async def initialize_status(server, token: str) -> int:
    async with server.http_client() as http:
        headers = MCP_HEADERS | {"Authorization": f"Bearer {token}"}
        return (await http.post("/mcp", json=INITIALIZE, headers=headers)).status_code


@pytest.mark.parametrize(
    "case,status",
    [
        ("no exp", 401),
        ("exp not a number", 401),
        ("nbf in ten minutes", 401),
        ("iat in ten minutes", 401),
        ("no sub", 401),
        ("nbf within the leeway", 200),
        ("good", 200),
    ],
)
async def test_jwt_times_and_subject_are_checked(server, keys, case, status):
    now = int(time.time())
    claims = {
        "no exp": {"sub": "u", "iat": now},
        "exp not a number": {"sub": "u", "exp": "tomorrow"},
        "nbf in ten minutes": {"sub": "u", "exp": now + 3600, "nbf": now + 600},
        "iat in ten minutes": {"sub": "u", "exp": now + 3600, "iat": now + 600},
        "no sub": {"exp": now + 3600},
        "nbf within the leeway": {"sub": "u", "exp": now + 3600, "nbf": now + 10},
        "good": {"sub": "u", "exp": now + 3600, "iat": now},
    }[case]
    assert await initialize_status(server, signed(keys, claims)) == status


async def recent_clients(server, tokens) -> set[str]:
    async with server.client(auth=tokens["ops"]) as ops:
        calls = await ops.call_tool("admin_recent_calls", {"limit": 200})
    return {call["client"] for call in calls.structured_content["calls"]}


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_a_jwt_named_like_a_tokens_file_client_stays_a_different_principal(
    server, keys, tokens, tmp_path, mode
):
    alice_jwt = keys.create_token(
        subject="alice", issuer=ISSUER, audience=AUDIENCE, scopes=["sql", "pipelines"]
    )
    async with server.client(auth=tokens["alice"], mode=mode) as alice:
        started = await alice.call_tool(
            "pipelines_start_run", {"name": "route_profile", "inputs": {}}
        )
        run_id = started.structured_content["run_id"]
        assert (await alice.call_tool("pipelines_get_run", {"run_id": run_id})).structured_content
    async with server.client(auth=alice_jwt, mode=mode) as impostor:
        with pytest.raises(ToolError, match="no background run"):
            await impostor.call_tool("pipelines_get_run", {"run_id": run_id})
    assert {"token:alice", "jwt:alice"} <= await recent_clients(server, tokens)


async def test_users_of_one_oauth_client_are_distinct_principals(server, keys, tokens):
    for user in ("u1", "u2"):
        token = keys.create_token(
            subject=user, issuer=ISSUER, audience=AUDIENCE, scopes=["sql"],
            additional_claims={"client_id": "chat-app"},
        )  # fmt: skip
        async with server.client(auth=token) as client:
            await client.call_tool("sql_list_tables", {})
    assert {"oauth:chat-app:u1", "oauth:chat-app:u2"} <= await recent_clients(server, tokens)


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_an_admin_token_alone_cancels_another_clients_run(server, tokens, tmp_path, mode):
    marker = tmp_path / "pid"
    async with server.client(auth=tokens["alice"]) as alice:
        inputs = {"marker": str(marker), "seconds": 60}
        started = await alice.call_tool("pipelines_start_run", {"name": "slow", "inputs": inputs})
        run_id = started.structured_content["run_id"]
        pid = await wait_for_pid(marker)
        async with server.client(auth=tokens["ops"], mode=mode) as ops:
            stopped = await ops.call_tool("admin_cancel_run", {"run_id": run_id, "confirm": True})
        assert stopped.structured_content["status"] == "cancelled"
        await wait_until_gone(pid)
        status = await alice.call_tool("pipelines_get_run", {"run_id": run_id})
        assert status.structured_content["status"] == "cancelled"


async def test_made_up_names_fold_into_one_label_and_never_push_out_real_tools(server, tokens):
    async with server.client(auth=tokens["low"]) as low:
        await low.call_tool("sql_list_tables", {})
        for n in range(600):  # more than the metrics' 500 distinct names
            with pytest.raises(ToolError):
                await low.call_tool(f"made_up_{n}", {})
        await low.call_tool("sql_describe_table", {"table": "airlines"})
        with pytest.raises(ToolError):  # a real tool refused for scope keeps its own name
            await low.call_tool("admin_status", {})
    async with server.client(auth=tokens["ops"]) as ops:
        calls = (await ops.call_tool("admin_status", {})).structured_content["calls"]
    assert calls["(unknown)"]["calls"] >= 600 and calls["(unknown)"]["errors"] >= 600
    assert {"sql_list_tables", "sql_describe_table", "admin_status"} <= calls.keys()
    assert not [name for name in calls if name.startswith("made_up_")]
    async with server.http_client() as http:
        scrape = await http.get("/metrics", headers={"Authorization": f"Bearer {tokens['ops']}"})
    assert 'name="(unknown)"' in scrape.text and 'name="sql_describe_table"' in scrape.text
    assert "made_up_" not in scrape.text and 'name="(other)"' not in scrape.text


async def test_the_instructions_name_no_backend(server, tokens):
    async with server.client(auth=tokens["low"], mode="legacy") as low:  # the handshake's
        instructions = low.initialize_result.instructions
    assert "sql_*" in instructions and "demo" not in instructions


@pytest.mark.parametrize("mode", ["auto", "legacy"])
@pytest.mark.parametrize(
    "sql,refusal",
    [
        ("SELECT * FROM (VALUES (1, 1e308), (2, -1e308)) t(x, y)", "'y' holds 1e\\+308"),
        ("SELECT 1e308 AS x, 2.0 AS y UNION ALL SELECT -1e308, 3.0", "'x' holds -?1e\\+308"),
        (
            "SELECT DATE '9999-12-31' AS d, 1 AS y UNION ALL SELECT DATE '2020-01-01', 2",
            "'d' holds 9999-12-31.*outside the years",
        ),
    ],
)
async def test_chart_values_no_chart_can_draw_get_a_clear_refusal(
    server, tokens, sql, refusal, mode
):
    async with server.client(auth=tokens["low"], mode=mode) as low:
        with pytest.raises(ToolError, match=refusal) as refused:
            await low.call_tool("sql_chart", {"sql": sql})
    assert "Internal error" not in str(refused.value)


async def test_a_histogram_leaves_extreme_values_out_and_says_so(server, tokens):
    async with server.client(auth=tokens["low"]) as low:
        chart = await low.call_tool(
            "sql_chart", {"sql": "SELECT 1e308 AS v UNION ALL SELECT -1e308 UNION ALL SELECT 3"}
        )
    assert "2 null or non-finite values are left out" in " ".join(chart.structured_content["notes"])


def test_a_short_static_token_stops_start_up_without_showing_it(data_dir):
    short = "short-but-secret-1"
    done = subprocess.run(
        [sys.executable, "gateway.py", "--port", "0"],
        cwd=PROJECT_ROOT,
        env=os.environ | {"GATEWAY_DATA_DIR": str(data_dir), "GATEWAY_AUTH__TOKEN": short},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 2
    assert "GATEWAY_AUTH__TOKEN is 18 characters long; at least 24 are required" in done.stderr
    assert short not in done.stderr + done.stdout
