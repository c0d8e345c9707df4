"""Helpers for the backend tests: real backend processes on loopback ports that can be killed
and restarted on the same port, a hung backend, and gateways configured around them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx

from gateway import create_gateway
from servers.settings import PROJECT_ROOT, GatewaySettings
from tests.conftest import free_port

# Fast, test-sized limits: every wait in these tests is bounded by a few of these.
QUICK = {"timeout_s": 2.0, "connect_timeout_s": 1.0}


@dataclass
class BackendProcess:
    """``tests.backend_server`` over HTTP (or SSE) on a fixed loopback port; kill it, start it
    again."""

    extra_args: list[str] = field(default_factory=list)
    transport: str = "http"
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None
    # Its stderr goes to a file, not a pipe: a pipe nobody reads fills up and stalls it.
    log: IO[bytes] = field(default_factory=tempfile.TemporaryFile)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/{'sse' if self.transport == 'sse' else 'mcp'}"

    def start(self) -> BackendProcess:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.backend_server", "--transport", self.transport]
            + ["--port", str(self.port), *self.extra_args],
            cwd=PROJECT_ROOT,
            stdout=subprocess.DEVNULL,
            stderr=self.log,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"backend exited early: {self.output()[-2000:]}")
            try:
                httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=1).raise_for_status()
                return self
            except httpx.HTTPError:
                time.sleep(0.05)
        raise TimeoutError(f"backend on port {self.port} did not start within 30 s")

    def output(self) -> str:
        """What the backend wrote to stderr so far (for failure messages)."""
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def kill(self) -> None:
        """SIGKILL: no goodbye, connections just break."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.log.close()

    def stats(self) -> dict[str, int]:
        """How many of each MCP method this backend has served."""
        return httpx.get(f"http://127.0.0.1:{self.port}/stats", timeout=5).json()


@contextmanager
def backend_process(*extra_args: str, transport: str = "http") -> Iterator[BackendProcess]:
    backend = BackendProcess(list(extra_args), transport).start()
    try:
        yield backend
    finally:
        backend.stop()


@dataclass
class Blackhole:
    """A TCP server that accepts connections and never answers: a hung backend."""

    port: int
    accepted: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"


@contextmanager
def blackhole() -> Iterator[Blackhole]:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    listener.settimeout(0.1)
    hole = Blackhole(listener.getsockname()[1])
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            held.append(connection)
            hole.accepted += 1

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield hole
    finally:
        stop.set()
        thread.join(timeout=5)
        for connection in held:
            connection.close()
        listener.close()


def closed_port_url() -> str:
    """A loopback URL nothing listens on: a backend that is down."""
    return f"http://127.0.0.1:{free_port()}/mcp"


def gateway_with(data_dir: Path, **backends: dict):
    """A gateway whose mcpServers are exactly ``backends`` (with test-sized timeouts)."""
    servers = {name: {**QUICK, **entry} for name, entry in backends.items()}
    settings = GatewaySettings.load(data_dir=data_dir, mcpServers=servers)
    return create_gateway(settings)


def stdio_backend(*extra_args: str) -> dict:
    """An mcpServers entry running ``tests.backend_server`` over stdio."""
    return {
        "command": sys.executable,
        "args": ["-m", "tests.backend_server", *extra_args],
        "cwd": str(PROJECT_ROOT),
        "env": {"PYTHONPATH": str(PROJECT_ROOT), "PATH": os.environ.get("PATH", "")},
    }


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


# How the backend server's over-long tool begins once shortened under the namespace "remote".
LONG_TOOL_PREFIX = "remote_summarise_every_departure"
