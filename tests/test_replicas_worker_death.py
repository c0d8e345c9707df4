"""Work not left spinning: a process that runs pipelines (a gateway or a task worker) killed
with SIGKILL in the middle of a run takes its run processes with it."""

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import anyio
import pytest

from servers.settings import PROJECT_ROOT
from tests.pipeline_processes import wait_until_gone

pytestmark = pytest.mark.slow

HOST = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    import anyio
    from fastmcp import Client

    from servers.pipelines.registry import Pipeline
    from servers.pipelines.server import create_server
    from servers.settings import GatewaySettings
    from tests.fixtures import slow_pipeline

    async def main(data_dir: str, marker: str) -> None:
        settings = GatewaySettings.load(data_dir=Path(data_dir), mcpServers={})
        slow = Pipeline(slow_pipeline, slow_pipeline.OUTPUTS)
        async with Client(create_server(settings, pipelines={"slow": slow})) as client:
            await client.call_tool("run_slow", {"marker": marker, "seconds": 120})

    anyio.run(main, *sys.argv[1:])
    """
)


async def test_run_processes_die_within_seconds_of_the_process_that_runs_them(
    data_dir: Path, tmp_path: Path
):
    marker = tmp_path / "pid"
    log = (tmp_path / "host.log").open("wb")
    host = subprocess.Popen(
        [sys.executable, "-c", HOST, str(data_dir), str(marker)],
        cwd=PROJECT_ROOT,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        with anyio.fail_after(90):  # the host imports and starts its run worker first
            while not (marker.exists() and marker.read_text()):
                assert host.poll() is None, (tmp_path / "host.log").read_text()[-2000:]
                await anyio.sleep(0.1)
        run_worker = int(marker.read_text())  # the run is spinning in its worker process
        os.kill(host.pid, signal.SIGKILL)
        host.wait(timeout=30)
        await wait_until_gone(run_worker)  # within 10 s, not when its 2 minutes are up
    finally:
        if host.poll() is None:
            host.kill()
            host.wait()
        log.close()
