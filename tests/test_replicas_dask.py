"""A real Dask cluster, started as docs/deployment.md says: `dask scheduler` and `dask worker`
from the gateway's environment with its preload (servers/pipelines/dask_preload.py), in a folder
that is not the project, with only the documented environment (no PYTHONPATH). Pipelines, the
samples and one of a user's folder, run on it through the gateway's tools with the outputs they
have locally; progress counts nodes that finished on the cluster; a cluster without a worker, or
a scheduler that is not there, fails the run with what to start."""

import os
import re
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import anyio
import psutil
import pytest
import yaml
from fastmcp import Client
from fastmcp.exceptions import ToolError

from gateway import create_gateway
from servers.settings import PROJECT_ROOT, GatewaySettings
from tests.conftest import free_port
from tests.test_pipelines_folders import ORDER_TOTALS
from tests.writers import make_database

pytestmark = pytest.mark.slow

COMPOSE = PROJECT_ROOT / "docker-compose.yml"
IMAGE_ROOT = "/app/"  # the project in the image (Dockerfile's WORKDIR)
SAMPLE_INPUTS = {"start_date": "2013-03-01", "end_date": "2013-05-31", "origin": "EWR"}

# A pipeline whose middle node waits for a file the test writes: while it waits, exactly one
# node has finished. (A test fixture may touch files; real pipelines never do.)
GATED = textwrap.dedent('''\
    """Three steps; the second waits until the test releases it."""

    import os
    import time
    from pathlib import Path

    from pydantic import BaseModel, Field

    OUTPUTS = ("last",)


    class Inputs(BaseModel):
        folder: str = Field(description="Where the second step says it runs and waits.")


    def first(folder: str) -> int:
        """The process that ran it."""
        return os.getpid()


    def gate(first: int, folder: str) -> int:
        """Says it runs, then waits (at most 120 s) for the file `release`."""
        Path(folder, "gate_running").write_text(str(os.getpid()))
        deadline = time.monotonic() + 120
        while not Path(folder, "release").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        return first


    def last(gate: int) -> int:
        """The first step's process id."""
        return gate
''')


def documented_environment(**settings: str) -> dict[str, str]:
    """What a shell has (PATH, HOME) plus the gateway's settings the docs name; no PYTHONPATH."""
    return {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), **settings}


def compose_command(service: str, address: str) -> list[str]:
    """docker-compose.yml's command of a dask service, for this checkout: the image's /app is
    the project root, the scheduler is at address, and every port is a free loopback one."""
    command = yaml.safe_load(COMPOSE.read_text())["services"][service]["command"]
    args = [
        arg.replace(IMAGE_ROOT, f"{PROJECT_ROOT}/").replace("tcp://dask-scheduler:8786", address)
        for arg in command
    ]
    args[args.index("--dashboard-address") + 1] = f"127.0.0.1:{free_port()}"
    if "--port" in args:
        args[args.index("--port") + 1] = address.rsplit(":", 1)[1]
    return [*args, "--host", "127.0.0.1"]


@contextmanager
def dask_process(args: list[str], cwd: Path, env: dict[str, str]) -> Iterator[subprocess.Popen]:
    """`dask ...` (args, from docker-compose.yml) run from cwd, stopped at the end; its output
    goes to a log file (``process.log``)."""
    assert Path(args[0]) == Path(sys.executable).with_name("dask")  # this environment's CLI
    log = cwd / f"{args[1]}-{time.monotonic_ns()}.log"
    with open(log, "wb") as output:
        process = subprocess.Popen(args, cwd=cwd, env=env, stdout=output, stderr=subprocess.STDOUT)
    process.log = log
    try:
        yield process
    finally:
        stop_tree(process.pid)


def stop_tree(pid: int) -> None:
    """Kill a process and every process it started (a worker's nanny and its worker)."""
    try:
        parent = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return
    family = [*parent.children(recursive=True), parent]
    for process in family:
        with suppress(psutil.NoSuchProcess):
            process.kill()
    psutil.wait_procs(family, timeout=30)


