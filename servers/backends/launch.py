"""Starting a stdio backend's process, as early as the gateway can.

A backend process takes about as long to start as the gateway does (it loads Python and an MCP
library of its own). ``start_early`` starts every enabled command backend's process before the
gateway loads and composes its servers, so the two start side by side; the backend's link takes
its process over with ``take`` when the gateway serves (a process that has exited by then is
reported as any exit is), and starts every later one itself with ``start``. This module imports
nothing heavy, so that it can run first.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import anyio.abc

if TYPE_CHECKING:
    from servers.settings import BackendConfig

# What a backend process inherits of the gateway's environment (as the MCP SDK's stdio client
# does), besides its own `env`: never the gateway's tokens and passwords.
INHERITED = ("HOME", "LOGNAME", "PATH", "SHELL", "TERM", "USER")

Key = tuple[str, tuple[str, ...], tuple[tuple[str, str], ...], str | None]
_early: dict[Key, anyio.abc.Process] = {}


def _key(command: str, args: Sequence[str], env: Mapping[str, str] | None, cwd) -> Key:
    return command, tuple(args), tuple(sorted((env or {}).items())), cwd and str(cwd)


def environment(env: Mapping[str, str] | None) -> dict[str, str]:
    inherited = {k: v for k in INHERITED if (v := os.environ.get(k)) and not v.startswith("()")}
    return inherited | dict(env or {})


async def start(
    command: str, args: Sequence[str], env: Mapping[str, str] | None, cwd
) -> anyio.abc.Process:
    """Start the process in a session of its own, its three streams piped (OSError when it
    cannot start)."""
    return await anyio.open_process(
        [command, *args], env=environment(env), cwd=cwd, start_new_session=True
    )


def take(
    command: str, args: Sequence[str], env: Mapping[str, str] | None, cwd
) -> anyio.abc.Process | None:
    """The process ``start_early`` started with exactly these parameters, once."""
    return _early.pop(_key(command, args, env, cwd), None)


async def start_early(backends: Mapping[str, BackendConfig]) -> None:
    """Start the process of every enabled command backend now. One that cannot start is left
    to its link, which starts it again and reports why it failed."""
    for config in backends.values():
        if not config.enabled or config.command is None:
            continue
        if config.cwd is not None and not Path(config.cwd).is_dir():
            continue
        with suppress(OSError):
            key = _key(config.command, config.args, config.env or None, config.cwd)
            _early[key] = await start(config.command, config.args, config.env, config.cwd)


async def discard_early() -> None:
    """Stop the processes no link took (the gateway did not get to serve)."""
    while _early:
        _, process = _early.popitem()
        with suppress(ProcessLookupError, OSError):
            os.killpg(process.pid, 9)
        with suppress(Exception):
            await process.aclose()
