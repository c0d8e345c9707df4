"""The gateway: one MCP endpoint composing the sql, pipelines and admin servers and every remote
backend of the mcpServers config, each under its own namespace.

    uv run gateway.py                          # http://127.0.0.1:8000/mcp, embedded default
    uv run gateway.py --config gateway.json    # settings and mcpServers from a JSON file
    uv run gateway.py --transport stdio        # for desktop clients that start it themselves
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError

from servers.settings import GatewaySettings

# Everything that serves is imported when a gateway is built (create_gateway, create_app), so
# `--help`, `token`, `clients` and `check` start in well under a second; heavy libraries
# (Hamilton, pandas, pyarrow, matplotlib) load later still, where first used.
if TYPE_CHECKING:
    from fastmcp import FastMCP
    from starlette.applications import Starlette

    from pipelines import Pipeline
    from servers.gateway.startup import StartupFacts

INSTRUCTIONS = """\
A data gateway. sql_*: read-only SQL over a DuckDB database (start with sql_list_tables; DuckDB \
tips: the sql://sql/cheatsheet resource). pipelines_*: vetted dataflows (start with \
pipelines_list_pipelines). admin_*: service status (admin_status){admin}. Each remote backend \
your token allows has a namespace of its own (see tools/list)."""


def create_gateway(
    settings: GatewaySettings,
    reload_settings: Callable[[], GatewaySettings] | None = None,
    served_pipelines: Mapping[str, Pipeline] | None = None,
) -> FastMCP:
    """Compose the sub-servers and backends described by settings into one server.
    ``reload_settings`` reads the settings again for admin_reload (default: the same settings,
    with the files they name read again); ``served_pipelines`` replaces the pipeline registry
    (tests)."""
    return compose(settings, reload_settings, served_pipelines)[0]


def compose(
    settings: GatewaySettings,
    reload_settings: Callable[[], GatewaySettings] | None = None,
    served_pipelines: Mapping[str, Pipeline] | None = None,
) -> tuple[FastMCP, StartupFacts]:
    """create_gateway, and what the start-up banner reports about it."""
    from servers.admin import server as admin
    from servers.admin.controls import Runtime, install_admin_controls
    from servers.backends.provider import install_backends
    from servers.gateway.audit import Audit, AuditMiddleware
    from servers.gateway.auth import build_auth
    from servers.gateway.limits import ClientLimits, SharedBuckets
    from servers.gateway.listing import ClientListing, LeanListing, client_filter
    from servers.gateway.metrics import install_metrics
    from servers.gateway.owners import ResultOwners, ResultOwnership
    from servers.gateway.policy import ScopePolicy, Scopes
    from servers.gateway.replicas import Replicas
    from servers.gateway.startup import StartupFacts, home_page, project_identity, tool_count
    from servers.gateway.tool_schemas import ToolSchemas
    from servers.gateway.tool_search import CALL_TOOL, SEARCH_TOOL, ToolSearch
    from servers.health import Health
    from servers.lookup import Server, Suggestions
    from servers.pipelines import server as pipelines
    from servers.pipelines.tasks import services as pipelines_services
    from servers.pipelines.tasks import tasks_extension
    from servers.sql import server as sql
    from servers.sql.engine import Engine

    engine = Engine.open(settings)
    health = Health(timeout_s=settings.ready_timeout_s)
    auth = build_auth(settings.auth)
    name, version = project_identity()
    gateway = Server(
        name,
        version=version,
        # Names no backend: not every client may see every one.
        instructions=INSTRUCTIONS.format(
            admin=", callable by name, listed to admin tokens only"
            if "admin" in settings.tool_search.unlisted_namespaces
            else "",
        ),
        mask_error_details=True,
        auth=auth.provider if auth else None,
    )
    # Audit outermost, so refusals by the scope policy are recorded too.
    audit = Audit(settings)
    scopes, limits = Scopes(settings), ClientLimits(settings.limits, SharedBuckets.of(settings))
    gateway.add_middleware(AuditMiddleware(audit))
    gateway.add_middleware(limits)
    gateway.add_middleware(ScopePolicy(scopes))
    # Stored results belong to their caller, whichever replica answers.
    gateway.add_middleware(ResultOwnership(ResultOwners(settings.results_dir)))
    unlisted = settings.tool_search.unlisted_namespaces
    gateway.add_middleware(ClientListing(scopes, unlisted))
    gateway.add_middleware(Suggestions(client_filter(scopes, [])))
    sql_server, sql_control = sql.build_server(settings, engine, namespace="sql")
    gateway.mount(sql_server, namespace="sql")
    # Background pipeline runs: the tasks extension lives on the root, the server that serves.
    tasks = tasks_extension(settings, namespace="pipelines")
    gateway.add_extension(tasks)
    pipelines_server, pipelines_control = pipelines.build_server(
        settings, engine, served_pipelines, tasks=tasks
    )
    gateway.mount(pipelines_server, namespace="pipelines")
    replicas = Replicas(settings, audit, health)  # with Redis: every process of the deployment
    admin_server = admin.create_server(settings, health, audit, pipelines_control.runs, replicas)
    gateway.mount(admin_server, namespace="admin")
    health.add("sql", "mount", engine.health)
    health.add("pipelines", "mount", engine.health)
    for name, check in pipelines_services(settings).items():  # the queue, a Dask scheduler
        health.add(name, "service", check)
    remote = install_backends(gateway, settings, {SEARCH_TOOL, CALL_TOOL}, health)
    install_metrics(gateway, audit, health, auth.provider if auth else None)
    # In the order they apply: the scope policy knows new namespaces before backends offer them.
    parts = [*([auth] if auth else []), scopes, limits, health, sql_control, remote]
    runtime = Runtime(settings, reload_settings or (lambda: settings), parts)
    install_admin_controls(admin_server, gateway, remote, runtime, sql_control, pipelines_control)
    # SEP-2243 header checks from cached schemas: no tools/list of every backend per call.
    ToolSchemas(remote.schema_for).install(gateway)
    gateway.add_transform(LeanListing())
    gateway.add_transform(ToolSearch(settings.tool_search, client_filter(scopes, unlisted)))

    @gateway.custom_route("/", methods=["GET"])
    async def home(request):  # what a person with a browser sees: no auth, no secrets
        from starlette.responses import HTMLResponse

        return HTMLResponse(home_page(settings))

    facts = StartupFacts(
        database=engine.database.name,
        tables=None if (names := engine.table_names()) is None else len(names),
        unavailable=engine.unavailable,
        tools={
            "sql": tool_count(sql_server),
            "pipelines": tool_count(pipelines_server),
            "admin": tool_count(admin_server),
        },
        backends={
            name: "starting" if config.enabled else "disabled"
            for name, config in settings.backends.items()
        },
    )
    return gateway, facts


def create_app(settings: GatewaySettings, gateway: FastMCP | None = None) -> Starlette:
    """The gateway as an ASGI app: Streamable HTTP at /mcp, /health, /ready, Host checking.
    With more than one worker process it serves stateless HTTP: no session lives in a process,
    so any worker answers any request of either protocol era."""
    from starlette.middleware import Middleware

    from servers.gateway.guard import HttpGuard
    from servers.gateway.http import configure
    from servers.gateway.limits import BodyLimit
    from servers.gateway.owners import ResultOwners

    gateway = gateway or create_gateway(settings)
    configure(settings.limits)  # this process's connection limits (each worker's too)
    app = gateway.http_app(
        path="/mcp",
        stateless_http=settings.stateless_http or settings.workers > 1,
        host_origin_protection=True,
        allowed_hosts=settings.allowed_hosts,
        middleware=[Middleware(BodyLimit, max_bytes=settings.limits.max_body_bytes)],
        session_idle_timeout=settings.limits.session_idle_s,
    )
    if gateway.auth is not None:  # every route through one auth and scope layer, outermost
        # The owners are written beside the results: any instance over the directory agrees.
        owners = ResultOwners(settings.results_dir)
        app.add_middleware(HttpGuard, auth=gateway.auth, settings=settings, owners=owners)
    return app


def app_from_environment() -> Starlette:
    """The app of one worker process (uvicorn's factory): settings from the environment and
    the JSON file named by GATEWAY_CONFIG, as `gateway.py --workers N` passes them on."""
    config = os.environ.get("GATEWAY_CONFIG")
    config_file = Path(config) if config else None
    settings = GatewaySettings.load(config_file)
    return create_app(settings, create_gateway(settings, lambda: GatewaySettings.load(config_file)))


def serve_workers(settings: GatewaySettings, config_file: Path | None) -> None:
    """Serve with settings.workers uvicorn processes, each building its own gateway."""
    import uvicorn

    from servers.gateway.http import uvicorn_options

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
    from servers.gateway.auth import new_token

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


SUBCOMMANDS = """\
subcommands:
  token     make a bearer token and its tokens-file line (gateway.py token --help)
  clients   print ready-to-paste setup for Claude Desktop/Code, Cursor, ChatGPT
  check     validate settings, database, pipelines and every backend; print the
            effective settings (secrets masked); exit 1 with one line per problem
  new-pipeline NAME --dir DIR
            write a commented pipeline module that passes validation
"""


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["token"]:
        return token_command(argv[1:])
    if argv[:1] == ["clients"]:
        from servers.gateway.clients import clients_command

        return clients_command(argv[1:])
    if argv[:1] == ["new-pipeline"]:
        from servers.pipelines.scaffold import command

        return command(argv[1:])
    if argv[:1] == ["check"]:
        from servers.gateway.check import check_command

        return check_command(argv[1:])
    args = parse_serve_arguments(argv)
    overrides = {
        k: v
        for k, v in (("host", args.host), ("port", args.port), ("workers", args.workers))
        if v is not None
    }

    def load() -> GatewaySettings:
        return GatewaySettings.load(args.config, **overrides)

    try:
        settings = load()
        refuse_to_start(settings, args)
    except Exception as exc:  # noqa: BLE001 - one line, never a traceback, for any start failure
        return cannot_start(exc)
    if args.transport == "stdio":
        import anyio

        return anyio.run(serve_stdio, settings, load)
    try:
        gateway, facts = compose(settings, load)
    except Exception as exc:  # noqa: BLE001 - one line, never a traceback
        return cannot_start(exc)
    from servers.gateway.startup import print_banner

    print_banner(settings, facts, args.transport)
    if settings.workers > 1:
        # The gateway built above checked the settings and built the sample database once;
        # every worker process builds its own.
        serve_workers(settings, args.config)
    else:
        import uvicorn

        from servers.gateway.http import uvicorn_options

        uvicorn.run(create_app(settings, gateway), **uvicorn_options(settings))
    return 0


async def serve_stdio(settings: GatewaySettings, load: Callable[[], GatewaySettings]) -> int:
    """Start the stdio backends' processes, compose the gateway while they start, then serve
    over stdio in the same event loop (the backends take their processes over). HTTP is served
    by ``uvicorn.run`` in a loop of its own: run in this one, a Ctrl-C ended 1 in 5 exits under
    load with an abort in a native library's thread."""
    from servers.backends.launch import discard_early, start_early

    await start_early(settings.backends)
    try:
        try:
            gateway, facts = compose(settings, load)
        except Exception as exc:  # noqa: BLE001 - one line, never a traceback
            return cannot_start(exc)
        from servers.gateway.startup import print_banner

        print_banner(settings, facts, "stdio")
        await gateway.run_async(transport="stdio", show_banner=False)
        return 0
    finally:
        await discard_early()


def cannot_start(exc: Exception) -> int:
    print(f"gateway: cannot start: {start_failure(exc)}", file=sys.stderr)
    return 2


def parse_serve_arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog=SUBCOMMANDS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
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
    return parser.parse_args(argv)


def refuse_to_start(settings: GatewaySettings, args: argparse.Namespace) -> None:
    """ValueError when the gateway must not start: a non-loopback address without auth, or
    (HTTP) a port another process listens on, found before anything is built."""
    if args.transport != "http":
        return
    from servers.gateway.auth import insecure_bind_refusal

    refusal = insecure_bind_refusal(settings.host, settings.auth.configured, args.insecure)
    if refusal:
        raise ValueError(refusal)
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((settings.host, settings.port))
        except OSError as exc:
            raise ValueError(
                f"cannot listen on {settings.host}:{settings.port}: {exc.strerror} "
                "(another process uses the port? choose one with --port)"
            ) from None


def start_failure(exc: Exception) -> str:
    """The one line that says why the gateway did not start."""
    import duckdb

    from servers.gateway.check import database_error
    from servers.pipelines.registry import PipelineError

    if isinstance(exc, ValidationError):
        return "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']}" for e in exc.errors()
        )
    if isinstance(exc, duckdb.Error):
        return database_error(exc)
    if isinstance(exc, (ValueError, PipelineError, OSError)):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


if __name__ == "__main__":
    sys.exit(main())