def wait_for_workers(address: str, count: int, processes: list, timeout_s: float = 120) -> None:
    """Return once the scheduler at address answers and has count workers; fail early, with its
    log, if a process exits."""
    from distributed import Client

    deadline = time.monotonic() + timeout_s
    client = None
    try:
        while time.monotonic() < deadline:
            for process in processes:
                if process.poll() is not None:
                    tail = process.log.read_text(errors="replace")[-3000:]
                    raise RuntimeError(f"dask {process.args[1]} exited: {tail}")
            try:
                client = client or Client(address, timeout=5)
                if len(client.scheduler_info(n_workers=-1)["workers"]) >= count:
                    return
            except OSError:
                pass
            time.sleep(0.2)
    finally:
        if client is not None:
            client.close()
    raise TimeoutError(f"the scheduler at {address} had no {count} workers after {timeout_s} s")


@pytest.fixture(scope="module")
def own(tmp_path_factory) -> dict[str, Path]:
    """A user's pipelines folder (order totals, and the gated one) and database, outside the
    repository; and a working folder for the cluster that is not the project root."""
    root = tmp_path_factory.mktemp("dask_user")
    folder = root / "my_pipelines"
    folder.mkdir()
    (folder / "order_totals.py").write_text(ORDER_TOTALS)
    (folder / "gated.py").write_text(GATED)
    database = make_database(
        root / "shop.duckdb",
        "CREATE TABLE orders AS SELECT range AS id, range * 10 AS total FROM range(1, 6)",
    )
    cwd = root / "elsewhere"
    cwd.mkdir()
    return {"folder": folder, "database": database, "data": root / "data", "cwd": cwd}


@pytest.fixture(scope="module")
def cluster(own) -> Iterator[str]:
    """A scheduler and one worker (two threads), as documented; their address."""
    address = f"tcp://127.0.0.1:{free_port()}"
    env = documented_environment(GATEWAY_PIPELINES__PATHS=f'["{own["folder"]}"]')
    worker_args = [*compose_command("dask-worker", address), "--nthreads", "2"]
    with (
        dask_process(compose_command("dask-scheduler", address), own["cwd"], env) as scheduler,
        dask_process(worker_args, own["cwd"], env) as worker,
    ):
        wait_for_workers(address, 1, [scheduler, worker])
        yield address


class Progress:
    """The progress notifications of one call: (done, total, message)."""

    def __init__(self):
        self.seen: list[tuple[int, int, str]] = []

    async def __call__(self, progress: float, total: float | None, message: str | None) -> None:
        self.seen.append((int(progress), int(total or 0), message or ""))

    @property
    def counts(self) -> list[int]:
        return [done for done, _, _ in self.seen]


def sample_settings(data_dir: Path, address: str | None, engine: str) -> GatewaySettings:
    overrides = {"carrier_delays": {"engine": engine}}
    pipelines = {"dask_scheduler": address, "run_timeout_s": 300, "overrides": overrides}
    return GatewaySettings.load(data_dir=data_dir, mcpServers={}, pipelines=pipelines)


def own_settings(own: dict[str, Path], address: str | None, **pipelines) -> GatewaySettings:
    return GatewaySettings.load(
        data_dir=own["data"],
        mcpServers={},
        sql={"database": own["database"]},
        pipelines={
            "paths": [own["folder"]],
            "dask_scheduler": address,
            "run_timeout_s": 300,
            **pipelines,
        },
    )


@pytest.fixture(scope="module")
async def local_sample_outputs(data_dir) -> dict:
    async with Client(create_gateway(sample_settings(data_dir, None, "local"))) as client:
        result = await client.call_tool("pipelines_run_carrier_delays", SAMPLE_INPUTS)
    return result.structured_content["outputs"]


