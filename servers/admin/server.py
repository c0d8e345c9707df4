"""The admin server: the service's status, and the /health and /ready HTTP routes.

Run alone: ``uv run python -m servers.admin`` (stdio) or ``... --transport http --port 8003``.
"""

from collections.abc import Callable
from typing import Annotated

from fastmcp import FastMCP
from starlette.requests import Request
from starlette.responses import JSONResponse

from servers.conventions import READ_ONLY
from servers.gateway.audit import Audit
from servers.health import Health
from servers.lookup import Server
from servers.settings import GatewaySettings


def create_server(
    settings: GatewaySettings,
    health: Health | None = None,
    audit: Audit | None = None,
    runs: Callable[[], list[dict]] | None = None,
) -> FastMCP:
    """The admin server, reporting on the checks in health (only its own when alone), when
    given the gateway's audit on the calls made, and when given ``runs`` (the pipelines
    server's runs in progress) on those."""
    health = health or Health(timeout_s=settings.ready_timeout_s)
    mcp = Server(
        "admin",
        instructions="Administration of the gateway: its version, uptime, mounts and backends.",
        mask_error_details=True,
    )

    @mcp.tool(annotations=READ_ONLY)
    async def status() -> dict:
        """Service status: ready, degraded or unready; health of each mount and backend (with
        its circuit and catalog), calls and p50/p99 latency per tool, pipeline runs in
        progress."""
        report = await health.report()
        if audit is not None:
            report["calls"] = audit.per_tool()
        if runs is not None:
            report["runs"] = runs()
        return report

    if audit is not None:

        @mcp.tool(annotations=READ_ONLY)
        async def recent_calls(
            limit: Annotated[int, "1-1000"] = 50,
            tool: Annotated[str | None, "A tool, resource URI or prompt"] = None,
            client: str | None = None,
            errors_only: bool = False,
        ) -> list[dict]:
            """Recent calls from the audit log, newest first: client, name, arguments
            (redacted), duration and outcome."""
            return audit.recent_calls(max(1, min(limit, 1000)), tool, client, errors_only)

    @mcp.custom_route("/health", methods=["GET"])
    async def liveness(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    @mcp.custom_route("/ready", methods=["GET"])
    async def readiness(request: Request) -> JSONResponse:
        report = await health.report()
        return JSONResponse(report, status_code=503 if report["status"] == "unready" else 200)

    return mcp
