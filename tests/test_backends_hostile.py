"""Hostile backends, attacked the way a hostile party would: real backend processes serving a
catalog with URIs that are not ``scheme://...``, redirects, HTML pages, HTTP 500s, answers and
catalogs far over the limits; backend keys that would capture the gateway's own tools; invalid
entries carrying secrets. Each is contained to the backend itself, with the reason shown."""

import os
import subprocess
import sys
import threading
from contextlib import contextmanager

import anyio
import psutil
import pytest
from fastmcp import Client
from fastmcp.exceptions import ToolError
from pydantic import ValidationError

from servers.settings import PROJECT_ROOT, GatewaySettings
from tests.backend_helpers import backend_process, gateway_with, stdio_backend
from tests.conftest import wait_for_backend
from tests.hostile_backend import BAD_URIS, GOOD_URI

pytestmark = pytest.mark.slow

MODES = ["auto", "legacy"]
MIB = 1024 * 1024


async def status_of(client: Client, name: str) -> dict:
    return (await client.call_tool("admin_status", {})).structured_content["backends"][name]


async def settled(client: Client, name: str, timeout_s: float = 60) -> dict:
    """Poll until backend ``name`` is no longer starting; return its status."""
    with anyio.fail_after(timeout_s):
        while (status := await status_of(client, name))["status"] == "starting":
            await anyio.sleep(0.1)
    return status


@pytest.mark.parametrize("mode", MODES)
async def test_resources_with_uris_that_are_not_scheme_uris_are_dropped_alone(data_dir, mode):
    with backend_process(transport="http") as good, backend_process("--hostile", "bad-uris") as bad:
        gateway = gateway_with(data_dir, good={"url": good.url}, odd={"url": bad.url})
        async with Client(gateway, mode=mode) as client:
            await wait_for_backend(client, "odd")
            await wait_for_backend(client, "good")
            tools = {tool.name for tool in await client.list_tools()}
            uris = {str(resource.uri) for resource in await client.list_resources()}
            fine = await client.read_resource("test://odd/fine")
            status = await status_of(client, "odd")
    assert {"odd_echo", "good_echo", "sql_query"} <= tools  # its siblings and the others stay
    assert {"test://odd/fine", "test://good/greeting"} <= uris
    assert not [uri for uri in uris if not uri.split("://")[0].isalpha()]
    assert fine[0].text == f"read {GOOD_URI}"
    assert status["status"] == "up"
    dropped = status["dropped"]
    assert len(dropped) == len(BAD_URIS)
    assert all("is not of the form scheme://" in reason for reason in dropped)
    assert any("urn:example:report" in reason for reason in dropped)


@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        ("redirect", "answered with a redirect (HTTP 307), which the gateway does not follow"),
        ("garbage", "answered with text/html, not MCP"),
        ("error500", "answered HTTP 500"),
        (
            "unauthorised",
            "answered HTTP 401: not authorised (check its headers or bearer_token_env)",
        ),
    ],
)
async def test_a_backend_answering_a_redirect_garbage_500_or_401_is_down_with_the_reason(
    data_dir, mode, reason
):
    with backend_process("--hostile", mode) as hostile:
        gateway = gateway_with(data_dir, bad={"url": hostile.url})
        async with Client(gateway) as client:
            status = await settled(client, "bad")
            with pytest.raises(ToolError, match="backend 'bad' is unavailable"):
                await client.call_tool("bad_echo", {})
            (provider,) = [p for p in gateway.providers if hasattr(p, "backends")]
            numbers = provider.metrics()["bad"]
            report = (await client.call_tool("admin_status", {})).structured_content
    assert status["status"] == "down"
    assert status["error"] == reason
    assert numbers["up"] == 0.0
    assert report["status"] == "degraded"


@contextmanager
def peak_rss_growth():
    """Sample this process's resident memory every 5 ms; yields a dict with 'peak' growth."""
    process, seen = psutil.Process(), {"peak": 0}
    base = process.memory_info().rss
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            seen["peak"] = max(seen["peak"], process.memory_info().rss - base)
            stop.wait(0.005)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        stop.set()
        thread.join()


