"""Saying what is running: the start-up banner (stderr), the page at ``GET /`` for a person with
a browser, and ``gateway.py check``, which validates a configuration without serving it.

Nothing here imports Hamilton, pandas, pyarrow or matplotlib: the check builds and validates the
pipelines in a subprocess, as the serving gateway does.
"""

from __future__ import annotations

import html
import json
import sys
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from servers.settings import PROJECT_ROOT, GatewaySettings

LOCAL_NAMESPACES = ("sql", "pipelines", "admin")


def project_identity() -> tuple[str, str]:
    """The gateway's own name and version, from pyproject.toml (clients see them in
    ``serverInfo``)."""
    with open(PROJECT_ROOT / "pyproject.toml", "rb") as file:
        project = tomllib.load(file)["project"]
    return project["name"], project["version"]


def auth_mode(settings: GatewaySettings) -> str:
    auth = settings.auth
    kinds = [
        kind
        for kind, on in (
            ("tokens file", auth.tokens_file),
            ("static token", auth.token),
            ("JWT", auth.jwt_public_key or auth.jwt_jwks_url),
        )
        if on
    ]
    return f"bearer ({', '.join(kinds)})" if kinds else "none (anyone who can reach it)"


def endpoint(settings: GatewaySettings, transport: str) -> str:
    if transport == "stdio":
        return "stdio (the client that started this process)"
    return f"http://{settings.host}:{settings.port}/mcp"


def connect_line(settings: GatewaySettings, transport: str) -> str:
    """The one command that connects a client (Claude Code); `gateway.py clients` has more."""
    if transport == "stdio":
        return (
            f"claude mcp add data-gateway -- uv run --directory {PROJECT_ROOT} gateway.py "
            "--transport stdio"
        )
    header = ' --header "Authorization: Bearer <token>"' if settings.auth.configured else ""
    return f"claude mcp add --transport http data-gateway {endpoint(settings, 'http')}{header}"


def tool_count(server: Any) -> int:
    """Tools a local sub-server registered (read without listing: no event loop needed)."""
    from fastmcp.tools import Tool

    components = server.local_provider._components.values()
    return sum(isinstance(c, Tool) for c in components)


@dataclass
class StartupFacts:
    """What the banner reports, gathered by create_gateway while it composes."""

    database: str = ""
    tables: int | None = 0  # None: the file cannot be opened now (``unavailable`` says why)
    unavailable: str | None = None
    tools: dict[str, int] = field(default_factory=dict)
    backends: dict[str, str] = field(default_factory=dict)


def database_state(facts: StartupFacts) -> str:
    if facts.tables is None:
        return f"unavailable now: {facts.unavailable}; served as soon as it can be opened"
    return f"{facts.tables} tables, read-only"


def banner(settings: GatewaySettings, facts: StartupFacts, transport: str) -> str:
    """The start-up banner: identity, endpoint, data, namespaces, backends, auth, how to connect."""
    name, version = project_identity()
    namespaces = ", ".join(f"{ns}_* ({count} tools)" for ns, count in facts.tools.items())
    backends = ", ".join(f"{b}_* ({state})" for b, state in facts.backends.items()) or "none"
    lines = [
        f"{name} {version}",
        f"  endpoint:   {endpoint(settings, transport)}",
        f"  database:   {facts.database} ({database_state(facts)})",
        f"  namespaces: {namespaces}",
        f"  backends:   {backends}",
        f"  auth:       {auth_mode(settings)}",
        f"  connect:    {connect_line(settings, transport)}",
    ]
    if transport == "http":
        lines.append(f"  status:     http://{settings.host}:{settings.port}/ready")
    return "\n".join(lines)


def print_banner(settings: GatewaySettings, facts: StartupFacts, transport: str) -> None:
    print(banner(settings, facts, transport), file=sys.stderr, flush=True)


def home_page(settings: GatewaySettings) -> str:
    """``GET /``: what this is and how to connect, for a person who opened it in a browser.
    No secrets, no paths: the same for every visitor."""
    name, version = project_identity()
    token = (
        "It needs a bearer token: ask the operator for one (<code>gateway.py token</code>)."
        if settings.auth.configured
        else "It runs without authentication."
    )
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(name)}</title></head>
<body style="font-family: sans-serif; max-width: 42em; margin: 2em auto">
<h1>{html.escape(name)} {html.escape(version)}</h1>
<p>This is an <a href="https://modelcontextprotocol.io">MCP</a> server: LLM clients (Claude,
Cursor, ChatGPT connectors) use it to query a DuckDB database, run vetted data pipelines and
reach other MCP servers. It is not a web site: connect an MCP client to the endpoint
<code>/mcp</code> of this address (Streamable HTTP). {token}</p>
<p>For example, with Claude Code:</p>
<pre>claude mcp add --transport http data-gateway &lt;this address&gt;/mcp</pre>
<p>Service status: <a href="/health">/health</a>, <a href="/ready">/ready</a>.</p>
</body></html>
"""


def masked_settings(settings: GatewaySettings) -> dict[str, Any]:
    """The effective settings as JSON, secrets masked (SecretStr dumps as asterisks; backend
    headers and environment values are replaced too)."""
    data = settings.model_dump(mode="json", by_alias=True)
    for backend in data.get("mcpServers", {}).values():
        for key in ("headers", "env"):
            if isinstance(backend.get(key), Mapping):
                backend[key] = {k: "**********" for k in backend[key]}
    return data


def render_settings(settings: GatewaySettings) -> str:
    return json.dumps(masked_settings(settings), indent=2, sort_keys=True)
