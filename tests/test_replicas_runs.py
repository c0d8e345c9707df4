"""Background runs whose task worker dies: real redis-server (with a password), real task worker
processes (python -m fastmcp_tasks.worker_cli), a gateway that only queues and reports (the
runs go to the workers), and a slow pipeline run killed with its worker by SIGKILL mid-run.

A run whose worker stopped is retried once, from the start, on another worker; if that worker
stops too, the run is failed with the reason. The killed workers' run processes are gone.

Needs the `redis-server` binary (Debian package redis-server; .ci/run installs it).
"""

import json
import os
import shutil
import signal
import subprocess
import uuid
from contextlib import ExitStack
from pathlib import Path

import anyio
import psutil
import pytest
from fastmcp import Client

from servers.settings import PROJECT_ROOT, GatewaySettings
from tests.deploy import RedisServer
from tests.pipeline_processes import alive, wait_until_gone
from tests.test_pipelines_redis import task_worker
from tests.test_replicas_redis import PASSWORD, redis_server  # noqa: F401 (a fixture)

pytestmark = pytest.mark.slow

REDELIVERY_S = 5  # a dead worker's run goes to another worker after this (and a sweep)
SLOW = PROJECT_ROOT / "tests" / "fixtures" / "slow_pipeline.py"
BOUND_S = 120  # generous: worker start-ups and runs on a loaded 2-core machine


@pytest.fixture
def deployment(redis_server: RedisServer, data_dir: Path, tmp_path: Path) -> dict:  # noqa: F811
    """Settings shared by the gateway and its task workers: the Redis queue, a short
    redelivery, and a pipelines folder with only the slow pipeline."""
    folder = tmp_path / "slow_pipelines"
    folder.mkdir()
    shutil.copy(SLOW, folder / "slow.py")
    name = f"runs-{uuid.uuid4().hex[:8]}"
    env = {
        "GATEWAY_DATA_DIR": str(data_dir),
        "GATEWAY_PIPELINES__TASKS_URL": redis_server.url,
        "GATEWAY_PIPELINES__TASKS_NAME": name,
        "GATEWAY_PIPELINES__TASKS_CONCURRENCY": "1",
        "GATEWAY_PIPELINES__TASKS_REDELIVERY_S": str(REDELIVERY_S),
        "GATEWAY_PIPELINES__PATHS": json.dumps([str(folder)]),
        "GATEWAY_PIPELINES__SAMPLE_PIPELINES": "[]",
    }
    settings = GatewaySettings.load(
        data_dir=data_dir,
        mcpServers={},
        pipelines={
            "tasks_url": redis_server.url,
            "tasks_name": name,
            "tasks_redelivery_s": REDELIVERY_S,
            "tasks_in_gateway": False,  # the gateway queues; only the task workers run
            "paths": [folder],
            "sample_pipelines": [],
        },
    )
    return {"env": env, "settings": settings, "marker": tmp_path / "run-worker.pid"}


async def status_of(client: Client, run_id: str) -> dict:
    return (await client.call_tool("pipelines_get_run", {"run_id": run_id})).data


async def wait_for(client: Client, run_id: str, seen: list[dict], done, what: str) -> dict:
    """Poll the run's status (each one appended to seen) until done(status); fail after
    BOUND_S naming what was awaited and the last status."""
    try:
        with anyio.fail_after(BOUND_S):
            while True:
                status = await status_of(client, run_id)
                seen.append(status)
                if done(status):
                    return status
                if status["status"] != "working":
                    pytest.fail(f"the run ended before the {what}: {status}")
                await anyio.sleep(0.2)
    except TimeoutError:
        pytest.fail(f"no {what} within {BOUND_S} s; last status {seen[-1] if seen else None}")


def running_on(status: dict) -> bool:
    return status["status"] == "working" and "nodes done" in status.get("progress", "")


async def run_worker_of(marker: Path, previous: int | None = None) -> int:
    """The run worker process the slow pipeline's attempt wrote to marker (a new one when
    previous is given)."""
    with anyio.fail_after(BOUND_S):
        while True:
            text = marker.read_text() if marker.exists() else ""
            if text and int(text) != previous:
                return int(text)
            await anyio.sleep(0.1)


