"""Why a backend request failed, in words fit for a client: pure functions over exceptions.

A failure to reach a backend (refused, timed out, connection lost) counts against its circuit
breaker; an error the backend itself answered with does not (the backend is up, the request
was wrong) and is passed on to the caller as is.
"""

from __future__ import annotations

import httpx2
import mcp_types
from mcp import MCPError

from servers.backends.link import LinkError


class BackendUnavailable(Exception):
    """The backend was not reached, or is not being called: the message says why."""


class AnswerTooLarge(Exception):
    """The backend's answer was larger than its request's byte budget and was dropped."""

    def __init__(self, backend: str, limit: int) -> None:
        super().__init__(
            f"backend {backend!r} answered with more than {limit} bytes, the gateway's limit; "
            "the answer was dropped unread. Ask for less (a narrower request, a smaller page)."
        )


# A backend error that is really the connection failing, not the backend answering: closed,
# timed out, or an answer that was not JSON-RPC at all.
_TRANSPORT_CODES = {mcp_types.CONNECTION_CLOSED, mcp_types.REQUEST_TIMEOUT, mcp_types.PARSE_ERROR}


def _leaves(error: BaseException) -> list[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in _leaves(inner)]
    return [error]


def backend_answer(error: BaseException) -> MCPError | None:
    """The error the backend itself answered with, if that is what ``error`` is."""
    for leaf in _leaves(error):
        if isinstance(leaf, MCPError) and leaf.error.code not in _TRANSPORT_CODES:
            return leaf
    return None


def describe_failure(error: BaseException, timeout_s: float) -> str:
    """Why a backend could not be reached, in words fit for a client (no hosts, no paths)."""
    leaves = _leaves(error)
    link_errors = [leaf for leaf in leaves if isinstance(leaf, LinkError)]
    if link_errors:
        return str(link_errors[0])
    if any(isinstance(leaf, TimeoutError | httpx2.TimeoutException) for leaf in leaves):
        return f"no answer within {timeout_s:g} s"
    if any(isinstance(leaf, httpx2.ConnectError) for leaf in leaves):
        return "connection refused or host unreachable"
    if any(
        isinstance(leaf, MCPError) and leaf.error.code == mcp_types.PARSE_ERROR for leaf in leaves
    ):
        return "answered with something that is not MCP"
    if any(isinstance(leaf, MCPError | httpx2.TransportError) for leaf in leaves):
        return "the connection was lost"
    if any(isinstance(leaf, httpx2.HTTPStatusError) for leaf in leaves):
        return "the backend answered with an HTTP error"
    return f"could not be reached ({type(leaves[0]).__name__})"
