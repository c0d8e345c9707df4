"""One factory from a config entry to its transport: a new transport is a module with a class
that follows ``link.Link`` and one line here (plus its fields in ``BackendConfig``)."""

from __future__ import annotations

from servers.backends.http import HttpLink
from servers.backends.link import Link, LinkEvents
from servers.backends.stdio import StdioLink
from servers.settings import BackendConfig


def make_link(config: BackendConfig, events: LinkEvents, max_answer_bytes: int) -> Link:
    """The link of one mcpServers entry: HTTP/SSE for a ``url``, a supervised process for a
    ``command``, an in-process server for an ``openapi`` spec. ``max_answer_bytes`` bounds
    one message read from a process (HTTP answers are bounded per request)."""
    if config.url:
        return HttpLink(config, events)
    if config.command:
        return StdioLink(config, events, max_answer_bytes)
    # fastmcp's OpenAPI machinery (about 0.5 s to import) loads only for a REST backend.
    from servers.backends.openapi import RestLink

    return RestLink(config, events)
