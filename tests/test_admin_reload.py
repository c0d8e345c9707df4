"""Admin controls acting on the running parts: reload applying canned queries and backends live,
clear_caches dropping stored results and pipeline caches, status listing the runs in progress."""

import json
from pathlib import Path

import anyio
import pytest
from fastmcp import Client
from fastmcp.exceptions import ToolError
from fastmcp.utilities.tests import asgi_server

from gateway import create_gateway
from pipelines import Pipeline, registry
from pipelines import route_profile as route_profile_module
from servers.admin.shared import THIS_PROCESS
from servers.gateway.auth import new_token
from servers.sample_data import ensure_sample_database
from servers.settings import GatewaySettings
from tests.backend_helpers import QUICK, alive, backend_process, stdio_backend
from tests.fixtures import slow_pipeline
from tests.pipeline_processes import group_alive

pytestmark = pytest.mark.slow

ANSWER = {"description": "The answer.", "sql": "SELECT 42 AS answer"}
COUNT = {"description": "How many flights.", "sql": "SELECT count(*) AS n FROM flights"}


class Configured:
    """A gateway started from a config file of its own, with a private data directory."""

    def __init__(self, data_dir: Path, tmp_path: Path, **sections) -> None:
        self.config = tmp_path / "gateway.json"
        self.database = ensure_sample_database(data_dir)
        self.data = tmp_path / "data"
        self.write(**sections)
        load = self.load
        self.gateway = create_gateway(load(), load, served_pipelines=self.pipelines())

    def pipelines(self) -> dict[str, Pipeline]:
        return {
            **registry(),
            "route_profile": Pipeline(
                route_profile_module, route_profile_module.OUTPUTS, cache=True
            ),
            "slow": Pipeline(slow_pipeline, slow_pipeline.OUTPUTS),
        }

    def load(self) -> GatewaySettings:
        return GatewaySettings.load(self.config, data_dir=self.data)

    def write(
        self, canned: dict | None = None, backends: dict | None = None, auth=None, **sql
    ) -> None:
        sql_section = {"database": str(self.database), "canned_queries": canned or {}, **sql}
        config = {"mcpServers": backends or {}, "sql": sql_section}
        self.auth = auth if auth is not None else getattr(self, "auth", None)
        if self.auth:
            config["auth"] = self.auth
        self.config.write_text(json.dumps(config))

    def write_raw(self, text: str) -> None:
        self.config.write_text(text)


async def tool_names(client: Client) -> set[str]:
    return {tool.name for tool in await client.list_tools()}


async def reload(client: Client) -> dict:
    """The answer of admin_reload, after checking it says it reached this process only."""
    answer = (await client.call_tool("admin_reload", {"confirm": True})).structured_content
    assert answer.pop("deployment") == THIS_PROCESS  # no Redis here
    return answer


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_reload_swaps_canned_query_tools_and_adds_then_removes_a_backend(
    data_dir, tmp_path, mode
):
    configured = Configured(data_dir, tmp_path, canned={"answer": ANSWER})
    received = []

    async def note(message):
        received.append(type(getattr(message, "root", message)).__name__)

    with backend_process() as backend:
        async with (
            Client(configured.gateway, mode="legacy", message_handler=note) as watcher,
            Client(configured.gateway, mode=mode) as admin,
        ):
            await watcher.ping()
            before = await tool_names(admin)
            assert "sql_answer" in before and "sql_flight_count" not in before
            configured.write(
                canned={"flight_count": COUNT}, backends={"remote": {"url": backend.url, **QUICK}}
            )
            answer = await reload(admin)
            assert answer["applied"] == [
                "sql canned queries (answer, flight_count)",
                "backends (added: remote)",
            ]
            assert answer["needs_restart"] == []
            after = await tool_names(admin)
            assert "sql_flight_count" in after and "sql_answer" not in after
            assert "remote_echo" in after
            counted = await admin.call_tool("sql_flight_count", {})
            assert counted.structured_content["rows"][0][0] > 0
            echoed = await admin.call_tool("remote_echo", {"text": "hi"})
            assert "hi" in str(echoed.content)
            status = (await admin.call_tool("admin_status", {})).structured_content
            assert status["backends"]["remote"]["status"] == "up"
            await watcher.ping()
            assert "ToolListChangedNotification" in received
            assert "remote_echo" in await tool_names(watcher)

            configured.write(canned={"flight_count": COUNT})
            answer = await reload(admin)
            assert answer["applied"] == ["backends (removed: remote)"]
            after = await tool_names(admin)
            assert not [name for name in after if name.startswith("remote_")]
            assert "sql_flight_count" in after
            with pytest.raises(ToolError):
                await admin.call_tool("remote_echo", {"text": "hi"})
            status = (await admin.call_tool("admin_status", {})).structured_content
            assert "remote" not in status["backends"]


