"""Folders of processes that have ended are removed at the next start; a live process's stay.

Real processes throughout: run workers started by the pipelines server, a process that has
exited, and one that is still running.
"""

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastmcp import Client

from pipelines import Pipeline
from servers.leftovers import folder_name, owner_gone, remove_leftovers
from servers.pipelines.server import build_server
from servers.sample_data import ensure_sample_database
from servers.settings import GatewaySettings
from servers.sql.engine import Engine
from tests.fixtures import slow_pipeline


def exited_pid() -> int:
    """The process id of a process that has run and exited."""
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
        timeout=90,
    )
    return int(done.stdout)


@pytest.fixture
def live_pid() -> Iterator[int]:
    """The process id of a process that runs until the test ends."""
    process = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
    )
    yield process.pid
    process.stdin.close()
    process.wait(timeout=90)


def settings_in(data_dir: Path, tmp_path: Path) -> GatewaySettings:
    return GatewaySettings.load(
        data_dir=tmp_path / "data",
        sql={"database": ensure_sample_database(data_dir)},
        mcpServers={},
    )


def test_only_a_folder_of_this_hosts_process_that_has_exited_is_a_leftover(tmp_path, live_pid):
    dead = exited_pid()
    assert owner_gone(tmp_path / folder_name(dead))
    assert owner_gone(tmp_path / folder_name(dead, "a1b2"))
    assert owner_gone(tmp_path / str(dead))  # named as before hosts were: this host's
    assert owner_gone(tmp_path / f"{dead}-a1b2")
    assert not owner_gone(tmp_path / folder_name(live_pid))
    assert not owner_gone(tmp_path / folder_name(live_pid, "a1b2"))
    # Another container's process ids are not this one's to judge.
    assert not owner_gone(tmp_path / f"{dead}@another-host")
    assert not owner_gone(tmp_path / "notes")  # not a process's folder
    kept = [folder_name(live_pid), f"{dead}@another-host", "notes"]
    for name in [folder_name(dead), *kept]:
        (tmp_path / name).mkdir()
    assert remove_leftovers(tmp_path) == [tmp_path / folder_name(dead)]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(kept)


async def test_a_run_workers_spill_folder_goes_at_the_next_start_after_it_exits(
    data_dir, tmp_path, live_pid
):
    settings = settings_in(data_dir, tmp_path)
    scratch = settings.scratch_dir
    live = scratch / folder_name(live_pid)
    live.mkdir(parents=True)
    dead = exited_pid()
    nested = scratch / str(dead) / f"worker-{dead}"  # the layout that used to pile up
    nested.mkdir(parents=True)
    server, control = build_server(
        settings, pipelines={"slow": Pipeline(slow_pipeline, slow_pipeline.OUTPUTS)}
    )
    arguments = {"name": "slow", "inputs": {"marker": str(tmp_path / "pid")}, "outputs": ["quick"]}
    async with Client(server) as client:
        first = (await client.call_tool("run_pipeline", arguments)).structured_content
        first_worker = first["run"]["worker_pid"]
        # The worker spills to a folder of its own at the top, and removed the dead one's.
        assert (scratch / folder_name(first_worker)).is_dir()
        assert not (scratch / str(dead)).exists()
        assert live.is_dir()
        await control.clear_caches()  # stops the idle worker: its process exits
        assert owner_gone(scratch / folder_name(first_worker))
        second = (await client.call_tool("run_pipeline", arguments)).structured_content
    second_worker = second["run"]["worker_pid"]
    assert second_worker != first_worker
    assert not (scratch / folder_name(first_worker)).exists()
    assert (scratch / folder_name(second_worker)).is_dir()
    assert live.is_dir()


def test_the_sql_engine_removes_ended_processes_spill_folders_when_it_opens(
    data_dir, tmp_path, live_pid
):
    # A private copy: DuckDB shares one instance (and its spill folder) per file in a process.
    database = shutil.copyfile(ensure_sample_database(data_dir), tmp_path / "copy.duckdb")
    settings = GatewaySettings.load(
        data_dir=tmp_path / "data", sql={"database": database}, mcpServers={}
    )
    dead = settings.scratch_dir / folder_name(exited_pid())
    dead.mkdir(parents=True)
    live = settings.scratch_dir / folder_name(live_pid)
    live.mkdir()
    engine = Engine.open(settings)
    try:
        assert not dead.exists() and live.is_dir()
        with engine.cursor() as cursor:
            spill = cursor.execute("SELECT current_setting('temp_directory')").fetchone()
        assert Path(spill[0]).parent == settings.scratch_dir
        # The folder's name (process id, host) never reaches a client in an error message.
        assert engine.scrub(f"cannot write {spill[0]}/t.tmp") == "cannot write <scratch>/t.tmp"
    finally:
        engine.close()
