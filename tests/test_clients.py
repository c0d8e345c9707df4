"""`gateway.py clients` prints client setup that parses, points at this repository and the
gateway's URL, and is what the README shows."""

import json
import re
import subprocess
import sys

from servers.gateway.clients import TOKEN_PLACEHOLDER, client_snippets, render
from servers.settings import PROJECT_ROOT

FENCE = re.compile(r"```(\w+)\n(.*?)\n```", re.S)


def run_clients(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "gateway.py", "clients", *args],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout


def test_every_json_snippet_printed_by_the_command_is_a_valid_mcp_servers_config():
    output = run_clients()
    configs = [json.loads(text) for lang, text in FENCE.findall(output) if lang == "json"]
    assert len(configs) == 5
    for config in configs:
        (entry,) = config["mcpServers"].values()
        assert "command" in entry or entry["url"] == "http://127.0.0.1:8000/mcp"


def test_stdio_configs_start_this_repository_s_gateway_over_stdio():
    output = run_clients()
    stdio = [
        json.loads(text)["mcpServers"]["data-gateway"]
        for lang, text in FENCE.findall(output)
        if lang == "json" and '"uv"' in text
    ]
    assert len(stdio) == 2  # Claude Desktop and Cursor
    for entry in stdio:
        args = entry["args"]
        directory = args[args.index("--directory") + 1]
        assert (PROJECT_ROOT / "gateway.py").samefile(f"{directory}/gateway.py")
        assert args[-2:] == ["--transport", "stdio"]
    assert f"uv run --directory {PROJECT_ROOT} gateway.py --transport stdio" in output


def test_http_configs_carry_the_given_url_and_a_token_placeholder():
    url = "https://gw.example.com/mcp"
    output = run_clients("--url", url, "--name", "flights")
    http = [
        json.loads(text)["mcpServers"]["flights"]
        for lang, text in FENCE.findall(output)
        if lang == "json" and url in text
    ]
    assert len(http) == 3  # Claude Desktop (mcp-remote), Claude Code, Cursor
    assert all(TOKEN_PLACEHOLDER in json.dumps(entry) for entry in http)
    assert f"claude mcp add --transport http flights {url}" in output
    assert "ChatGPT" in output and "Developer mode" in output


def test_the_readme_shows_exactly_what_the_command_prints():
    readme = (PROJECT_ROOT / "README.md").read_text()
    expected = render(client_snippets(directory="/path/to/this/repo"))
    assert expected in readme
    assert "uv run gateway.py clients" in readme
