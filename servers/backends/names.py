"""How a backend's components are named at the gateway: pure functions, no MCP.

A tool ``search`` of the backend mounted as ``docs`` is called ``docs_search``; a resource
``notes://today`` becomes ``notes://docs/today`` (fastmcp's namespace convention). Clients and
LLM APIs accept tool names of at most 64 characters from ``[A-Za-z0-9_.-]``, so a name that is
longer or has other characters is shortened deterministically: a readable prefix, ``_`` and 8 hex
digits of a hash of the full name. The same backend name always gives the same gateway name.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from fnmatch import fnmatchcase

NAME_MAX = 64
_VALID_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_INVALID_CHARS = re.compile(r"[^A-Za-z0-9_.-]")
_URI = re.compile(r"^([^:]+://)(.*)$")
_HASH_CHARS = 8


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:_HASH_CHARS]


def gateway_name(namespace: str, name: str, salt: str = "") -> str:
    """The client-facing name of ``name`` under ``namespace``: valid, at most 64 characters.

    ``salt`` distinguishes two components that would otherwise get the same name; it only
    changes the hash suffix.
    """
    full = f"{namespace}_{name}"
    if not salt and _VALID_NAME.match(full):
        return full
    readable = _INVALID_CHARS.sub("_", full)[: NAME_MAX - _HASH_CHARS - 1]
    return f"{readable}_{_digest(full + salt)}"


def assign_names(namespace: str, names: Iterable[str], taken: set[str]) -> dict[str, str]:
    """Gateway names for a backend's component names, avoiding every name in ``taken``.

    Returns {backend name: gateway name} and adds the new names to ``taken``. A name that would
    collide (two backend names shortening alike, or another backend already holding it) gets a
    salted hash, so the first claimant keeps the plain name and the result is deterministic.
    """
    assigned: dict[str, str] = {}
    for name in names:
        candidate = gateway_name(namespace, name)
        salt = 0
        while candidate in taken:
            salt += 1
            candidate = gateway_name(namespace, name, salt=str(salt))
        taken.add(candidate)
        assigned[name] = candidate
    return assigned


def namespaced_uri(namespace: str, uri: str) -> str:
    """``scheme://path`` becomes ``scheme://namespace/path``; other URIs are prefixed."""
    match = _URI.match(uri)
    if match is None:
        return f"{namespace}/{uri}"
    scheme, path = match.groups()
    return f"{scheme}{namespace}/{path}"


def backend_uri(namespace: str, uri: str) -> str | None:
    """The backend's own URI for a gateway URI, or None when it is not in ``namespace``."""
    match = _URI.match(uri)
    if match is None:
        prefix = f"{namespace}/"
        return uri[len(prefix) :] if uri.startswith(prefix) else None
    scheme, path = match.groups()
    prefix = f"{namespace}/"
    return f"{scheme}{path[len(prefix) :]}" if path.startswith(prefix) else None


def tool_allowed(name: str, allow: list[str], deny: list[str]) -> bool:
    """Whether a backend tool passes the entry's allow and deny lists (shell-style patterns).

    An empty allow list allows everything; deny wins over allow.
    """
    if any(fnmatchcase(name, pattern) for pattern in deny):
        return False
    return not allow or any(fnmatchcase(name, pattern) for pattern in allow)
