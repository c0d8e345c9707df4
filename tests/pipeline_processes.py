"""Helpers for pipeline tests that watch real worker processes."""

import os
from pathlib import Path

import anyio
import psutil


def group_alive(pgid: int) -> bool:
    """Whether any process of process group pgid (a worker and its helpers) lives."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def alive(pid: int) -> bool:
    """Whether process pid runs (a zombie waiting for its parent does not)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


async def wait_for_pid(marker: Path) -> int:
    """The process id the slow fixture pipeline wrote to marker, once it has started."""
    with anyio.fail_after(30):
        while not (marker.exists() and marker.read_text()):
            await anyio.sleep(0.05)
    return int(marker.read_text())


async def wait_until_gone(pid: int, timeout_s: float = 60) -> None:
    """Return once process pid and every process of its group are gone (pid need not lead its
    group: a Dask node runs in a process of the run worker's group); fail after timeout_s."""
    try:
        pgid = os.getpgid(pid)
    except ProcessLookupError:
        return
    with anyio.fail_after(timeout_s):
        while alive(pid) or group_alive(pgid):
            await anyio.sleep(0.05)
