"""Which process this is, across the containers of a deployment that share a data directory.

Process ids repeat across containers (each has its own PID namespace), so a replica's label
joins the host name, the process id and a random part. Per-process folders and their removal
are ``servers.leftovers``'s.
"""

from __future__ import annotations

import os
import secrets
import socket

_names: dict[int, str] = {}


def process_name() -> str:
    """``<host>-<pid>-<random>`` for this process (a new one after a fork)."""
    pid = os.getpid()
    if pid not in _names:
        host = socket.gethostname().replace("-", "_") or "host"
        _names[pid] = f"{host}-{pid}-{secrets.token_hex(3)}"
    return _names[pid]