async def test_a_sample_pipeline_runs_on_the_cluster_as_it_runs_locally(
    cluster, data_dir, local_sample_outputs
):
    progress = Progress()
    gateway = create_gateway(sample_settings(data_dir, cluster, "dask"))
    # A legacy client runs in the foreground: progress arrives as notifications.
    async with Client(gateway, mode="legacy", progress_handler=progress) as client:
        described = await client.call_tool(
            "pipelines_describe_pipeline", {"name": "carrier_delays"}
        )
        result = await client.call_tool("pipelines_run_carrier_delays", SAMPLE_INPUTS)
    assert described.structured_content["engine"] == "dask"
    assert result.structured_content["outputs"] == local_sample_outputs
    total = progress.seen[-1][1]
    # One message per node as it finished: 1/n first, then one more each time, ending at n/n.
    assert progress.counts == list(range(1, total + 1))
    assert total >= 4
    assert all(re.search(rf"{done}/{total} nodes done", m) for done, _, m in progress.seen)


async def test_a_background_run_on_the_cluster_reports_progress_then_the_local_outputs(
    cluster, data_dir, local_sample_outputs
):
    gateway = create_gateway(sample_settings(data_dir, cluster, "dask"))
    async with Client(gateway, mode="auto") as client:
        started = await client.call_tool(
            "pipelines_start_run", {"name": "carrier_delays", "inputs": SAMPLE_INPUTS}
        )
        run_id = started.data["run_id"]
        seen = []
        with anyio.fail_after(240):
            while (
                status := (await client.call_tool("pipelines_get_run", {"run_id": run_id})).data
            )["status"] == "working":
                if status.get("progress") and status["progress"] not in seen:
                    seen.append(status["progress"])
                await anyio.sleep(0.05)
    assert status["status"] == "completed", status
    assert status["result"]["outputs"] == local_sample_outputs
    done = [int(re.search(r"(\d+)/\d+ nodes done", p).group(1)) for p in seen]
    assert done == sorted(done)


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_a_pipeline_of_your_own_folder_runs_on_the_cluster(mode, cluster, own):
    local = create_gateway(own_settings(own, cluster))
    on_dask = create_gateway(
        own_settings(own, cluster, overrides={"order_totals": {"engine": "dask"}})
    )
    async with Client(local, mode=mode) as client:
        expected = await client.call_tool("pipelines_run_order_totals", {"minimum": 30})
    async with Client(on_dask, mode=mode) as client:
        ran = await client.call_tool("pipelines_run_order_totals", {"minimum": 30})
    assert ran.structured_content["outputs"]["totals"]["rows"] == [[3, 120]]
    assert ran.structured_content["outputs"] == expected.structured_content["outputs"]


async def test_progress_counts_only_the_nodes_that_finished_on_the_cluster(cluster, own, tmp_path):
    settings = own_settings(own, cluster, overrides={"gated": {"engine": "dask"}})
    progress = Progress()
    answer: dict = {}
    async with Client(create_gateway(settings), mode="legacy", progress_handler=progress) as client:

        async def run() -> None:
            answer["result"] = await client.call_tool(
                "pipelines_run_gated", {"folder": str(tmp_path)}
            )

        async with anyio.create_task_group() as group:
            group.start_soon(run)
            with anyio.fail_after(120):
                while not (tmp_path / "gate_running").exists():
                    await anyio.sleep(0.05)
                # The gate runs on the cluster: only `first` has finished, and was reported.
                while not progress.seen:
                    await anyio.sleep(0.05)
            seen_while_gated = list(progress.seen)
            (tmp_path / "release").touch()
    assert [(done, total) for done, total, _ in seen_while_gated] == [(1, 3)]
    assert "last first" in seen_while_gated[0][2]
    assert progress.counts == [1, 2, 3]
    assert answer["result"].structured_content["outputs"]["last"] != os.getpid()


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_a_scheduler_that_is_not_there_fails_the_run_saying_so(mode, own):
    address = f"tcp://127.0.0.1:{free_port()}"  # nothing listens there
    settings = own_settings(
        own, address, dask_wait_s=2, overrides={"order_totals": {"engine": "dask"}}
    )
    async with Client(create_gateway(settings), mode=mode) as client:
        with anyio.fail_after(240), pytest.raises(ToolError) as raised:
            await client.call_tool("pipelines_run_order_totals", {"minimum": 30})
    assert f"the Dask scheduler at {address} cannot be reached" in str(raised.value)
    assert "ran longer" not in str(raised.value)