async def test_a_backend_added_by_reload_needs_its_scope_like_one_started_with(data_dir, tmp_path):
    admin_token, admin_line = new_token("admin", ["*"])
    sql_token, sql_line = new_token("analyst", ["sql"])
    remote_token, remote_line = new_token("remote-user", ["backend:remote"])
    tokens_file = tmp_path / "tokens.jsonl"
    tokens_file.write_text("\n".join([admin_line, sql_line, remote_line]) + "\n")
    configured = Configured(data_dir, tmp_path, auth={"tokens_file": str(tokens_file)})
    with backend_process() as backend:
        async with asgi_server(configured.gateway) as server:
            async with server.client(auth=admin_token) as admin:
                configured.write(backends={"remote": {"url": backend.url, **QUICK}})
                assert "backends (added: remote)" in (await reload(admin))["applied"]
                assert "remote_echo" in await tool_names(admin)
            async with server.client(auth=sql_token) as analyst:
                assert not [n for n in await tool_names(analyst) if n.startswith("remote_")]
                with pytest.raises(ToolError):
                    await analyst.call_tool("remote_echo", {"text": "hi"})
            async with server.client(auth=remote_token) as user:
                assert {n.split("_")[0] for n in await tool_names(user)} == {"remote"}


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (
            {"canned": {"wipe": {"description": "No.", "sql": "DELETE FROM flights"}}},
            "canned query 'wipe'",
        ),
        ({"canned": {"query": ANSWER}}, "canned query 'query'"),
        ({"canned": {"chart": ANSWER}}, "canned query 'chart'"),
        ({"backends": {"remote": {}}}, "mcpServers.remote"),
    ],
)
async def test_a_bad_canned_query_or_backend_entry_changes_nothing(
    data_dir, tmp_path, change, reason
):
    configured = Configured(data_dir, tmp_path, canned={"answer": ANSWER})
    with backend_process() as backend:
        async with Client(configured.gateway) as admin:
            before = await tool_names(admin)
            # Everything else in the new config is good, and would change something.
            good = {"canned": {"flight_count": COUNT}, "backends": {"remote": {"url": backend.url}}}
            configured.write(**{**good, **change})
            with pytest.raises(ToolError, match="Config not reloaded, the old one stays") as bad:
                await reload(admin)
            assert reason in str(bad.value)
            assert await tool_names(admin) == before
            assert (await admin.call_tool("sql_answer", {})).structured_content["rows"] == [[42]]
            status = (await admin.call_tool("admin_status", {})).structured_content
            assert status["backends"] == {}


async def test_a_removed_stdio_backend_process_is_stopped(data_dir, tmp_path):
    entry = {**stdio_backend(), "timeout_s": 10, "connect_timeout_s": 10}
    configured = Configured(data_dir, tmp_path, backends={"proc": entry})
    async with Client(configured.gateway) as admin:
        pid = (await admin.call_tool("proc_pid", {})).data
        assert alive(pid)
        configured.write()
        assert (await reload(admin))["applied"] == ["backends (removed: proc)"]
        with anyio.fail_after(10):
            while alive(pid):
                await anyio.sleep(0.05)
        assert "proc_pid" not in await tool_names(admin)


async def test_a_backend_disabled_in_the_config_is_reported_disabled_and_not_waited_for(
    data_dir, tmp_path
):
    entry = {**stdio_backend(), "timeout_s": 10, "connect_timeout_s": 10}
    off = {"command": "never-started", "enabled": False}
    configured = Configured(data_dir, tmp_path, backends={"proc": entry, "off": off})
    async with Client(configured.gateway) as admin:
        pid = (await admin.call_tool("proc_pid", {})).data
        status = (await admin.call_tool("admin_status", {})).structured_content
        assert status["backends"]["off"] == {"status": "disabled"}
        assert status["backends"]["proc"]["status"] == "up"
        assert status["status"] == "ready"  # a disabled backend does not make it degraded

        configured.write(backends={"proc": {**entry, "enabled": False}})
        assert (await reload(admin))["applied"] == ["backends (removed: proc)"]
        with anyio.fail_after(60):
            while alive(pid):
                await anyio.sleep(0.05)
        status = (await admin.call_tool("admin_status", {})).structured_content
        assert status["backends"] == {"proc": {"status": "disabled"}}  # "off" left the config
        assert "proc_pid" not in await tool_names(admin)

        configured.write(backends={"proc": entry})
        assert (await reload(admin))["applied"] == ["backends (added: proc)"]
        assert (await admin.call_tool("proc_pid", {})).data != pid


