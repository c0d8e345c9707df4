"""One settings object: defaults, environment, a JSON config file with mcpServers, clear errors."""

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from gateway import main
from servers.settings import GatewaySettings


def write(path: Path, content: dict) -> Path:
    path.write_text(json.dumps(content))
    return path


def test_defaults_are_safe_and_serve_the_demo_backend():
    settings = GatewaySettings.load()
    assert settings.host == "127.0.0.1"
    assert settings.port == 8000
    assert settings.sql.database is None  # the sample database
    assert list(settings.backends) == ["demo"]
    assert settings.backends["demo"].command


def test_environment_variables_nest_with_double_underscore(monkeypatch):
    monkeypatch.setenv("GATEWAY_SQL__MAX_ROWS", "25")
    monkeypatch.setenv("GATEWAY_PORT", "9001")
    settings = GatewaySettings.load()
    assert settings.sql.max_rows == 25
    assert settings.port == 9001


def test_config_file_in_the_claude_desktop_shape(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("WEATHER_TOKEN", "unused")
    config = write(
        tmp_path / "gateway.json",
        {
            "sql": {"max_rows": 50},
            "mcpServers": {
                "weather": {
                    "type": "http",
                    "url": "https://weather.example/mcp",
                    "headers": {"Authorization": "Bearer abc"},
                },
                "files": {"command": "npx", "args": ["-y", "some-server"], "env": {"A": "1"}},
            },
        },
    )
    settings = GatewaySettings.load(config)
    assert settings.sql.max_rows == 50
    assert settings.backends["weather"].transport == "http"
    assert settings.backends["files"].args == ["-y", "some-server"]
    assert "abc" not in repr(settings)  # header values are secrets


def test_environment_overrides_the_config_file(tmp_path: Path, monkeypatch):
    config = write(tmp_path / "gateway.json", {"sql": {"max_rows": 50, "threads": 1}})
    monkeypatch.setenv("GATEWAY_SQL__MAX_ROWS", "7")
    settings = GatewaySettings.load(config)
    assert (settings.sql.max_rows, settings.sql.threads) == (7, 1)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"url": "http://a/mcp", "command": "x"}, "either 'url'"),
        ({}, "either 'url'"),
        ({"url": "ftp://a"}, "http:// or https://"),
        ({"url": "http://a/mcp", "transport": "carrier-pigeon"}, "transport"),
    ],
)
def test_an_invalid_backend_entry_is_refused_naming_it(entry, message):
    with pytest.raises(ValidationError, match=message) as info:
        GatewaySettings.load(mcpServers={"broken": entry})
    assert "broken" in str(info.value)


@pytest.mark.parametrize("key", ["sql", "admin", "pipelines", "has space", "9lives"])
def test_backend_keys_must_be_free_valid_namespaces(key):
    with pytest.raises(ValidationError, match=repr(key)):
        GatewaySettings.load(mcpServers={key: {"url": "http://a/mcp"}})


def test_unknown_settings_are_refused():
    with pytest.raises(ValidationError, match="max_rowz"):
        GatewaySettings.load(sql={"max_rowz": 1})


def test_the_cli_refuses_a_broken_config_with_its_reason(tmp_path: Path, capsys):
    config = tmp_path / "gateway.json"
    config.write_text("{not json")
    assert main(["--config", str(config)]) == 2
    assert "not valid JSON" in capsys.readouterr().err


def test_the_cli_refuses_a_missing_config_file(tmp_path: Path, capsys):
    assert main(["--config", str(tmp_path / "nope.json")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_the_cli_names_the_broken_backend_entry(tmp_path: Path, capsys):
    config = write(tmp_path / "gateway.json", {"mcpServers": {"weather": {"url": "ftp://x"}}})
    assert main(["--config", str(config)]) == 2
    assert "weather" in capsys.readouterr().err