async def test_a_cluster_without_a_worker_fails_the_run_with_what_to_start(own, tmp_path):
    """No worker from the start, then a worker lost in the middle of a run: both runs fail
    with the reason well before their timeout (300 s), and a worker that comes runs them."""
    address = f"tcp://127.0.0.1:{free_port()}"
    env = documented_environment(GATEWAY_PIPELINES__PATHS=f'["{own["folder"]}"]')
    overrides = {name: {"engine": "dask"} for name in ("order_totals", "gated")}
    settings = own_settings(own, address, dask_wait_s=5, overrides=overrides, concurrency=1)
    reason = f"the Dask cluster at {address} has no workers; start one with `dask worker {address}`"
    scheduler_args = compose_command("dask-scheduler", address)
    with dask_process(scheduler_args, own["cwd"], env) as s:
        wait_for_workers(address, 0, [s])
        async with Client(create_gateway(settings)) as client:
            with anyio.fail_after(240), pytest.raises(ToolError) as raised:
                await client.call_tool("pipelines_run_order_totals", {"minimum": 30})
            assert reason in str(raised.value)
            with dask_process(compose_command("dask-worker", address), own["cwd"], env) as worker:
                wait_for_workers(address, 1, [s, worker])
                ran = await client.call_tool("pipelines_run_order_totals", {"minimum": 30})
                assert ran.structured_content["outputs"]["totals"]["rows"] == [[3, 120]]
                lost: dict[str, ToolError] = {}
                with anyio.fail_after(240):
                    async with anyio.create_task_group() as group:
                        group.start_soon(_run_gated, client, tmp_path, lost)
                        while not (tmp_path / "gate_running").exists():
                            await anyio.sleep(0.05)
                        stop_tree(worker.pid)  # the only worker, gone in the middle of a run
    assert reason in str(lost["error"])
    assert "ran longer" not in str(lost["error"])


async def _run_gated(client: Client, folder: Path, failed: dict[str, ToolError]) -> None:
    try:
        await client.call_tool("pipelines_run_gated", {"folder": str(folder)})
    except ToolError as exc:
        failed["error"] = exc


def test_the_compose_dask_services_run_the_gateway_image_with_its_preload_data_and_settings():
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    scheduler, worker = services["dask-scheduler"], services["dask-worker"]
    preload = f"{IMAGE_ROOT}servers/pipelines/dask_preload.py"
    assert (PROJECT_ROOT / preload.removeprefix(IMAGE_ROOT)).is_file()
    for spec in (scheduler, worker):
        command = spec["command"]
        assert spec["image"] == services["gateway"]["image"]
        assert spec["profiles"] == ["dask"]  # optional: `docker compose --profile dask up`
        assert command[0] == f"{IMAGE_ROOT}.venv/bin/dask"
        assert command[command.index("--preload") + 1] == preload
        assert spec["env_file"] == ".env"  # the gateway's settings, GATEWAY_PIPELINES__PATHS too
        config = services["task-worker"]["environment"]["GATEWAY_CONFIG"]
        assert spec["environment"]["GATEWAY_CONFIG"] == config
        dashboard = command[command.index("--dashboard-address") + 1]
        assert f"http://127.0.0.1{dashboard}/health" in spec["healthcheck"]["test"][-1]
    port = scheduler["command"][scheduler["command"].index("--port") + 1]
    assert worker["command"][1:3] == ["worker", f"tcp://dask-scheduler:{port}"]
    # Nodes open the database at the gateway's path and spill under its data directory.
    assert set(services["gateway"]["volumes"]) <= set(worker["volumes"])
