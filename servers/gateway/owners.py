"""Stored sql results belong to the principal whose call made them.

A truncated query's handle (``result.id``, ``/sql/results/<id>.csv``) is bound to its caller as
the result leaves the gateway; paging it (``sql_read_result``, ``sql://results/<id>``) and
downloading it (the HTTP guard) are refused to anyone else as if it did not exist. Without an
access token (stdio, loopback without auth) nothing is bound and nothing refused.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from pathlib import Path

from fastmcp.exceptions import ResourceError, ToolError
from fastmcp.server.dependencies import get_access_token
from fastmcp.server.middleware import CallNext, Middleware, MiddlewareContext

from servers.gateway.tool_search import CALL_TOOL

DOWNLOAD_PREFIX = "/sql/results/"
RESULT_URI_PREFIXES = ("sql://sql/results/", "sql://results/")  # mounted, and alone
PAGING_TOOL = "sql_read_result"
MAX_BOUND = 100_000
OWNER_FILE = "owner"
RESULT_ID = re.compile(
    r"[A-Za-z0-9_-]{1,64}"
)  # results far outlive their TTL here before the oldest binding goes


class ResultOwners:
    """Result id to principal, bounded (oldest first out) in memory and, with ``directory`` (the
    results directory replicas share), written beside the result's data, so whichever replica
    answers knows whose a result is; the file goes with the result when it expires."""

    def __init__(self, directory: Path | None = None, max_bound: int = MAX_BOUND) -> None:
        self.directory = directory
        self.max_bound = max_bound
        self._owners: OrderedDict[str, str] = OrderedDict()

    def bind(self, result_id: str, principal: str) -> None:
        self._owners[result_id] = principal
        self._owners.move_to_end(result_id)
        while len(self._owners) > self.max_bound:
            self._owners.popitem(last=False)
        folder = self._folder(result_id)
        if folder is not None and folder.is_dir():
            (folder / OWNER_FILE).write_text(principal)

    def may_read(self, result_id: str, principal: str) -> bool:
        owner = self._owners.get(result_id)
        folder = self._folder(result_id)
        if owner is None and folder is not None:
            try:
                owner = (folder / OWNER_FILE).read_text()
            except OSError:
                return False
        return owner == principal

    def _folder(self, result_id: str) -> Path | None:
        if self.directory is None or not RESULT_ID.fullmatch(result_id):
            return None
        return self.directory / result_id


def unknown_result(result_id: str) -> str:
    return (
        f"No stored result {result_id!r}: it expired or never existed (or another client made "
        "it). Run the query again."
    )


def handles_in(content: object) -> list[str]:
    """Ids of the result handles in a tool's structured content (top level or one down)."""
    found: list[str] = []
    if not isinstance(content, dict):
        return found
    for value in [content, *content.values()]:
        handle = value.get("result") if isinstance(value, dict) else None
        if isinstance(handle, dict) and str(handle.get("csv", "")).startswith(DOWNLOAD_PREFIX):
            found.append(str(handle.get("id")))
    return found


class ResultOwnership(Middleware):
    """Binds handles to their caller; refuses other callers' handles."""

    def __init__(self, owners: ResultOwners) -> None:
        self.owners = owners

    async def on_call_tool(self, context: MiddlewareContext, call_next: CallNext):
        token = get_access_token()
        if token is None:
            return await call_next(context)
        name, arguments = context.message.name, context.message.arguments or {}
        if name == CALL_TOOL and isinstance(arguments.get("arguments"), dict):
            name, arguments = arguments.get("name"), arguments["arguments"]
        result_id = arguments.get("result_id")
        readable = not isinstance(result_id, str) or self.owners.may_read(
            result_id, token.client_id
        )
        if name == PAGING_TOOL and not readable:
            raise ToolError(unknown_result(result_id))
        result = await call_next(context)
        for handle in handles_in(getattr(result, "structured_content", None)):
            self.owners.bind(handle, token.client_id)
        return result

    async def on_read_resource(self, context: MiddlewareContext, call_next: CallNext):
        token = get_access_token()
        uri = str(context.message.uri)
        prefix = next((p for p in RESULT_URI_PREFIXES if uri.startswith(p)), None)
        if token is not None and prefix is not None:
            result_id = uri[len(prefix) :].split("?", 1)[0]
            if not self.owners.may_read(result_id, token.client_id):
                raise ResourceError(unknown_result(result_id))
        return await call_next(context)
