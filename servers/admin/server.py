"""The admin server: the service's status, and the /health and /ready HTTP routes.

Run alone: ``uv run python -m servers.admin`` (stdio) or ``... --transport http --port 8003``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated

from fastmcp import FastMCP
from starlette.requests import Request
from starlette.responses import JSONResponse

from servers.conventions import READ_ONLY
from servers.gateway.audit import Audit
from servers.health import Health
from servers.lookup import Server
from servers.replica import process_name
from servers.settings import GatewaySettings

if TYPE_CHECKING:
    from servers.gateway.replicas import Replicas


def create_server(
    settings: GatewaySettings,
    health: Health | None = None,
    audit: Audit | None = None,
    runs: Callable[[], list[dict]] | None = None,
    replicas: Replicas | None = None,
) -> FastMCP:
    """The admin server, reporting on the checks in health (only its own when alone), when
    given the gateway's audit on the calls made, when given ``runs`` (the pipelines server's
    runs in progress) on those, and when given ``replicas`` on every process of the deployment
    (its heartbeat runs with this server's lifespan)."""
    health = health or Health(timeout_s=settings.ready_timeout_s)
    mcp = Server(
        "admin",
        instructions="Administration of the gateway: its version, uptime, mounts and backends.",
        mask_error_details=True,
        **({"lifespan": replicas.lifespan} if replicas is not None else {}),
    )

    @mcp.tool(annotations=READ_ONLY)
    async def status() -> dict:
        """Service status of the process that answers (`replica`): ready, degraded or
        unready; health of each mount and backend (with its circuit and catalog), its calls and
        p50/p99 latency per tool, pipeline runs in progress; `processes`: every live gateway
        process of the deployment, or `scope: this process` without a shared Redis."""
        report = await health.report()
        if audit is not None:
            report["calls"] = audit.per_tool()
        if runs is not None:
            report["runs"] = runs()
        if replicas is not None:
            report["processes"] = await replicas.processes()
        else:
            report["processes"] = {"answered_by": process_name(), "scope": "this process"}
        return report

    if audit is not None:

        @mcp.tool(annotations=READ_ONLY)
        async def recent_calls(
            limit: Annotated[int, "1-1000"] = 50,
            tool: Annotated[str | None, "A tool, resource URI or prompt"] = None,
            client: str | None = None,
            errors_only: bool = False,
        ) -> dict:
            """Recent calls, newest first, of every gateway process of the deployment (`scope:
            deployment`) or, without a reachable shared Redis, of this one (`scope: this
            process`): client, name, arguments (redacted), duration, outcome, replica."""
            limit = max(1, min(limit, 1000))
            if replicas is not None:
                return await replicas.recent_calls(limit, tool, client, errors_only)
            calls = audit.recent_calls(limit, tool, client, errors_only)
            return {"scope": "this process", "answered_by": process_name(), "calls": calls}

    @mcp.custom_route("/health", methods=["GET"])
    async def liveness(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    @mcp.custom_route("/ready", methods=["GET"])
    async def readiness(request: Request) -> JSONResponse:
        report = await health.report()
        return JSONResponse(report, status_code=503 if report["status"] == "unready" else 200)

    return mcp