async def kill_task_worker_running(run_worker: int, workers: list[subprocess.Popen]) -> None:
    """SIGKILL the task worker whose run worker is run_worker (it must be one of workers), and
    wait until it is dead (a zombie, reaped when its task_worker block ends)."""
    parent = psutil.Process(run_worker).ppid()
    (worker,) = [w for w in workers if w.pid == parent]
    os.kill(worker.pid, signal.SIGKILL)
    with anyio.fail_after(30):
        while alive(worker.pid):
            await anyio.sleep(0.05)


async def start_slow_run(client: Client, marker: Path, seconds: float) -> str:
    started = await client.call_tool(
        "pipelines_start_run",
        {"name": "slow", "inputs": {"marker": str(marker), "seconds": seconds}},
    )
    assert started.data["status"] == "working"
    return started.data["run_id"]


@pytest.mark.timeout(600)
@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_a_run_whose_worker_is_killed_is_retried_from_the_start_on_another_worker(
    deployment: dict, mode: str
):
    from gateway import create_gateway

    marker, seen = deployment["marker"], []
    with ExitStack() as stack:
        workers = [stack.enter_context(task_worker(deployment["env"], start_s=BOUND_S))]
        workers.append(stack.enter_context(task_worker(deployment["env"], start_s=BOUND_S)))
        gateway = create_gateway(deployment["settings"])
        async with Client(gateway, mode=mode, timeout=60) as client:
            run_id = await start_slow_run(client, marker, seconds=8)
            await wait_for(client, run_id, seen, running_on, "progress of the first attempt")
            first = await run_worker_of(marker)
            await kill_task_worker_running(first, workers)
            await wait_until_gone(first)  # the killed worker's run process died with it

            final = await wait_for(
                client, run_id, seen, lambda s: s["status"] != "working", "end of the retry"
            )
    assert final["status"] == "completed", final
    second = final["result"]["run"]["worker_pid"]
    assert second != first and not alive(first)
    outputs = final["result"]["outputs"]
    assert outputs["quick"]["pid"] == second  # the retry ran every node again, from the start
    progress = [s.get("progress", "") for s in seen[seen.index(next(filter(running_on, seen))) :]]
    assert any("retry after its worker stopped (attempt 2 of 2)" in p for p in progress), progress
    assert all(PASSWORD not in json.dumps(s) for s in seen)


@pytest.mark.timeout(600)
@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_a_run_whose_worker_is_killed_twice_fails_with_the_reason(
    deployment: dict, mode: str
):
    from gateway import create_gateway

    marker, seen = deployment["marker"], []
    with ExitStack() as stack:
        workers = [stack.enter_context(task_worker(deployment["env"], start_s=BOUND_S))]
        workers.append(stack.enter_context(task_worker(deployment["env"], start_s=BOUND_S)))
        gateway = create_gateway(deployment["settings"])
        async with Client(gateway, mode=mode, timeout=60) as client:
            run_id = await start_slow_run(client, marker, seconds=60)
            await wait_for(client, run_id, seen, running_on, "progress of the first attempt")
            first = await run_worker_of(marker)
            await kill_task_worker_running(first, workers)
            await wait_until_gone(first)

            retried = await wait_for(
                client,
                run_id,
                seen,
                lambda s: running_on(s) and "attempt 2 of 2" in s["progress"],
                "progress of the retry",
            )
            assert retried["progress"].startswith("slow (retry after its worker stopped")
            second = await run_worker_of(marker, previous=first)
            await kill_task_worker_running(second, workers)
            await wait_until_gone(second)

            # No worker is alive now: the status says the run's worker is gone and what next.
            gone = await wait_for(
                client,
                run_id,
                seen,
                lambda s: "stopped again" in s.get("progress", ""),
                "note that the worker stopped again",
            )
            assert gone["status"] == "working"
            assert "marked failed as soon as a worker takes it up" in gone["progress"]
            # The next worker to come takes the run up and fails it with the reason, at once.
            stack.enter_context(task_worker(deployment["env"], start_s=BOUND_S))
            final = await wait_for(
                client, run_id, seen, lambda s: s["status"] != "working", "end of the run"
            )
    assert final["status"] == "failed", final
    assert "its worker stopped 2 times while running it" in final["error"]
    assert "pipelines_start_run" in final["error"]
    assert marker.read_text() == str(second)  # no third attempt ran any node
    assert not alive(first) and not alive(second)
    assert all(PASSWORD not in json.dumps(s) for s in seen)
