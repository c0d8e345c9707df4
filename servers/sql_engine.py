"""The DuckDB engine: one hardened read-only connection, a statement gate, bounded execution.

The engine is the security boundary: the database is opened read-only with external access off,
extensions and Python replacement scans off, memory, threads and spill bounded, a statement
deadline in the connect config, and the configuration locked. The gate in front of it only
explains refusals early and clearly. Every call gets a fresh cursor and runs in a worker thread;
a deadline or a cancelled caller interrupts the query, and the connection serves the next call.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import anyio
import duckdb

from servers.sample_data import ensure_sample_database
from servers.settings import GatewaySettings, SqlSettings

T = TypeVar("T")

READ_STATEMENTS = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN}
_WRITE_NODES = ("INSERT", "UPDATE", "DELETE", "MERGE")
_STOP_POLL_S = 0.05


class RefusedStatement(ValueError):
    """The statement is not allowed; the message says what and why."""


class QueryTimeout(TimeoutError):
    """The statement ran past its deadline and was stopped."""


def open_connection(
    database: Path, settings: SqlSettings, scratch_dir: Path
) -> duckdb.DuckDBPyConnection:
    """Open database read-only with every hardening setting applied and the configuration locked."""
    scratch_dir.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(
        str(database),
        read_only=True,
        config={
            "autoinstall_known_extensions": False,
            "autoload_known_extensions": False,
            "allow_community_extensions": False,
            "python_enable_replacements": False,
            "allow_persistent_secrets": False,
            "memory_limit": settings.memory_limit,
            "threads": settings.threads,
            "max_execution_time": int(settings.query_timeout_s * 1000),
        },
    )
    try:
        if _already_hardened(con):
            # DuckDB shares one database instance per file within a process: an earlier open
            # hardened and locked it, and this connection inherits that configuration.
            return con
        # Runtime SETs, in this order: the temp size is only enforced when SET at runtime, and
        # external access locks itself (and the allowed directories) once turned off.
        con.execute(f"SET temp_directory = {sql_literal(str(scratch_dir))}")
        con.execute(
            f"SET max_temp_directory_size = {sql_literal(settings.max_temp_directory_size)}"
        )
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
    except Exception:
        con.close()
        raise
    return con


def _already_hardened(con: duckdb.DuckDBPyConnection) -> bool:
    locked, external = con.execute(
        "SELECT current_setting('lock_configuration'), current_setting('enable_external_access')"
    ).fetchone()
    return bool(locked) and not external


def check_statement(con: duckdb.DuckDBPyConnection, sql: str) -> str:
    """Return the one read-only statement in sql, or raise RefusedStatement saying why not."""
    try:
        statements = con.extract_statements(sql)
    except duckdb.ParserException as exc:
        raise RefusedStatement(f"The SQL does not parse: {_first_line(exc)}") from None
    except ValueError:  # a statement type the Python enum does not know, e.g. UPDATE EXTENSIONS
        raise RefusedStatement("Only read-only SELECT-style statements are allowed.") from None
    if len(statements) != 1:
        raise RefusedStatement(
            f"Send exactly one statement per call; this SQL has {len(statements)}."
        )
    kind = statements[0].type
    if kind not in READ_STATEMENTS:
        raise RefusedStatement(
            f"{kind.name} statements are not allowed: the database is read-only and only "
            "SELECT, WITH, FROM, VALUES, DESCRIBE, SHOW, SUMMARIZE and EXPLAIN are accepted."
        )
    if kind == duckdb.StatementType.SELECT:
        _refuse_writes_inside(con, sql)
    return sql


def _refuse_writes_inside(con: duckdb.DuckDBPyConnection, sql: str) -> None:
    """Refuse data-modifying CTEs, which DuckDB classifies as SELECT."""
    tree = con.execute("SELECT json_serialize_sql(?)", [sql]).fetchone()[0]
    for node_type in _node_types(json.loads(tree)):
        for verb in _WRITE_NODES:
            if node_type.startswith(verb):
                raise RefusedStatement(
                    f"{verb} inside a query (a data-modifying CTE) is not allowed: "
                    "the database is read-only."
                )


def _node_types(tree: object):
    if isinstance(tree, dict):
        if isinstance(tree.get("type"), str) and tree["type"].endswith("_NODE"):
            yield tree["type"]
        for value in tree.values():
            yield from _node_types(value)
    elif isinstance(tree, list):
        for value in tree:
            yield from _node_types(value)


class Engine:
    """One hardened connection shared by every caller; a fresh cursor per call."""

    def __init__(self, database: Path, settings: SqlSettings, scratch_dir: Path):
        self.database = database
        self.settings = settings
        self.connection = open_connection(database, settings, scratch_dir)
        self._limiter = anyio.CapacityLimiter(settings.concurrency)

    @classmethod
    def open(cls, settings: GatewaySettings) -> Engine:
        """The engine over the configured database, or the sample one (built if missing)."""
        database = settings.sql.database or ensure_sample_database(settings.data_dir)
        if not Path(database).is_file():
            raise FileNotFoundError(f"the database file {database} does not exist")
        return cls(Path(database), settings.sql, settings.data_dir / "scratch")

    def close(self) -> None:
        self.connection.close()

    async def health(self) -> dict:
        """Up when the database answers a trivial query within the deadline."""
        await self.run(lambda cursor: cursor.execute("SELECT 1").fetchall(), 2.0)
        return {"status": "up", "database": self.database.name}

    def check(self, sql: str) -> str:
        with self.connection.cursor() as cursor:
            return check_statement(cursor, sql)

    async def run(
        self, work: Callable[[duckdb.DuckDBPyConnection], T], timeout_s: float | None = None
    ) -> T:
        """Run work(cursor) in a worker thread; interrupt it at the deadline or on cancellation.

        At most ``settings.concurrency`` calls run at once. Raises QueryTimeout at the deadline.
        """
        budget = min(timeout_s or self.settings.query_timeout_s, self.settings.query_timeout_s)
        async with self._limiter:
            cursor = self.connection.cursor()
            finished = threading.Event()

            def call() -> T:
                try:
                    return work(cursor)
                finally:
                    finished.set()

            try:
                with anyio.fail_after(budget):
                    return await anyio.to_thread.run_sync(call, abandon_on_cancel=True)
            except TimeoutError:
                raise QueryTimeout(
                    f"The query ran longer than {budget:g} s and was stopped."
                ) from None
            except duckdb.InterruptException:
                raise QueryTimeout(
                    f"The query ran longer than {budget:g} s and was stopped."
                ) from None
            finally:
                with anyio.CancelScope(shield=True):
                    await _stop(cursor, finished)
                cursor.close()


async def _stop(cursor: duckdb.DuckDBPyConnection, finished: threading.Event) -> None:
    """Interrupt the cursor until its thread returns (an early interrupt can be missed)."""
    while not finished.is_set():
        cursor.interrupt()
        await anyio.sleep(_STOP_POLL_S)


def sql_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0]
