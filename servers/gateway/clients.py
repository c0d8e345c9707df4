"""Ready-to-paste client configuration: `uv run gateway.py clients`.

Prints, for Claude Desktop, Claude Code and Cursor, the stdio setup (the client starts the
gateway itself) and the HTTP setup (the gateway already runs, reached with a bearer token), and
the steps of a ChatGPT connector. The README's "Connecting clients" section is this output.
"""

from __future__ import annotations

import argparse
import json
import re
from dataclasses import dataclass

from servers.settings import PROJECT_ROOT

TOKEN_PLACEHOLDER = "<your gateway token>"
DEFAULT_URL = "http://127.0.0.1:8000/mcp"
DEFAULT_NAME = "data-gateway"


@dataclass(frozen=True)
class Snippet:
    """One piece of setup: a title, its language (json, sh or text) and the text to paste."""

    title: str
    language: str
    text: str


def _json(value: dict) -> str:
    """Indented JSON with arrays of strings on one line, as people write these files."""
    text = json.dumps(value, indent=2)
    return re.sub(
        r"\[\s*((?:\"[^\"\n]*\",?\s*)+)\]",
        lambda m: "[" + ", ".join(re.findall(r'"[^"\n]*"', m.group(1))) + "]",
        text,
    )


def client_snippets(
    url: str = DEFAULT_URL, directory: str = str(PROJECT_ROOT), name: str = DEFAULT_NAME
) -> list[Snippet]:
    """Every client's setup, for a gateway at ``url`` or started from ``directory``."""
    stdio_args = ["run", "--directory", directory, "gateway.py", "--transport", "stdio"]
    stdio = {"mcpServers": {name: {"command": "uv", "args": stdio_args}}}
    bearer = f"Bearer {TOKEN_PLACEHOLDER}"
    desktop_http = {
        "mcpServers": {
            name: {
                "command": "npx",
                "args": ["-y", "mcp-remote", url, "--header", "Authorization:${AUTH_HEADER}"],
                "env": {"AUTH_HEADER": bearer},
            }
        }
    }
    code_http = {
        "mcpServers": {name: {"type": "http", "url": url, "headers": {"Authorization": bearer}}}
    }
    cursor_http = {"mcpServers": {name: {"url": url, "headers": {"Authorization": bearer}}}}
    return [
        Snippet(
            "Claude Desktop, stdio (claude_desktop_config.json; Desktop starts the gateway)",
            "json",
            _json(stdio),
        ),
        Snippet(
            "Claude Desktop, HTTP (claude_desktop_config.json, through the mcp-remote bridge)",
            "json",
            _json(desktop_http),
        ),
        Snippet(
            "Claude Code, stdio",
            "sh",
            f"claude mcp add {name} -- uv {' '.join(stdio_args)}",
        ),
        Snippet(
            "Claude Code, HTTP",
            "sh",
            f'claude mcp add --transport http {name} {url} --header "Authorization: {bearer}"',
        ),
        Snippet("Claude Code, HTTP, as a project's .mcp.json", "json", _json(code_http)),
        Snippet("Cursor, stdio (~/.cursor/mcp.json or .cursor/mcp.json)", "json", _json(stdio)),
        Snippet(
            "Cursor, HTTP (~/.cursor/mcp.json or .cursor/mcp.json)", "json", _json(cursor_http)
        ),
        Snippet(
            "ChatGPT connector (needs a public HTTPS URL)",
            "text",
            "\n".join(
                [
                    "1. Serve the gateway over HTTPS on a public host name: the compose deployment",
                    "   behind a TLS-terminating proxy or tunnel (docs/deployment.md), with that",
                    '   name in GATEWAY_ALLOWED_HOSTS (e.g. ["gw.example.com"]).',
                    "2. Turn auth on (GATEWAY_AUTH__JWT_* for OAuth, or a token for a proxy in",
                    "   front) and check: curl https://gw.example.com/health answers ok.",
                    "3. In ChatGPT: Settings -> Apps & Connectors -> Advanced -> Developer mode,",
                    "   then Create: name it, give https://gw.example.com/mcp as the MCP server",
                    "   URL, choose the authentication, and save.",
                    "4. In a chat, enable the connector in the tools menu and ask about the data.",
                ]
            ),
        ),
    ]


def render(snippets: list[Snippet]) -> str:
    """The snippets as Markdown: a bold title, then a fenced block."""
    blocks = [f"**{s.title}**:\n\n```{s.language}\n{s.text}\n```" for s in snippets]
    return "\n\n".join(blocks) + "\n"


def clients_command(argv: list[str]) -> int:
    """`gateway.py clients`: print ready-to-paste configuration for MCP clients."""
    parser = argparse.ArgumentParser(prog="gateway.py clients", description=clients_command.__doc__)
    parser.add_argument("--url", default=DEFAULT_URL, help=f"the gateway's URL ({DEFAULT_URL})")
    parser.add_argument(
        "--directory", default=str(PROJECT_ROOT), help="this repository (for stdio clients)"
    )
    parser.add_argument("--name", default=DEFAULT_NAME, help=f"server name ({DEFAULT_NAME})")
    args = parser.parse_args(argv)
    print(render(client_snippets(args.url, args.directory, args.name)), end="")
    return 0
