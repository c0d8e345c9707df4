"""The gateway's HTTP stack with real backends: no per-call listing of every backend (the
SEP-2243 fan-out), Mcp-Param header checks still enforced, /ready and admin status with circuit
and catalog states, credentials kept from backends unless named, and tools/list_changed on a
2026-era listen stream."""

import anyio
import mcp
import mcp_types
import pytest
from fastmcp.server.middleware import Middleware
from fastmcp.utilities.tests import asgi_server
from mcp.client.streamable_http import streamable_http_client

from tests.backend_helpers import backend_process, blackhole, closed_port_url, gateway_with

pytestmark = pytest.mark.slow

LOCAL_CALL = ("sql_query", {"sql": "SELECT 42 AS answer"})


@pytest.fixture(scope="module")
def backend():
    with backend_process() as running:
        yield running


class CountListings(Middleware):
    """Observes how often the gateway lists its tools."""

    def __init__(self) -> None:
        self.listings = 0

    async def on_list_tools(self, context, call_next):
        self.listings += 1
        return await call_next(context)


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_a_call_over_http_never_makes_the_gateway_list_every_backend(data_dir, backend, mode):
    gateway = gateway_with(data_dir, remote={"url": backend.url})
    counter = CountListings()
    gateway.add_middleware(counter)
    async with asgi_server(gateway) as server, server.client(mode=mode) as client:
        await client.list_tools()
        before = (counter.listings, backend.stats().get("tools/list", 0))
        for _ in range(5):
            assert (await client.call_tool(*LOCAL_CALL)).structured_content["rows"] == [[42]]
            assert (await client.call_tool("remote_echo", {"text": "x"})).data == "x"
        after = (counter.listings, backend.stats().get("tools/list", 0))
    assert after == before


async def test_a_local_call_over_http_does_not_wait_for_a_hung_backend(data_dir):
    limits = {"timeout_s": 5, "connect_timeout_s": 5}
    with blackhole() as hole:
        gateway = gateway_with(data_dir, hung={"url": hole.url, **limits})
        async with asgi_server(gateway) as server, server.http_client() as http:
            # A raw 2026-07-28 tools/call, as any client may send without listing first.
            with anyio.fail_after(2):  # a wait for the backend would take up to 10 s
                headers = {**MODERN, "Mcp-Name": LOCAL_CALL[0]}
                response = await http.post("/mcp", json=modern_call(*LOCAL_CALL), headers=headers)
    assert response.status_code == 200
    assert '"rows":[[42]]' in response.text.replace(" ", "")


MODERN = {
    "Accept": "application/json, text/event-stream",
    "MCP-Protocol-Version": "2026-07-28",
    "Mcp-Method": "tools/call",
}


def modern_call(name: str, arguments: dict) -> dict:
    meta = {
        mcp_types.PROTOCOL_VERSION_META_KEY: "2026-07-28",
        mcp_types.CLIENT_INFO_META_KEY: {"name": "raw", "version": "1"},
        mcp_types.CLIENT_CAPABILITIES_META_KEY: {},
    }
    return {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": name, "arguments": arguments, "_meta": meta},
    }


async def test_mcp_param_headers_are_still_checked_against_the_cached_schema(data_dir, backend):
    gateway = gateway_with(data_dir, remote={"url": backend.url})
    async with asgi_server(gateway) as server:
        async with server.client() as client:  # lists, then mirrors the header itself
            assert (await client.call_tool("remote_regional", {"region": "eu"})).data == "eu"
        async with server.http_client() as http:
            headers = {**MODERN, "Mcp-Name": "remote_regional", "Mcp-Param-Region": "us"}
            call = modern_call("remote_regional", {"region": "eu"})
            mismatch = await http.post("/mcp", json=call, headers=headers)
    assert mismatch.status_code == 400
    assert "Mcp-Param-Region" in mismatch.text


async def test_ready_and_admin_status_show_each_backends_circuit_and_catalog(data_dir, backend):
    gateway = gateway_with(data_dir, up={"url": backend.url}, down={"url": closed_port_url()})
    async with asgi_server(gateway) as server:
        async with server.http_client() as http:
            with anyio.fail_after(60):  # /ready never waits: poll until both have settled
                while True:
                    ready = (await http.get("/ready")).json()
                    states = {b["status"] for b in ready["backends"].values()}
                    if (
                        "starting" not in states
                        and ready["backends"]["up"]["catalog"]["state"] != "none"
                    ):
                        break
                    await anyio.sleep(0.1)
        async with server.client() as client:
            status = (await client.call_tool("admin_status", {})).structured_content
    assert ready["status"] == "degraded"
    up, down = ready["backends"]["up"], ready["backends"]["down"]
    assert (up["status"], up["circuit"]["state"], up["catalog"]["state"]) == (
        "up",
        "closed",
        "fresh",
    )
    assert up["protocol"] == "2026-07-28" and up["catalog"]["tools"] > 5
    assert down["status"] == "down" and down["circuit"]["consecutive_failures"] >= 1
    assert down["error"] == "connection refused or host unreachable"
    assert status["backends"]["down"]["circuit"] == down["circuit"] | {
        "retry_in_s": status["backends"]["down"]["circuit"]["retry_in_s"]
    }


@pytest.mark.parametrize(
    ("forward", "expected"), [([], set()), (["X-Tenant", "Authorization"], {"x-tenant", "auth"})]
)
async def test_client_credentials_reach_a_backend_only_when_its_entry_names_them(
    data_dir, backend, forward, expected
):
    gateway = gateway_with(data_dir, remote={"url": backend.url, "forward_headers": forward})
    sent = {"Authorization": "Bearer client-secret", "Cookie": "session=abc", "X-Tenant": "acme"}
    async with asgi_server(gateway) as server, server.client(headers=sent) as client:
        received = (await client.call_tool("remote_headers", {})).data
    seen = set()
    if received.get("x-tenant") == "acme":
        seen.add("x-tenant")
    if received.get("authorization") == "Bearer client-secret":
        seen.add("auth")
    assert seen == expected
    assert "cookie" not in received


async def test_a_listen_stream_hears_when_a_backend_adds_a_tool(data_dir):
    with backend_process() as own_backend:
        gateway = gateway_with(data_dir, remote={"url": own_backend.url})
        async with asgi_server(gateway) as server, server.http_client() as http:
            transport = streamable_http_client(server.url, http_client=http)
            async with (
                mcp.Client(transport) as listener,
                listener.listen(tools_list_changed=True) as subscription,
                server.client() as caller,
            ):
                await caller.call_tool("remote_grow", {"name": "fresh"})
                with anyio.fail_after(10):
                    event = await anext(aiter(subscription))
                tools = {tool.name for tool in (await listener.list_tools()).tools}
    assert type(event).__name__ == "ToolsListChanged"
    assert "remote_fresh" in tools
