"""Hostile HTTP clients against a real gateway process with auth on, over real sockets: huge and
slow request heads, idle connections, routes without a token, other principals' stored results,
and more sessions than a token may hold (issue 19, items 2, 3, 9 and 13)."""

import json
import socket
import time
from pathlib import Path

import httpx
import pytest
from fastmcp import Client
from fastmcp.exceptions import ResourceError, ToolError
from mcp.shared.exceptions import MCPError

from servers.gateway.auth import new_token
from tests.conftest import INITIALIZE, MCP_HEADERS, serving

pytestmark = pytest.mark.slow

SCOPES = {"alice": ["sql"], "bob": ["sql"], "carol": ["sql"], "ops": ["admin"]}
HEAD_TIMEOUT_S = 2


def start(data_dir: Path, folder: Path, **env: str):
    """A gateway process with a tokens file of SCOPES' clients (no backends); its URL and the
    tokens by client name."""
    made = {name: new_token(name, scopes) for name, scopes in SCOPES.items()}
    (folder / "tokens.jsonl").write_text("\n".join(line for _, line in made.values()) + "\n")
    (folder / "gateway.json").write_text(json.dumps({"mcpServers": {}}))
    environment = {
        "GATEWAY_DATA_DIR": str(data_dir),
        "GATEWAY_AUTH__TOKENS_FILE": str(folder / "tokens.jsonl"),
        "GATEWAY_AUDIT__FILE": str(folder / "audit.jsonl"),
        **env,
    }
    tokens = {name: token for name, (token, _) in made.items()}
    return serving(["gateway.py", "--config", str(folder / "gateway.json")], environment), tokens


@pytest.fixture(scope="module")
def gateway(data_dir, tmp_path_factory):
    running, tokens = start(
        data_dir,
        tmp_path_factory.mktemp("security-http"),
        GATEWAY_LIMITS__HEADER_TIMEOUT_S=str(HEAD_TIMEOUT_S),
        GATEWAY_LIMITS__KEEP_ALIVE_S="2",
        GATEWAY_LIMITS__SESSIONS_PER_MINUTE="100000",
        GATEWAY_AUTH__FAILURES_PER_MINUTE="100000",
    )
    with running as base:
        yield base, tokens


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def connect(base: str) -> socket.socket:
    host, port = base.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=60)


def closed_by_server(sock: socket.socket, within_s: float = 60) -> bool:
    """Wait (bounded) until the server closes sock; True if it did."""
    sock.settimeout(within_s)
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return True


def test_an_8_mib_header_gets_431_without_the_gateway_reading_it(gateway):
    base, _ = gateway
    sock = connect(base)
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: ")
    sent, answer, chunk = 0, b"", b"a" * 65536
    try:
        while sent < 8 << 20 and not answer:
            sock.sendall(chunk)
            sent += len(chunk)
            sock.setblocking(False)
            try:
                answer = sock.recv(65536)
            except BlockingIOError:
                pass
            finally:
                sock.settimeout(60)
        answer += sock.recv(65536)
    except (BrokenPipeError, ConnectionResetError):
        pass
    finally:
        sock.close()
    assert answer.startswith(b"HTTP/1.1 431"), answer[:100]
    assert b"at most 65536 bytes" in answer
    assert sent < 8 << 20  # refused before the client could send it all
    assert httpx.get(base + "/health", timeout=30).json() == {"status": "ok"}


def test_half_sent_requests_are_closed_after_the_header_timeout(gateway):
    base, _ = gateway
    sockets = [connect(base) for _ in range(10)]
    started = time.monotonic()
    for sock in sockets:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
    assert all(closed_by_server(sock) for sock in sockets)
    assert time.monotonic() - started >= HEAD_TIMEOUT_S * 0.9  # not before the setting's time
    for sock in sockets:
        sock.close()
    assert httpx.get(base + "/health", timeout=30).status_code == 200


def test_a_client_trickling_its_headers_is_closed_though_it_keeps_sending(gateway):
    base, _ = gateway
    sock = connect(base)
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    deadline = time.monotonic() + 60
    closed = False
    while time.monotonic() < deadline and not closed:
        try:
            sock.sendall(b"X")
            sock.settimeout(0.5)
            closed = sock.recv(100) == b""
        except TimeoutError:
            continue
        except (BrokenPipeError, ConnectionResetError):
            closed = True
    sock.close()
    assert closed


def test_an_idle_keep_alive_connection_is_closed(gateway):
    base, _ = gateway
    sock = connect(base)
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert sock.recv(65536).startswith(b"HTTP/1.1 200")
    assert closed_by_server(sock)
    sock.close()


@pytest.mark.parametrize("method,path", [
    ("POST", "/mcp"), ("GET", "/metrics"), ("GET", "/sql/results/abc.csv"),
    ("GET", "/sql/results/abc.parquet"), ("GET", "/no-such-route"),
])  # fmt: skip
def test_every_route_needs_a_token_and_the_401_says_how_to_authenticate(gateway, method, path):
    base, _ = gateway
    for headers in ({}, bearer("gw_wrong-token-of-a-guesser-0123456789")):
        answer = httpx.request(method, base + path, headers=MCP_HEADERS | headers, timeout=30)
        assert answer.status_code == 401
        assert answer.headers["www-authenticate"].startswith("Bearer")
        assert "Authorization: Bearer <token>" in answer.json()["error_description"]


