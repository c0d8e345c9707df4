"""The admin server: the service's status, and the /health and /ready HTTP routes.

Run alone: ``uv run python -m servers.admin`` (stdio) or ``... --transport http --port 8003``.
"""

from fastmcp import FastMCP
from mcp.types import ToolAnnotations
from starlette.requests import Request
from starlette.responses import JSONResponse

from servers.health import Health
from servers.settings import GatewaySettings


def create_server(settings: GatewaySettings, health: Health | None = None) -> FastMCP:
    """The admin server, reporting on the checks in health (only its own when alone)."""
    health = health or Health(timeout_s=settings.ready_timeout_s)
    mcp = FastMCP(
        "admin",
        instructions="Administration of the gateway: its version, uptime, mounts and backends.",
        mask_error_details=True,
    )

    @mcp.tool(annotations=ToolAnnotations(readOnlyHint=True, openWorldHint=False))
    async def status() -> dict:
        """The gateway's version, uptime, and the health of every mounted namespace and remote
        backend (up or down, with the reason when down). Overall status is "ready" when all
        are up, "degraded" when only backends are down, "unready" when a local mount is down."""
        return await health.report()

    @mcp.custom_route("/health", methods=["GET"])
    async def liveness(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    @mcp.custom_route("/ready", methods=["GET"])
    async def readiness(request: Request) -> JSONResponse:
        report = await health.report()
        return JSONResponse(report, status_code=503 if report["status"] == "unready" else 200)

    return mcp


if __name__ == "__main__":
    from servers.standalone import run_alone

    run_alone(create_server)
