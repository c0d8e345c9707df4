"""Helpers for pipeline tests that watch real worker processes."""

import os
from pathlib import Path

import anyio


def group_alive(pid: int) -> bool:
    """Whether any process of the worker's process group (the worker and its helpers) lives."""
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def wait_for_pid(marker: Path) -> int:
    """The process id the slow fixture pipeline wrote to marker, once it has started."""
    with anyio.fail_after(30):
        while not (marker.exists() and marker.read_text()):
            await anyio.sleep(0.05)
    return int(marker.read_text())


async def wait_until_gone(pid: int) -> None:
    """Return once no process of pid's group is left; fail after 10 s."""
    with anyio.fail_after(10):
        while group_alive(pid):
            await anyio.sleep(0.05)
