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
        """The gateway's version, uptime, and the health of every mounted namespace and remote
        backend (up or down, with the reason when down). For a backend also: its circuit
        (closed, open or half_open, and when it is retried), its catalog (fresh, stale or
        expired), tool names shortened for clients ("renamed") and tools kept back by its
        allow/deny lists. Overall status is "ready" when all are up, "degraded" when only
        backends are down, "unready" when a local mount is down. "calls": per tool, resource
        or prompt, the calls and errors since start and the p50/p99 latency in ms. "runs": the
        pipeline runs in progress (direct calls and background tasks alike): pipeline,
        started (UTC), state (waiting for a worker or running), worker_pid, node progress, and
        for a background run its run_id (for cancel_run)."""
        report = await health.report()
        if audit is not None:
            report["calls"] = audit.per_tool()
        if runs is not None:
            report["runs"] = runs()
        return report

    if audit is not None:

        @mcp.tool(annotations=READ_ONLY)
        async def recent_calls(
            limit: Annotated[int, "Most calls returned, newest first (1-1000)"] = 50,
            tool: Annotated[str | None, "Only calls of this tool, resource URI or prompt"] = None,
            client: Annotated[str | None, "Only calls of this client"] = None,
            errors_only: Annotated[bool, "Only calls that failed or were refused"] = False,
        ) -> list[dict]:
            """Recent calls from the audit log, newest first: time, client, kind (tool,
            resource, prompt), name, argument summary (secrets redacted), duration_ms, outcome
            ("ok" or "error") and error_class."""
            return audit.recent_calls(max(1, min(limit, 1000)), tool, client, errors_only)

    @mcp.custom_route("/health", methods=["GET"])
    async def liveness(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    @mcp.custom_route("/ready", methods=["GET"])
    async def readiness(request: Request) -> JSONResponse:
        report = await health.report()
        return JSONResponse(report, status_code=503 if report["status"] == "unready" else 200)

    return mcp
