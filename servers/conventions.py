"""What every sub-server's tools share, defined once.

``READ_ONLY``: the annotations of a tool that reads and changes nothing, inside the gateway.
``describe_errors``: how invalid arguments, inputs or config read in a refusal.
``stateless_era``: whether a request speaks the stateless protocol (2026-07-28), where the server
cannot ask the client anything mid-call and a tool returns an input-required result instead.
"""

from __future__ import annotations

from mcp.types import ToolAnnotations
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import ValidationError

READ_ONLY = ToolAnnotations(readOnlyHint=True, openWorldHint=False)


def describe_errors(exc: ValidationError, whole: str) -> str:
    """Each problem as `location: message`, joined by '; ' (``whole`` names an error that is
    about the value as a whole, e.g. 'arguments')."""
    return "; ".join(
        f"{'.'.join(map(str, error['loc'])) or whole}: {error['msg']}" for error in exc.errors()
    )


def stateless_era(protocol_version: str | None) -> bool:
    """True for a request in a stateless protocol version (no server-initiated requests)."""
    return protocol_version in MODERN_PROTOCOL_VERSIONS
