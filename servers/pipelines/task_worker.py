"""A worker process for background pipeline runs, beside the gateway, sharing its Redis queue.

    GATEWAY_PIPELINES__TASKS_URL=redis://127.0.0.1:6379/0 \\
        uv run python -m servers.pipelines.task_worker

(``python -m fastmcp_tasks.worker_cli worker servers/pipelines/task_worker.py:
create_worker_server`` starts the same worker, but prints the queue's URL with its password.)

Run it from the project root with the gateway's settings (the same environment, or
``GATEWAY_CONFIG`` naming the gateway's JSON config file). It serves no client: it takes the
runs the gateway queued (``start_run``, or task calls of the run tools) and executes them on
its own run workers.
"""

import asyncio
import os
import sys
from pathlib import Path

from fastmcp import FastMCP


def create_worker_server() -> FastMCP:
    """The pipelines server mounted as the gateway mounts it, so queued runs match its tools."""
    from servers.pipelines.server import create_server
    from servers.pipelines.tasks import tasks_extension
    from servers.settings import GatewaySettings

    config = os.environ.get("GATEWAY_CONFIG")
    settings = GatewaySettings.load(Path(config) if config else None)
    tasks = tasks_extension(settings, namespace="pipelines", worker=True)
    root = FastMCP("gateway-pipeline-worker")
    root.add_extension(tasks)
    root.mount(create_server(settings, tasks=tasks), namespace="pipelines")
    return root


def main() -> None:
    """Serve queued runs until stopped; the log names the queue without its password."""
    from fastmcp.utilities.tasks import TASKS_EXTENSION_ID

    from servers.pipelines.tasks import masked_url

    server = create_worker_server()
    settings = server._extensions[TASKS_EXTENSION_ID].docket_settings

    async def run() -> None:
        async with server._lifespan_manager():  # starts the queue's worker
            print(f"Starting worker for {server.name}", flush=True)
            print(f"  Docket: {settings.name}", flush=True)
            print(f"  Backend: {masked_url(settings.url)}", flush=True)
            print(f"  Concurrency: {settings.concurrency}", flush=True)
            await asyncio.Event().wait()

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
