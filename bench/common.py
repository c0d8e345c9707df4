"""Shared pieces of the benchmarks: timing statistics, a gateway process on a loopback port, and
memory readings. Benchmarks are not tests: they print figures and never assert on time."""

import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def summary(samples_s: list[float]) -> dict:
    """Median and p99 in milliseconds."""
    ordered = sorted(samples_s)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return {
        "n": len(ordered),
        "p50_ms": round(statistics.median(ordered) * 1000, 3),
        "p99_ms": round(p99 * 1000, 3),
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class Served:
    """A process serving HTTP on a loopback port: its base URL and its pid."""

    base: str
    pid: int


class StartFailed(RuntimeError):
    """A server a benchmark needs did not start: nothing was measured (not a regression)."""


@contextmanager
def server_process(
    args: list[str], env: dict[str, str] | None = None, ready: str = "/health", wait_s: float = 180
) -> Iterator[Served]:
    """`python <args> --port N` from the project root on a free loopback port; yields its base
    URL and pid once `ready` answers (within wait_s; StartFailed, with the process's last
    words, otherwise), and stops the process afterwards."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            [sys.executable, *args, "--port", str(port)],
            cwd=ROOT,
            env={**os.environ, **(env or {})},
            stdout=subprocess.DEVNULL,
            stderr=log,
        )

        def failed(why: str) -> StartFailed:
            log.seek(0)
            lines = log.read().decode(errors="replace").strip().splitlines()
            return StartFailed(f"{' '.join(args)} {why}: {lines[-1] if lines else '(no output)'}")

        try:
            deadline = time.monotonic() + wait_s
            while time.monotonic() < deadline:
                if process.poll() is not None:
                    raise failed(f"exited with code {process.returncode}")
                try:
                    if httpx.get(base + ready, timeout=1).status_code < 500:
                        break
                except httpx.HTTPError:
                    time.sleep(0.1)
            else:
                raise failed(f"did not answer within {wait_s:g} s")
            yield Served(base, process.pid)
        finally:
            process.terminate()
            process.wait(timeout=20)


@contextmanager
def serving(args: list[str], env: dict[str, str] | None = None, ready: str = "/health"):
    """`python <args> --port N` from the project root on a free loopback port; yields its base
    URL once `ready` answers, and stops the process afterwards."""
    with server_process(args, env, ready) as served:
        yield served.base


@contextmanager
def gateway_process(env: dict[str, str], args: list[str] = ()) -> Iterator[str]:
    """A real gateway process on a free loopback port; yields its /mcp URL."""
    with serving(["gateway.py", *args], env) as base:
        yield base + "/mcp"


def rss_mb(pid: int | None = None, field: str = "VmRSS") -> float:
    """Resident memory of a process (this one by default), in MB; `field="VmHWM"` gives its
    peak since it started or since reset_peak_rss."""
    status = Path(f"/proc/{pid or 'self'}/status").read_text()
    line = next(line for line in status.splitlines() if line.startswith(f"{field}:"))
    return int(line.split()[1]) / 1024


def reset_peak_rss(pid: int) -> None:
    """Set a process's VmHWM (peak resident memory) back to its current VmRSS (Linux)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


async def ignore_log(message) -> None:
    """A client log handler that drops the server's log lines: fastmcp clients print them by
    default, and a benchmark times the server, not the printing (and keeps stdout for JSON)."""


def machine() -> dict:
    import duckdb
    import fastmcp

    return {
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "fastmcp": fastmcp.__version__,
        "duckdb": duckdb.__version__,
    }
