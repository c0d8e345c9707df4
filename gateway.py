"""The gateway: one MCP endpoint composing the sql, pipelines and admin servers and every remote
backend of the mcpServers config, each under its own namespace.

    uv run gateway.py                          # http://127.0.0.1:8000/mcp, embedded default
    uv run gateway.py --config gateway.json    # settings and mcpServers from a JSON file
    uv run gateway.py --transport stdio        # for desktop clients that start it themselves
"""

import argparse
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

import uvicorn
from fastmcp import FastMCP
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.middleware import Middleware

from pipelines import Pipeline
from servers.admin import server as admin
from servers.admin.controls import BackendsPart, Runtime, install_admin_controls
from servers.backends.provider import install_backends
from servers.gateway.audit import Audit, AuditMiddleware
from servers.gateway.auth import build_auth, insecure_bind_refusal, new_token
from servers.gateway.clients import clients_command
from servers.gateway.http import uvicorn_options
from servers.gateway.limits import BodyLimit, ClientLimits
from servers.gateway.metrics import install_metrics
from servers.gateway.policy import ScopePolicy, Scopes
from servers.gateway.tool_schemas import ToolSchemas
from servers.gateway.tool_search import CALL_TOOL, SEARCH_TOOL, ToolSearch
from servers.health import Health
from servers.lookup import Server
from servers.pipelines import server as pipelines
from servers.pipelines.registry import PipelineError
from servers.pipelines.tasks import services as pipelines_services
from servers.pipelines.tasks import tasks_extension
from servers.settings import GatewaySettings
from servers.sql import server as sql
from servers.sql.engine import Engine

INSTRUCTIONS = """\
A data gateway. Namespaces: sql_* (read-only SQL over a DuckDB database; start with \
sql_list_tables), pipelines_* (vetted Hamilton dataflows; start with pipelines_list_pipelines), \
admin_* (service status), and one per remote backend ({backends})."""


def create_gateway(
    settings: GatewaySettings,
    reload_settings: Callable[[], GatewaySettings] | None = None,
    served_pipelines: Mapping[str, Pipeline] | None = None,
) -> FastMCP:
    """Compose the sub-servers and backends described by settings into one server.
    ``reload_settings`` reads the settings again for admin_reload (default: the same settings,
    with the files they name read again); ``served_pipelines`` replaces the pipeline registry
    (tests)."""
    engine = Engine.open(settings)
    health = Health(timeout_s=settings.ready_timeout_s)
    backends = [name for name, config in settings.backends.items() if config.enabled]
    auth = build_auth(settings.auth)
    gateway = Server(
        "gateway",
        instructions=INSTRUCTIONS.format(backends=", ".join(f"{b}_*" for b in backends) or "none"),
        mask_error_details=True,
        auth=auth.provider if auth else None,
    )
    # Audit outermost, so refusals by the scope policy are recorded too.
    audit = Audit(settings)
    scopes, limits = Scopes(settings), ClientLimits(settings.limits)
    gateway.add_middleware(AuditMiddleware(audit))
    gateway.add_middleware(limits)
    gateway.add_middleware(ScopePolicy(scopes))
    sql_server, sql_control = sql.build_server(settings, engine, namespace="sql")
    gateway.mount(sql_server, namespace="sql")
    # Background pipeline runs: the tasks extension lives on the root, the server that serves.
    tasks = tasks_extension(settings, namespace="pipelines")
    gateway.add_extension(tasks)
    pipelines_server, pipelines_control = pipelines.build_server(
        settings, engine, served_pipelines, tasks=tasks
    )
    gateway.mount(pipelines_server, namespace="pipelines")
    admin_server = admin.create_server(settings, health, audit, pipelines_control.runs)
    gateway.mount(admin_server, namespace="admin")
    health.add("sql", "mount", engine.health)
    health.add("pipelines", "mount", engine.health)
    for name, check in pipelines_services(settings).items():  # the queue, a Dask scheduler
        health.add(name, "service", check)
    remote = install_backends(gateway, settings.backends, reserved={SEARCH_TOOL, CALL_TOOL})
    for name in remote.backends:
        health.add(name, "backend", remote.check(name))
    health.add_metrics("backends", remote.metrics)
    install_metrics(gateway, audit, health, auth.provider if auth else None)
    # In the order they apply: the scope policy knows new namespaces before backends offer them.
    parts = [*([auth] if auth else []), scopes, limits, health, sql_control]
    runtime = Runtime(
        settings, reload_settings or (lambda: settings), [*parts, BackendsPart(remote, health)]
    )
    install_admin_controls(admin_server, gateway, remote, runtime, sql_control, pipelines_control)
    # SEP-2243 header checks from cached schemas: no tools/list of every backend per call.
    ToolSchemas(remote.schema_for).install(gateway)
    gateway.add_transform(ToolSearch(settings.tool_search))
    return gateway


