"""Admin controls: hiding and showing components at runtime with confirmation in each era, and
reloading the tokens."""

import json

import pytest
from fastmcp import Client
from fastmcp.exceptions import ToolError
from fastmcp.utilities.tests import asgi_server
from mcp.types import ElicitResult

from gateway import create_gateway
from servers.admin.shared import THIS_PROCESS
from servers.gateway.auth import new_token
from servers.settings import GatewaySettings
from tests.conftest import wait_for_backend


@pytest.fixture(scope="module")
def hideable(data_dir):
    """A gateway of its own: hiding a component changes it for every client."""
    return create_gateway(GatewaySettings.load(data_dir=data_dir, mcpServers={}))


def answering(accept: bool):
    async def handler(message, response_type, params, context):
        field = "confirm" if "confirm" in params.requested_schema["properties"] else "value"
        if not accept:
            return ElicitResult(action="decline")
        return ElicitResult(action="accept", content={field: True})

    return handler


async def names(client: Client) -> set[str]:
    return {tool.name for tool in await client.list_tools()}


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_a_hidden_tool_is_neither_listed_nor_callable_until_shown_again(hideable, mode):
    async with Client(hideable, mode=mode) as client:
        await client.call_tool(
            "admin_set_enabled", {"component": "sql_explain", "enabled": False, "confirm": True}
        )
        assert "sql_explain" not in await names(client)
        with pytest.raises(ToolError):
            await client.call_tool("sql_explain", {"sql": "select 1"})
        shown = await client.call_tool(
            "admin_set_enabled", {"component": "sql_explain", "enabled": True}
        )
        assert shown.structured_content["hidden"] == []
        assert "sql_explain" in await names(client)


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_without_redis_a_change_says_it_applies_to_this_process_only(hideable, mode):
    async with Client(hideable, mode=mode) as client:
        args = {"component": "sql_explain", "enabled": False, "confirm": True}
        hidden = await client.call_tool("admin_set_enabled", args)
        shown = await client.call_tool("admin_set_enabled", {**args, "enabled": True})
        reloaded = await client.call_tool("admin_reload", {"confirm": True})
    for answer in (hidden, shown, reloaded):
        assert answer.structured_content["deployment"] == THIS_PROCESS
    assert "this process only" in THIS_PROCESS and "redis://" not in THIS_PROCESS


async def test_other_connected_legacy_clients_are_told_the_tool_list_changed(hideable):
    received = []

    async def note(message):
        received.append(type(getattr(message, "root", message)).__name__)

    async with (
        Client(hideable, mode="legacy", message_handler=note) as watcher,
        Client(hideable, mode="legacy") as admin,
    ):
        await watcher.ping()
        await admin.call_tool(
            "admin_set_enabled", {"component": "sql_explain", "enabled": False, "confirm": True}
        )
        await admin.call_tool("admin_set_enabled", {"component": "sql_explain", "enabled": True})
        await watcher.ping()
    assert "ToolListChangedNotification" in received


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_hiding_asks_the_client_to_confirm_and_a_yes_goes_ahead(hideable, mode):
    async with Client(hideable, mode=mode, elicitation_handler=answering(True)) as client:
        done = await client.call_tool(
            "admin_set_enabled", {"component": "sql://sql/cheatsheet", "enabled": False}
        )
        assert done.structured_content["hidden"] == ["sql://sql/cheatsheet"]
        assert "sql://sql/cheatsheet" not in {str(r.uri) for r in await client.list_resources()}
        await client.call_tool(
            "admin_set_enabled", {"component": "sql://sql/cheatsheet", "enabled": True}
        )
        assert "sql://sql/cheatsheet" in {str(r.uri) for r in await client.list_resources()}


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_a_declined_confirmation_changes_nothing(hideable, mode):
    async with Client(hideable, mode=mode, elicitation_handler=answering(False)) as client:
        with pytest.raises(ToolError, match="Not confirmed: nothing was changed"):
            await client.call_tool(
                "admin_set_enabled", {"component": "sql_explain", "enabled": False}
            )
        assert "sql_explain" in await names(client)


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_a_client_that_cannot_be_asked_must_pass_confirm_true(hideable, mode):
    async with Client(hideable, mode=mode) as client:
        with pytest.raises(ToolError, match="call again with confirm=true"):
            await client.call_tool(
                "admin_set_enabled", {"component": "sql_explain", "enabled": False}
            )
        assert "sql_explain" in await names(client)


