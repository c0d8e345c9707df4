"""Shared fixtures: the real sample database (built once per run), settings, the gateway, and
helpers for tests that start real processes on loopback ports."""

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from fastmcp import Client

from servers.sample_data import ensure_sample_database
from servers.settings import PROJECT_ROOT, GatewaySettings

# A raw 2025-11-25 initialize request and the headers Streamable HTTP wants, for tests that
# speak HTTP by hand.
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "raw", "version": "0"},
    },
}
MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data directory holding the real sample database, built once for the whole run."""
    directory = tmp_path_factory.mktemp("data")
    ensure_sample_database(directory)
    return directory


@pytest.fixture(scope="session")
def settings(data_dir: Path) -> GatewaySettings:
    return GatewaySettings.load(data_dir=data_dir)


@pytest.fixture(scope="session")
def gateway(settings: GatewaySettings):
    from gateway import create_gateway

    return create_gateway(settings)


@pytest.fixture(params=["auto", "legacy"])
async def client(request: pytest.FixtureRequest, gateway) -> Iterator[Client]:
    """An in-memory client of the gateway, in each protocol era."""
    async with Client(gateway, mode=request.param) as connected:
        yield connected


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def serving(args: list[str], env: dict[str, str], ready_path: str = "/health") -> Iterator[str]:
    """Run `python <args>` from the project root with --port; yield its base URL once it answers.

    The process is stopped with SIGTERM at the end and must exit by itself.
    """
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, *args, "--port", str(port)],
        cwd=PROJECT_ROOT,
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(process, base + ready_path)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            raise


def wait_until_serving(process: subprocess.Popen, url: str, timeout_s: float = 120) -> None:
    """Return once url answers; generous, since a start on a loaded machine took 30 s."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited early: {process.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout_s} s")


async def wait_for_backend(client: Client, name: str, status: str = "up", timeout_s: float = 90):
    """Poll admin_status until backend `name` reports `status` (a cold stdio start can take a
    while on a loaded machine); return the last status seen."""
    import anyio

    seen = None
    with anyio.move_on_after(timeout_s):
        while True:
            state = (await client.call_tool("admin_status", {})).structured_content
            seen = state["backends"].get(name, {}).get("status")
            if seen == status:
                return state
            await anyio.sleep(0.2)
    raise AssertionError(f"backend {name!r} is {seen!r}, not {status!r}, after {timeout_s} s")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """In CI (CI set, as .ci/run is run) a skipped test fails the run: every service the tests
    need is installed there, so a skip means one is missing."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter else []
    if os.environ.get("CI") and skipped and exitstatus == 0:
        reporter.write_line(f"CI: {len(skipped)} test(s) skipped; in CI nothing may be skipped.")
        session.exitstatus = 1
