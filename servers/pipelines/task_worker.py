"""A worker process for background pipeline runs, beside the gateway, sharing its Redis queue.

    GATEWAY_PIPELINES__TASKS_URL=redis://127.0.0.1:6379/0 \\
        uv run python -m fastmcp_tasks.worker_cli worker \\
        servers/pipelines/task_worker.py:create_worker_server

Run it from the project root with the gateway's settings (the same environment, or
``GATEWAY_CONFIG`` naming the gateway's JSON config file). It serves no client: it takes the
runs the gateway queued (``start_run``, or task calls of the run tools) and executes them on
its own run workers.
"""

import os
from pathlib import Path

from fastmcp import FastMCP


def create_worker_server() -> FastMCP:
    """The pipelines server mounted as the gateway mounts it, so queued runs match its tools."""
    from servers.pipelines.server import create_server
    from servers.pipelines.tasks import tasks_extension
    from servers.settings import GatewaySettings

    config = os.environ.get("GATEWAY_CONFIG")
    settings = GatewaySettings.load(Path(config) if config else None)
    tasks = tasks_extension(settings, namespace="pipelines")
    root = FastMCP("gateway-pipeline-worker")
    root.add_extension(tasks)
    root.mount(create_server(settings, tasks=tasks), namespace="pipelines")
    return root
