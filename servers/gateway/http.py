"""How uvicorn serves the gateway: one place for the server's options, shared by the single
process and the `--workers N` supervisor."""

from typing import Any

from servers.settings import GatewaySettings


def uvicorn_options(settings: GatewaySettings) -> dict[str, Any]:
    """uvicorn.run keyword arguments for these settings (besides the app and workers)."""
    return {
        "host": settings.host,
        "port": settings.port,
        "timeout_graceful_shutdown": 5,
        "log_level": "info",
        "access_log": settings.access_log,
        # Only used by the --workers supervisor (uvicorn's default, 5 s, kills a worker still
        # starting on a loaded machine).
        "timeout_worker_healthcheck": settings.worker_healthcheck_timeout_s,
    }