async def test_admin_components_and_unknown_ones_cannot_be_hidden(hideable):
    async with Client(hideable) as client:
        with pytest.raises(ToolError, match="lock the admin out"):
            await client.call_tool(
                "admin_set_enabled", {"component": "admin_status", "enabled": False}
            )
        with pytest.raises(ToolError, match="No tool, prompt, resource or template"):
            await client.call_tool(
                "admin_set_enabled", {"component": "sql_nothing", "enabled": False}
            )
        with pytest.raises(ToolError, match="is not hidden"):
            await client.call_tool("admin_set_enabled", {"component": "sql_query", "enabled": True})


@pytest.fixture
def configured(data_dir, tmp_path):
    """A gateway started from a config file with a tokens file, and helpers to change both."""
    old, old_line = new_token("old", ["*"])
    fresh, fresh_line = new_token("fresh", ["sql"])
    tokens_file = tmp_path / "tokens.jsonl"
    tokens_file.write_text(old_line + "\n")
    config = tmp_path / "gateway.json"

    def write_config(**sections):
        config.write_text(
            json.dumps({"mcpServers": {}, "auth": {"tokens_file": str(tokens_file)}, **sections})
        )

    write_config()
    settings = GatewaySettings.load(config, data_dir=data_dir)
    gateway = create_gateway(settings, lambda: GatewaySettings.load(config, data_dir=data_dir))
    return gateway, write_config, tokens_file, {"old": old, "fresh": fresh, "line": fresh_line}


async def test_reload_applies_new_tokens_and_limits_and_names_what_needs_a_restart(configured):
    gateway, write_config, tokens_file, tokens = configured
    async with asgi_server(gateway) as server:
        async with server.client(auth=tokens["old"]) as admin:
            tokens_file.write_text(tokens_file.read_text() + tokens["line"] + "\n")
            write_config(limits={"rate_burst": 99}, sql={"max_rows": 7})
            reloaded = await admin.call_tool("admin_reload", {"confirm": True})
        assert reloaded.structured_content == {
            "applied": ["auth (2 static tokens)", "limits"],
            "needs_restart": ["sql.max_rows"],
            "deployment": THIS_PROCESS,
        }
        async with server.client(auth=tokens["fresh"]) as fresh:
            assert {t.name.split("_")[0] for t in await fresh.list_tools()} == {"sql"}


@pytest.mark.parametrize(
    ("config", "reason"),
    [
        ("{not json", "is not valid JSON"),
        ('{"mcpServers": {}, "limits": {"rate_per_s": -1}}', "limits.rate_per_s: Input should"),
        ('{"mcpServers": {}, "auth": {"tokens_file": "/nowhere/tokens"}}', "does not exist"),
    ],
)
async def test_an_invalid_config_is_rejected_with_the_reason_and_the_old_one_stays(
    configured, config, reason
):
    gateway, _, tokens_file, tokens = configured
    config_file = tokens_file.parent / "gateway.json"
    async with asgi_server(gateway) as server, server.client(auth=tokens["old"]) as admin:
        config_file.write_text(config)
        with pytest.raises(ToolError, match="Config not reloaded, the old one stays") as bad:
            await admin.call_tool("admin_reload", {"confirm": True})
        assert reason in str(bad.value)
        assert str(tokens_file.parent) not in str(bad.value) and "/nowhere" not in str(bad.value)
        assert await names(admin)


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_cancel_run_asks_first_then_stops_the_run_and_reports_its_status(hideable, mode):
    async with Client(hideable, mode=mode) as client:
        with pytest.raises(ToolError, match="no background run 'nope'"):
            await client.call_tool("admin_cancel_run", {"run_id": "nope", "confirm": True})
        started = await client.call_tool(
            "pipelines_start_run", {"name": "route_profile", "inputs": {}}
        )
        run_id = started.structured_content["run_id"]
        with pytest.raises(ToolError, match="call again with confirm=true"):
            await client.call_tool("admin_cancel_run", {"run_id": run_id})
        stopped = await client.call_tool("admin_cancel_run", {"run_id": run_id, "confirm": True})
    # The run may have finished before the cancel arrived; either way it is no longer working.
    assert stopped.structured_content["status"] in {"cancelled", "completed"}


async def test_clear_caches_fetches_every_backend_catalog_again(client):
    before = await wait_for_backend(client, "demo")
    cleared = await client.call_tool("admin_clear_caches", {"confirm": True})
    assert cleared.structured_content["backends"] == {"demo": "fresh"}
    assert before["backends"]["demo"]["status"] == "up"
    await wait_for_backend(client, "demo")
