"""`gateway.py check`: validate the settings, the database, the pipelines and every backend
(each started, listed and stopped), print the effective settings with secrets masked, and exit
non-zero with one clear line per problem. Serves nothing; loads no Hamilton, pandas, pyarrow
or matplotlib (the pipelines are validated in a subprocess)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import anyio
from pydantic import ValidationError

from servers.gateway.startup import render_settings
from servers.settings import GatewaySettings

BACKENDS_BUDGET_S = 120.0  # every backend started, listed and stopped within this, together


def settings_problems(config: Path | None) -> tuple[GatewaySettings | None, list[str]]:
    try:
        return GatewaySettings.load(config), []
    except ValidationError as exc:
        return None, [f"settings: {_validation_line(e)}" for e in exc.errors()]
    except (ValueError, OSError) as exc:
        return None, [f"settings: {exc}"]


def _validation_line(error: dict) -> str:
    where = ".".join(str(p) for p in error.get("loc", ())) or "settings"
    return f"{where}: {error.get('msg', 'invalid')}"


def database_problems(settings: GatewaySettings) -> tuple[list[str], str]:
    """Problems opening the database, or none and a one-line description of it."""
    import duckdb

    from servers.sql.engine import Engine

    try:
        engine = Engine.open(settings)
    except FileNotFoundError as exc:
        return [f"database: {exc}"], ""
    except duckdb.Error as exc:
        return [f"database: {database_error(exc)}"], ""
    try:
        if engine.unavailable is not None:
            return [f"database: {engine.unavailable}"], ""
        tables = len(engine.table_names() or ())
    finally:
        engine.close()
    return [], f"{engine.database.name} ({tables} tables)"


def database_error(exc: Exception) -> str:
    """One line for a DuckDB file that cannot be opened (locked, not DuckDB, unreadable)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if "lock" in text.lower():
        return (
            f"the database file is locked by another process ({text}); stop the process that "
            "holds it open for writing, or serve a copy"
        )
    return f"cannot open the database file: {text}"


def pipeline_problems(settings: GatewaySettings) -> tuple[list[str], int]:
    """The pipelines that would be served, each built and validated (in a subprocess)."""
    from servers.pipelines.registry import PipelineError, declared_pipelines, served_registry
    from servers.pipelines.validation import plan_of, validate_in_subprocess

    try:
        declared = declared_pipelines(served_registry(settings, None), settings.pipelines.overrides)
        verdicts = validate_in_subprocess({n: plan_of(p.spec) for n, p in declared.items()})
    except PipelineError as exc:
        return [f"pipelines: {exc}"], 0
    problems = [f"pipelines: {v}" for v in verdicts.values() if isinstance(v, str)]
    return problems, len(verdicts) - len(problems)


async def backend_problems(settings: GatewaySettings) -> tuple[list[str], dict[str, str]]:
    """Start every enabled backend (through the gateway's own backend provider), list its
    tools, read its health, stop it."""
    from fastmcp import Client

    from servers.backends.provider import install_backends
    from servers.health import Health
    from servers.lookup import Server

    enabled = [name for name, config in settings.backends.items() if config.enabled]
    if not enabled:
        return [], {}
    server = Server("check")
    remote = install_backends(server, settings, set(), Health(timeout_s=settings.ready_timeout_s))
    problems, states = [], {}
    with anyio.move_on_after(BACKENDS_BUDGET_S) as scope:
        async with Client(server) as client:
            tools = [t.name for t in await client.list_tools()]
            for name in enabled:
                status = await remote.health_check(name)()
                count = sum(t.startswith(f"{name}_") for t in tools)
                state = status.get("status", "unknown")
                states[name] = f"{state}, {count} tools"
                if state != "up":
                    reason = status.get("error") or status.get("reason") or "no detail"
                    problems.append(f"backend {name!r}: {state}: {reason}")
    if scope.cancelled_caught:
        problems.append(f"backends: not all started and listed within {BACKENDS_BUDGET_S:g} s")
    return problems, states


def run_check(config: Path | None) -> int:
    settings, problems = settings_problems(config)
    if settings is not None:
        found, database = database_problems(settings)
        problems += found
        print(f"database: {database or 'NOT OK'}", file=sys.stderr)
        found, valid = pipeline_problems(settings)
        problems += found
        print(f"pipelines: {valid} valid", file=sys.stderr)
        found, states = anyio.run(backend_problems, settings)
        problems += found
        for name, state in states.items():
            print(f"backend {name}: {state}", file=sys.stderr)
        print(render_settings(settings))
    for problem in problems:
        print(f"problem: {problem}", file=sys.stderr)
    print("check: OK" if not problems else f"check: {len(problems)} problem(s)", file=sys.stderr)
    return 1 if problems else 0


def check_command(argv: list[str]) -> int:
    """`gateway.py check`: validate settings, database, pipelines and backends; print the
    effective settings (secrets masked); exit 1 with one line per problem."""
    parser = argparse.ArgumentParser(prog="gateway.py check", description=check_command.__doc__)
    parser.add_argument("--config", type=Path, help="JSON file with settings and mcpServers")
    args = parser.parse_args(argv)
    return run_check(args.config)