@pytest.mark.parametrize("transport", ["http", "stdio"])
async def test_a_100_mib_answer_is_cut_off_early_and_the_gateway_stays_small(data_dir, transport):
    with backend_process() as http_backend:
        entry = {"url": http_backend.url} if transport == "http" else stdio_backend()
        gateway = gateway_with(data_dir, big={**entry, "timeout_s": 60})
        async with Client(gateway) as client:
            await wait_for_backend(client, "big")
            assert (await client.call_tool("big_huge", {"mib": 0})).data == ""
            refused = pytest.raises(ToolError, match="answered with more than 5000000 bytes")
            with peak_rss_growth() as memory, refused:
                await client.call_tool("big_huge", {"mib": 100})
            status = await status_of(client, "big")
            assert (await client.call_tool("big_echo", {"text": "still"})).data == "still"
    print(f"{transport}: peak memory growth {memory['peak'] / MIB:.1f} MiB for a 100 MiB answer")
    assert memory["peak"] < 60 * MIB  # the answer is never held: 5 MB budget, then cut
    assert status["status"] == "up"  # it answered: too large is not down


async def test_a_catalog_over_its_byte_budget_makes_that_backend_down_and_no_other(data_dir):
    with backend_process("--hostile", "huge-catalog") as hostile, backend_process() as good:
        gateway = gateway_with(
            data_dir, flood={"url": hostile.url, "timeout_s": 60}, good={"url": good.url}
        )
        async with Client(gateway) as client:
            with peak_rss_growth() as memory:
                status = await settled(client, "flood")
            await wait_for_backend(client, "good")
            tools = {tool.name for tool in await client.list_tools()}
    assert status["status"] == "down"
    assert status["error"] == "its catalog is larger than 20000000 bytes (max_catalog_bytes)"
    assert "good_echo" in tools and not [t for t in tools if t.startswith("flood_")]
    assert memory["peak"] < 150 * MIB  # 64 MiB sent; cut at 20 MB


@pytest.mark.parametrize("key", ["search", "call", "sql", "pipelines", "admin", "admin_x"])
def test_a_backend_key_that_would_capture_the_gateways_own_tools_is_refused(key):
    with pytest.raises(ValidationError, match=f"mcpServers entry '{key}'"):
        GatewaySettings(mcpServers={key: {"url": "http://127.0.0.1:9/mcp"}})


def test_the_gateways_own_tool_names_are_the_reserved_ones():
    from servers.gateway.tool_search import CALL_TOOL, SEARCH_TOOL
    from servers.settings import GATEWAY_TOOLS

    assert {SEARCH_TOOL, CALL_TOOL} == set(GATEWAY_TOOLS)


def test_an_invalid_backend_entry_never_shows_its_secrets_on_stderr(tmp_path):
    config = tmp_path / "gateway.json"
    entry = {
        "url": "ftp://backend.example/mcp",  # invalid: not http(s)
        "headers": {"Authorization": "Bearer header-secret-4711"},
        "env": {"API_KEY": "env-secret-4712"},
    }
    config.write_text(
        __import__("json").dumps({"data_dir": str(tmp_path), "mcpServers": {"leaky": entry}})
    )
    result = subprocess.run(
        [sys.executable, "gateway.py", "--config", str(config), "--transport", "stdio"],
        cwd=PROJECT_ROOT,
        env={**os.environ},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "mcpServers.leaky" in result.stderr and "http:// or https://" in result.stderr
    assert "secret-471" not in result.stderr + result.stdout


async def test_a_reload_to_a_key_that_would_capture_the_gateways_tools_is_refused(data_dir):
    from gateway import create_gateway

    settings = GatewaySettings.load(data_dir=data_dir, mcpServers={})
    capture = {"search": {"url": "http://127.0.0.1:9/mcp"}}
    gateway = create_gateway(
        settings, lambda: GatewaySettings.load(data_dir=data_dir, mcpServers=capture)
    )
    async with Client(gateway) as client:
        with pytest.raises(ToolError, match="'search'.*search_tools"):
            await client.call_tool("admin_reload", {"confirm": True})
        status = (await client.call_tool("admin_status", {})).structured_content
    assert status["backends"] == {}
