"""Which process this is, across the containers of a deployment that share a data directory.

Process ids repeat across containers (each has its own PID namespace), so a name for per-process
folders (DuckDB spill, pipeline scratch) and for a replica's label joins the host name, the
process id and a random part. A folder is judged stale by its process id only when its host is
this host: another container's process ids mean nothing here.
"""

from __future__ import annotations

import atexit
import os
import secrets
import shutil
import socket
from pathlib import Path

_names: dict[int, str] = {}


def process_name() -> str:
    """``<host>-<pid>-<random>`` for this process (a new one after a fork)."""
    pid = os.getpid()
    if pid not in _names:
        host = socket.gethostname().replace("-", "_") or "host"
        _names[pid] = f"{host}-{pid}-{secrets.token_hex(3)}"
    return _names[pid]


def own_folder(parent: Path) -> Path:
    """A folder of this process's own under parent, removed when the process exits; folders
    that processes of this host left behind (killed before they could remove theirs) go first."""
    remove_dead_folders(parent)
    folder = parent / process_name()
    folder.mkdir(parents=True, exist_ok=True)
    atexit.register(shutil.rmtree, folder, True)
    return folder


def remove_dead_folders(parent: Path) -> None:
    host = process_name().split("-", 1)[0]
    for folder in parent.glob(f"{host}-*-*") if parent.is_dir() else ():
        pid = folder.name.split("-")[1]
        if pid.isdigit() and not _running(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