async def test_a_changed_backend_entry_is_replaced_by_a_fresh_one(data_dir, tmp_path):
    entry = {**stdio_backend(), "timeout_s": 10, "connect_timeout_s": 10}
    configured = Configured(data_dir, tmp_path, backends={"proc": entry})
    async with Client(configured.gateway) as admin:
        first = (await admin.call_tool("proc_pid", {})).data
        configured.write(backends={"proc": {**entry, "timeout_s": 9}})
        assert (await reload(admin))["applied"] == ["backends (replaced: proc)"]
        second = (await admin.call_tool("proc_pid", {})).data
        assert second != first
        with anyio.fail_after(10):
            while alive(first):
                await anyio.sleep(0.05)


async def test_settings_fixed_at_start_are_named_as_needing_a_restart(data_dir, tmp_path):
    configured = Configured(data_dir, tmp_path)
    async with Client(configured.gateway) as admin:
        configured.write(canned={"answer": ANSWER}, memory_limit="384MB")
        answer = await reload(admin)
    assert answer == {
        "applied": ["sql canned queries (answer)"],
        "needs_restart": ["sql.memory_limit"],
    }


async def test_each_part_applies_its_own_settings_and_names_the_rest(data_dir, tmp_path):
    configured = Configured(data_dir, tmp_path)
    async with Client(configured.gateway) as admin:
        config = json.loads(configured.config.read_text())
        config |= {"ready_timeout_s": 7.5, "limits": {"rate_burst": 99, "max_body_bytes": 4096}}
        configured.write_raw(json.dumps(config))
        answer = await reload(admin)
        assert answer == {
            "applied": ["limits", "ready_timeout_s"],
            "needs_restart": ["limits.max_body_bytes"],
        }
        # Nothing changed since: a second reload applies nothing and still names the rest.
        assert await reload(admin) == {
            "applied": [],
            "needs_restart": ["limits.max_body_bytes"],
        }


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_clear_caches_drops_stored_results_and_pipeline_caches(data_dir, tmp_path, mode):
    configured = Configured(data_dir, tmp_path, max_rows=10)
    async with Client(configured.gateway, mode=mode) as client:
        page = await client.call_tool("sql_query", {"sql": "SELECT * FROM range(100000)"})
        handle = page.structured_content["result"]
        await client.call_tool("sql_read_result", {"result_id": handle["id"], "offset": 10})
        run = await client.call_tool("pipelines_run_route_profile", {"dest": "SFO"})
        assert run.structured_content["run"]["cache"]["computed"] > 0
        layout = configured.load()
        caches = layout.pipeline_cache_dir
        assert (caches / "route_profile").is_dir()

        assert (layout.results_dir / handle["id"]).is_dir()
        cleared = await client.call_tool("admin_clear_caches", {"confirm": True})
        cleared = cleared.structured_content
        assert cleared["sql_results_dropped"] == 1
        assert cleared["pipeline_caches"] == {"cleared": ["route_profile"], "kept_running": []}
        assert not (caches / "route_profile").exists()
        assert layout.results_dir.is_dir()
        assert not (layout.results_dir / handle["id"]).exists()
        with pytest.raises(ToolError, match="No stored result"):
            await client.call_tool("sql_read_result", {"result_id": handle["id"]})
        again = await client.call_tool("pipelines_run_route_profile", {"dest": "SFO"})
        assert again.structured_content["run"]["cache"]["from_cache"] == 0
        assert again.structured_content["outputs"] == run.structured_content["outputs"]


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_status_lists_a_running_pipeline_run_with_its_worker(data_dir, tmp_path, mode):
    configured = Configured(data_dir, tmp_path)
    marker = tmp_path / "pid"
    async with Client(configured.gateway, mode=mode) as client:
        assert (await client.call_tool("admin_status", {})).structured_content["runs"] == []
        started = await client.call_tool(
            "pipelines_start_run", {"name": "slow", "inputs": {"marker": str(marker)}}
        )
        run_id = started.structured_content["run_id"]
        with anyio.fail_after(30):
            while not marker.exists() or not marker.read_text():
                await anyio.sleep(0.05)
        pid = int(marker.read_text())
        runs = (await client.call_tool("admin_status", {})).structured_content["runs"]
        assert len(runs) == 1
        assert runs[0]["pipeline"] == "slow" and runs[0]["run_id"] == run_id
        assert runs[0]["state"] == "running" and runs[0]["worker_pid"] == pid
        assert runs[0]["started"].endswith("+00:00")
        await client.call_tool("admin_cancel_run", {"run_id": run_id, "confirm": True})
        with anyio.fail_after(15):
            while (await client.call_tool("admin_status", {})).structured_content["runs"]:
                await anyio.sleep(0.1)
    with anyio.fail_after(10):
        while group_alive(pid):
            await anyio.sleep(0.05)