def create_app(settings: GatewaySettings, gateway: FastMCP | None = None) -> Starlette:
    """The gateway as an ASGI app: Streamable HTTP at /mcp, /health, /ready, Host checking.
    With more than one worker process it serves stateless HTTP: no session lives in a process,
    so any worker answers any request of either protocol era."""
    gateway = gateway or create_gateway(settings)
    return gateway.http_app(
        path="/mcp",
        stateless_http=settings.stateless_http or settings.workers > 1,
        host_origin_protection=True,
        allowed_hosts=settings.allowed_hosts,
        middleware=[Middleware(BodyLimit, max_bytes=settings.limits.max_body_bytes)],
    )


def app_from_environment() -> Starlette:
    """The app of one worker process (uvicorn's factory): settings from the environment and
    the JSON file named by GATEWAY_CONFIG, as `gateway.py --workers N` passes them on."""
    config = os.environ.get("GATEWAY_CONFIG")
    config_file = Path(config) if config else None
    settings = GatewaySettings.load(config_file)
    return create_app(settings, create_gateway(settings, lambda: GatewaySettings.load(config_file)))


def serve_workers(settings: GatewaySettings, config_file: Path | None) -> None:
    """Serve with settings.workers uvicorn processes, each building its own gateway."""
    os.environ["GATEWAY_WORKERS"] = str(settings.workers)
    os.environ["GATEWAY_HOST"], os.environ["GATEWAY_PORT"] = settings.host, str(settings.port)
    if config_file is not None:
        os.environ["GATEWAY_CONFIG"] = str(config_file.resolve())
    uvicorn.run(
        "gateway:app_from_environment",
        factory=True,
        workers=settings.workers,
        **uvicorn_options(settings),
    )


def token_command(argv: list[str]) -> int:
    """`gateway.py token --client NAME --scopes a,b`: a new token and its tokens-file line."""
    parser = argparse.ArgumentParser(prog="gateway.py token", description=token_command.__doc__)
    parser.add_argument("--client", required=True, help="client name shown in the audit log")
    parser.add_argument("--scopes", default="*", help="comma-separated: sql,pipelines,admin,...")
    args = parser.parse_args(argv)
    scopes = [s.strip() for s in args.scopes.split(",") if s.strip()]
    token, entry = new_token(args.client, scopes)
    print(f"token (give it to {args.client}; it is not stored anywhere): {token}")
    print("tokens-file line (append it to the file of GATEWAY_AUTH__TOKENS_FILE):")
    print(entry)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["token"]:
        return token_command(argv[1:])
    if argv[:1] == ["clients"]:
        return clients_command(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, help="JSON file with settings and mcpServers")
    parser.add_argument("--transport", choices=["http", "stdio"], default="http")
    parser.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to listen on (default 8000)")
    parser.add_argument(
        "--workers", type=int, help="worker processes (default 1; more: stateless HTTP)"
    )
    parser.add_argument(
        "--insecure",
        action="store_true",
        help="allow a non-loopback address without auth (a proxy in front authenticates)",
    )
    args = parser.parse_args(argv)
    overrides = {
        k: v
        for k, v in (("host", args.host), ("port", args.port), ("workers", args.workers))
        if v is not None
    }
    try:
        settings = GatewaySettings.load(args.config, **overrides)
        refusal = args.transport == "http" and insecure_bind_refusal(
            settings.host, settings.auth.configured, args.insecure
        )
        if refusal:
            raise ValueError(refusal)
        gateway = create_gateway(settings, lambda: GatewaySettings.load(args.config, **overrides))
    except (ValueError, ValidationError, PipelineError, FileNotFoundError) as exc:
        print(f"gateway: cannot start: {exc}", file=sys.stderr)
        return 2
    if args.transport == "stdio":
        gateway.run(transport="stdio", show_banner=False)
    elif settings.workers > 1:
        # The gateway built above checked the settings and built the sample database once;
        # every worker process builds its own.
        serve_workers(settings, args.config)
    else:
        uvicorn.run(create_app(settings, gateway), **uvicorn_options(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