def test_ready_shows_only_the_overall_state_without_an_admin_token(gateway):
    base, tokens = gateway
    for headers in ({}, bearer(tokens["alice"]), bearer("gw_not-a-token-at-all-0123456789")):
        answer = httpx.get(base + "/ready", headers=headers, timeout=30)
        assert answer.status_code == 200
        assert answer.json().keys() == {"status"}
        assert "duckdb" not in answer.text
    details = httpx.get(base + "/ready", headers=bearer(tokens["ops"]), timeout=30).json()
    assert details["mounts"]["sql"]["database"].endswith(".duckdb")


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_a_stored_result_is_only_for_the_principal_that_made_it(gateway, mode):
    base, tokens = gateway
    async with Client(base + "/mcp", auth=tokens["alice"], mode=mode) as alice:
        page = await alice.call_tool("sql_query", {"sql": "SELECT * FROM airports ORDER BY faa"})
        handle = page.structured_content["result"]
        rows = await alice.call_tool("sql_read_result", {"result_id": handle["id"], "offset": 0})
    assert rows.structured_content["rows"]
    own = httpx.get(base + handle["csv"], headers=bearer(tokens["alice"]), timeout=60)
    assert own.status_code == 200 and len(own.text.strip().splitlines()) == 1 + 1458
    other = httpx.get(base + handle["parquet"], headers=bearer(tokens["bob"]), timeout=60)
    assert other.status_code == 404 and "another client" in other.json()["error"]
    assert httpx.get(base + handle["csv"], timeout=60).status_code == 401
    no_scope = httpx.get(base + handle["csv"], headers=bearer(tokens["ops"]), timeout=60)
    assert no_scope.status_code == 403
    async with Client(base + "/mcp", auth=tokens["bob"], mode=mode) as bob:
        with pytest.raises(ToolError, match="No stored result"):
            await bob.call_tool("sql_read_result", {"result_id": handle["id"]})
        with pytest.raises((ResourceError, MCPError), match="No stored result"):
            await bob.read_resource(handle["uri"])


def test_the_301st_session_of_one_token_is_refused_until_one_ends(gateway):
    base, tokens = gateway
    headers = MCP_HEADERS | bearer(tokens["carol"])
    sessions = []
    with httpx.Client(base_url=base, timeout=60) as http:
        for _ in range(300):
            answer = http.post("/mcp", json=INITIALIZE, headers=headers)
            assert answer.status_code == 200
            sessions.append(answer.headers["mcp-session-id"])
        refused = http.post("/mcp", json=INITIALIZE, headers=headers)
        assert refused.status_code == 429
        assert "Too many open sessions" in refused.json()["error"]["message"]
        other = http.post("/mcp", json=INITIALIZE, headers=MCP_HEADERS | bearer(tokens["bob"]))
        assert other.status_code == 200
        ended = http.delete("/mcp", headers=headers | {"mcp-session-id": sessions[0]})
        assert ended.status_code < 300
        assert http.post("/mcp", json=INITIALIZE, headers=headers).status_code == 200


@pytest.fixture(scope="module")
def strict(data_dir, tmp_path_factory):
    running, tokens = start(
        data_dir,
        tmp_path_factory.mktemp("security-strict"),
        GATEWAY_LIMITS__SESSIONS_PER_MINUTE="2",
        GATEWAY_AUTH__FAILURES_PER_MINUTE="5",
    )
    with running as base:
        yield base, tokens


def test_new_sessions_are_rate_limited_per_principal(strict):
    base, tokens = strict
    with httpx.Client(base_url=base, timeout=60) as http:
        answers = [
            http.post("/mcp", json=INITIALIZE, headers=MCP_HEADERS | bearer(tokens["carol"]))
            for _ in range(3)
        ]
        other = http.post("/mcp", json=INITIALIZE, headers=MCP_HEADERS | bearer(tokens["bob"]))
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert "Too many new sessions" in answers[2].json()["error"]["message"]
    assert other.status_code == 200


def test_failed_authentication_is_throttled_per_address_but_known_tokens_pass(strict):
    base, tokens = strict
    with httpx.Client(base_url=base, timeout=60) as http:
        assert http.get("/metrics", headers=bearer(tokens["ops"])).status_code == 200
        guesses = [
            http.get("/metrics", headers=bearer(f"gw_guess-{n}-0123456789abcdef")) for n in range(6)
        ]
        assert [g.status_code for g in guesses] == [401] * 5 + [429]
        assert int(guesses[-1].headers["retry-after"]) >= 1
        # Neither a right token never seen before nor no token gets an answer now ...
        assert http.get("/metrics", headers=bearer(tokens["alice"])).status_code == 429
        assert http.post("/mcp", json=INITIALIZE, headers=MCP_HEADERS).status_code == 429
        # ... but a token this address used successfully goes on working, and /health answers.
        assert http.get("/metrics", headers=bearer(tokens["ops"])).status_code == 200
        assert http.get("/health").status_code == 200
