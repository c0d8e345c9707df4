"""Folders a process owns in a directory shared with other processes, and removing the folders
of processes that have ended.

Gateway replicas and pipeline run workers may share one data directory, so each process keeps
its DuckDB spill folder (``scratch/<pid>@<host>``) under a name that says which process on which
host (machine or container) owns it. A folder whose process has ended is a leftover: the next
process on the same host that starts using the directory removes it (and the folders of earlier
versions, named without a host: ``scratch/<pid>/worker-<pid>``). Stored results go by their
expiry instead (``servers.sql.result_store``): any replica serves them.

Whether a folder's owner has ended is decided by ``owner_gone`` alone: a process-id check, which
only a process of the same host can make; another host's folders are kept (containers sharing a
volume have process ids of their own). Removing those too needs another test there (an expiry or
a lease, say), swapped in that one function.
"""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

_HOST = socket.gethostname()


def own_folder(root: Path, suffix: str = "") -> Path:
    """This process's folder under root (not created)."""
    return root / folder_name(os.getpid(), suffix)


def folder_name(pid: int, suffix: str = "") -> str:
    """The name of a folder of process pid of this host: <pid>@<host> or <pid>-<suffix>@<host>."""
    return f"{pid}-{suffix}@{_HOST}" if suffix else f"{pid}@{_HOST}"


def owner_gone(folder: Path) -> bool:
    """True when folder belongs to a process of this host that is no longer running (a name
    without a host, from before hosts were named, counts as this host's)."""
    owner, at, host = folder.name.rpartition("@")
    if not at:
        owner, host = folder.name, _HOST
    pid = owner.split("-", 1)[0]
    if host != _HOST or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # running, as another user
        return False
    return False


def remove_leftovers(root: Path) -> list[Path]:
    """Delete the folders under root whose owner is gone; returns the ones it deleted."""
    gone = [p for p in root.iterdir() if p.is_dir() and owner_gone(p)] if root.is_dir() else []
    for folder in gone:
        shutil.rmtree(folder, ignore_errors=True)
    return gone
