"""The real gateway process over loopback HTTP: fastmcp clients in both eras, the official MCP SDK
client, /health and /ready, Host checking, and a clean shutdown that leaves no subprocess behind.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import mcp
import pytest
from fastmcp import Client
from fastmcp.client.transports import StdioTransport
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client

from servers.settings import PROJECT_ROOT
from tests.backend_helpers import alive
from tests.conftest import free_port, serving, wait_until_serving

pytestmark = pytest.mark.slow

ONE_CALL_PER_NAMESPACE = [
    ("sql_query", {"sql": "SELECT name FROM airlines WHERE carrier = 'UA'"}),
    ("pipelines_run_route_profile", {"origin": "EWR", "dest": "ORD"}),
    ("admin_status", {}),
    ("demo_distance", {"lat1": 40.6398, "lon1": -73.7789, "lat2": 33.9425, "lon2": -118.4081}),
]

# admin_status is called by name: admin_* is listed only to tokens naming the admin scope.
LISTED = {name for name, _ in ONE_CALL_PER_NAMESPACE if not name.startswith("admin_")}


@pytest.fixture(scope="module")
def gateway_url(data_dir: Path):
    with serving(["gateway.py"], {"GATEWAY_DATA_DIR": str(data_dir)}) as base:
        yield base


def check_answers(name: str, structured: dict) -> None:
    if name == "sql_query":
        assert structured["rows"] == [["United Air Lines Inc."]]
    elif name == "pipelines_run_route_profile":
        assert structured["outputs"]["route_summary"]["flights"] > 0
    elif name == "admin_status":
        assert structured["backends"]["demo"]["status"] == "up"
    else:
        assert 3970 < structured["km"] < 3990  # JFK to LAX


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_fastmcp_client_lists_and_calls_every_namespace_over_http(gateway_url, mode):
    async with Client(gateway_url + "/mcp", mode=mode) as client:
        names = {tool.name for tool in await client.list_tools()}
        assert names >= LISTED
        for name, arguments in ONE_CALL_PER_NAMESPACE:
            result = await client.call_tool(name, arguments)
            check_answers(name, result.structured_content)


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_official_sdk_client_lists_and_calls_every_namespace(gateway_url, mode):
    async with mcp.Client(gateway_url + "/mcp", mode=mode) as client:
        names = {tool.name for tool in (await client.list_tools()).tools}
        assert names >= LISTED
        for name, arguments in ONE_CALL_PER_NAMESPACE:
            result = await client.call_tool(name, arguments)
            assert not result.is_error, result.content
            check_answers(name, result.structured_content)


async def test_official_sdk_session_with_the_classic_handshake(gateway_url):
    async with (
        streamable_http_client(gateway_url + "/mcp") as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        tools = (await session.list_tools()).tools
        assert "sql_query" in {tool.name for tool in tools}
        result = await session.call_tool("sql_query", {"sql": "SELECT 6 * 7 AS answer"})
        assert result.structured_content["rows"] == [[42]]


def test_health_answers_without_revealing_anything(gateway_url):
    response = httpx.get(gateway_url + "/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_ready_reports_every_mount_and_backend(gateway_url):
    response = httpx.get(gateway_url + "/ready", timeout=10)
    assert response.status_code == 200
    report = response.json()
    assert report["status"] == "ready"
    assert {name: m["status"] for name, m in report["mounts"].items()} == {
        "sql": "up",
        "pipelines": "up",
    }
    assert report["backends"]["demo"]["status"] == "up"
    assert str(PROJECT_ROOT) not in json.dumps(report)


def test_a_forged_host_header_is_refused(gateway_url):
    initialize = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    headers = {"Host": "evil.example", "Accept": "application/json, text/event-stream"}
    response = httpx.post(gateway_url + "/mcp", json=initialize, headers=headers)
    assert response.status_code == 421


def test_a_foreign_origin_is_refused(gateway_url):
    initialize = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    headers = {"Origin": "http://evil.example", "Accept": "application/json, text/event-stream"}
    response = httpx.post(gateway_url + "/mcp", json=initialize, headers=headers)
    assert response.status_code == 403


def _children(pid: int) -> set[int]:
    """Every descendant of pid, from /proc."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_shutdown_on_a_signal_leaves_no_subprocess_behind(data_dir, sig):
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "gateway.py", "--port", str(port)],
        cwd=PROJECT_ROOT,
        env={**os.environ, "GATEWAY_DATA_DIR": str(data_dir)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_until_serving(process, f"http://127.0.0.1:{port}/health")
        async with Client(f"http://127.0.0.1:{port}/mcp") as client:
            arguments = {"value": 1, "from_unit": "km", "to_unit": "m"}
            await client.call_tool("demo_convert_units", arguments)
        children = _children(process.pid)
        assert children, "the stdio demo backend should be running as a child"
        process.send_signal(sig)
        # uvicorn shuts down gracefully, then re-raises the signal it caught.
        assert process.wait(timeout=15) in (0, -sig)
        assert "Application shutdown complete" in process.stderr.read().decode()
    finally:
        if process.poll() is None:
            process.kill()
    deadline = time.monotonic() + 5
    while any(alive(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [pid for pid in children if alive(pid)]


async def test_gateway_over_stdio_serves_every_namespace_like_a_desktop_client(data_dir):
    transport = StdioTransport(
        command=sys.executable,
        args=["gateway.py", "--transport", "stdio"],
        env={"GATEWAY_DATA_DIR": str(data_dir)},
        cwd=str(PROJECT_ROOT),
        keep_alive=False,
    )
    async with Client(transport) as client:
        names = {tool.name for tool in await client.list_tools()}
        result = await client.call_tool("demo_distance", ONE_CALL_PER_NAMESPACE[3][1])
    assert names >= LISTED
    check_answers("demo_distance", result.structured_content)


async def test_a_pipeline_run_over_stdio_keeps_the_protocol_stream_clean(data_dir):
    transport = StdioTransport(
        command=sys.executable,
        args=["gateway.py", "--transport", "stdio"],
        env={"GATEWAY_DATA_DIR": str(data_dir), "GATEWAY_MCPSERVERS": "{}"},
        cwd=str(PROJECT_ROOT),
        keep_alive=False,
    )
    async with Client(transport, mode="legacy") as client:
        result = await client.call_tool("pipelines_run_route_profile", {"dest": "ORD"})
        again = await client.call_tool("sql_query", {"sql": "SELECT 1"})
    assert result.structured_content["outputs"]["route_summary"]["flights"] > 0
    assert again.structured_content["rows"] == [[1]]


async def test_a_person_downloads_a_large_result_from_the_gateway(gateway_url):
    async with Client(gateway_url + "/mcp") as client:
        page = await client.call_tool("sql_query", {"sql": "SELECT * FROM airports ORDER BY faa"})
    handle = page.structured_content["result"]
    csv = httpx.get(gateway_url + handle["csv"], timeout=30)
    assert csv.status_code == 200 and csv.headers["content-type"].startswith("text/csv")
    lines = csv.text.strip().splitlines()
    assert len(lines) == 1 + 1458 and lines[0].startswith('"faa","name"')
