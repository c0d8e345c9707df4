"""The DuckDB engine: one hardened read-only connection and bounded, interruptible execution.

The engine is the security boundary: the database is opened read-only with external access off
(only the configured readable directories, and the pipelines' output directory, can be read),
extensions and Python replacement scans off, memory, threads and spill bounded, a statement
deadline in the connect config, and the configuration locked. Every call gets a fresh cursor and
runs in one of the engine's threads (at a lower priority, like DuckDB's own); a deadline or a
cancelled caller interrupts the query, and the connection serves the next call.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

import anyio
import duckdb

from servers.replica import own_folder
from servers.sample_data import ensure_sample_database
from servers.settings import PROJECT_ROOT, GatewaySettings, SqlSettings
from servers.sql.gate import RefusedStatement, parser_message

T = TypeVar("T")
_log = logging.getLogger("gateway.sql")

_STOP_POLL_S = 0.02
_PROGRESS_CONFIGS = ("enable_progress_bar", "enable_progress_bar_print")
_MAX_MESSAGE = 600
# Pipelines save tables under <outputs>/pipeline_outputs/ and name them relative to it. DuckDB
# checks the name as written against allowed_directories before resolving it through
# file_search_path, so the relative prefix is allowed too (it would also match a directory of that
# name in the working directory, which the gateway never creates).
PIPELINE_OUTPUTS = "pipeline_outputs/"


class QueryTimeout(TimeoutError):
    """The statement ran past its deadline and was stopped."""


class QueryFailed(RuntimeError):
    """DuckDB refused or failed the statement; the message is safe to show a client."""


@dataclass
class Detach(Generic[T]):
    """Returned by work to hand its cursor to a background continuation.

    ``value`` is returned to the caller at once; ``continuation(cursor)`` then runs in one of
    the engine's threads, owning the cursor, which is closed after it. It must bound itself: the
    result store stops at its caps and on expiry, and DuckDB's statement limit interrupts the
    query. Used to keep streaming a large result to storage after the first page.
    """

    value: T
    continuation: Callable[[duckdb.DuckDBPyConnection], None]


def open_connection(
    database: Path, settings: SqlSettings, scratch_dir: Path, readable: list[Path]
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
        directories = [str(p.resolve()) + "/" for p in readable]
        allowed = [*directories, PIPELINE_OUTPUTS]
        con.execute(f"SET temp_directory = {sql_literal(str(scratch_dir))}")
        con.execute(
            f"SET max_temp_directory_size = {sql_literal(settings.max_temp_directory_size)}"
        )
        con.execute(f"SET allowed_directories = [{', '.join(map(sql_literal, allowed))}]")
        con.execute(f"SET GLOBAL file_search_path = {sql_literal(','.join(directories))}")
        con.execute("SET enable_external_access = false")
        # Progress reporting is switched on per cursor, only for callers that asked for progress.
        con.execute(f"SET allowed_configs = [{', '.join(map(sql_literal, _PROGRESS_CONFIGS))}]")
        con.execute("SET lock_configuration = true")
    except Exception:
        con.close()
        raise
    return con


def lower_priority(nice: int, thread: int | None = None) -> None:
    """Add `nice` to the niceness of a Linux thread (this one by default); elsewhere nothing,
    since other systems apply it to the whole process."""
    if nice and sys.platform == "linux":
        tid = thread or threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice))


def _already_hardened(con: duckdb.DuckDBPyConnection) -> bool:
    locked, external = con.execute(
        "SELECT current_setting('lock_configuration'), current_setting('enable_external_access')"
    ).fetchone()
    return bool(locked) and not external


class Engine:
    """One hardened connection shared by every caller; a fresh cursor per call."""

    def __init__(
        self, database: Path, settings: SqlSettings, data_dir: Path, readable: list[Path] = ()
    ):
        self.database = database
        self.settings = settings
        self.outputs_dir = data_dir / "outputs"
        self.outputs_dir.mkdir(parents=True, exist_ok=True)
        self.readable = [self.outputs_dir, *readable]
        # One spill folder per process: replicas (in other containers too) share a data directory.
        scratch = own_folder(data_dir / "scratch" / "sql")
        # Queries, result spools and DuckDB's own threads (started by the thread that opens the
        # database, whose niceness they inherit) run with worker_nice added: under load, a
        # heavy query takes the CPU the event loop and fast calls leave over.
        self._threads = ThreadPoolExecutor(
            max_workers=settings.concurrency + settings.results_max_running,
            thread_name_prefix="sql",
            initializer=lower_priority,
            initargs=(settings.worker_nice,),
        )
        opening = self._threads.submit(open_connection, database, settings, scratch, self.readable)
        self.connection = opening.result()
        self._limiter = anyio.CapacityLimiter(settings.concurrency)
        self._hidden_paths = _paths_to_hide(database, data_dir, self.readable)

    @classmethod
    def open(cls, settings: GatewaySettings) -> Engine:
        """The engine over the configured database, or the sample one (built if missing)."""
        database = settings.sql.database or ensure_sample_database(settings.data_dir)
        if not Path(database).is_file():
            raise FileNotFoundError(f"the database file {database} does not exist")
        return cls(
            Path(database), settings.sql, settings.data_dir, list(settings.sql.readable_directories)
        )

    def close(self) -> None:
        self._threads.shutdown(wait=False, cancel_futures=True)
        self.connection.close()

    async def health(self) -> dict:
        """Up when the database answers a trivial query within the deadline."""
        await self.run(lambda cursor: cursor.execute("SELECT 1").fetchall(), 2.0)
        return {"status": "up", "database": self.database.name}

    async def run(
        self,
        work: Callable[[duckdb.DuckDBPyConnection], T | Detach[T]],
        timeout_s: float | None = None,
        progress: Callable[[float], Awaitable[None]] | None = None,
    ) -> T:
        """Run work(cursor) in a worker thread; interrupt it at the deadline or on cancellation.

        At most ``settings.concurrency`` calls run at once. ``progress``, when given, is called
        with DuckDB's estimate (0-100) every ``progress_interval_s`` while the query runs.
        Raises QueryTimeout at the deadline and QueryFailed (with a client-safe message) when
        DuckDB refuses or fails the statement.
        """
        budget = timeout_s or self.settings.query_timeout_s
        async with self._limiter:
            cursor = self.connection.cursor()
            call = _Call(work, cursor, with_progress=progress is not None)
            detached = False
            try:
                with anyio.fail_after(budget):
                    if progress is None:
                        result = await self._in_thread(call)
                    else:
                        result = await self._with_progress(call, progress)
                if isinstance(result, Detach):
                    detached = True
                    self._threads.submit(_continue, cursor, result.continuation)
                    return result.value
                return result
            except TimeoutError:
                raise QueryTimeout(
                    f"The query ran longer than {budget:g} s and was stopped."
                ) from None
            except duckdb.Error as exc:
                raise self.translate(exc) from None
            finally:
                if not detached:
                    with anyio.CancelScope(shield=True):
                        free = await call.stop(give_up_after=self.settings.query_timeout_s + 5)
                    if free:
                        cursor.close()
                    else:  # DuckDB's own statement limit ends it; the thread keeps the cursor
                        _log.warning("a query did not stop when interrupted; left to its limit")

    async def _in_thread(self, call: _Call[T]) -> T:
        """call() in one of the engine's threads. A cancelled caller stops waiting at once (the
        thread is left to finish; ``_Call.stop`` then interrupts it)."""
        return await asyncio.wrap_future(self._threads.submit(call))

    async def _with_progress(self, call: _Call, progress: Callable[[float], Awaitable[None]]):
        """Run call in a thread while reporting the cursor's progress every interval."""
        try:
            async with anyio.create_task_group() as group:
                group.start_soon(self._report_progress, call, progress)
                result = await self._in_thread(call)
                group.cancel_scope.cancel()
                return result
        except BaseExceptionGroup as group:
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise

    async def _report_progress(
        self, call: _Call, progress: Callable[[float], Awaitable[None]]
    ) -> None:
        while not call.finished.is_set():
            await anyio.sleep(self.settings.progress_interval_s)
            done = call.cursor.query_progress()
            if done >= 0 and not call.finished.is_set():
                await progress(done)

    def translate(self, exc: duckdb.Error) -> Exception:
        """A client-safe exception for a DuckDB error: clear wording, no host paths."""
        if isinstance(exc, duckdb.InterruptException):
            # Our own deadline surfaces as TimeoutError; this is the engine's statement limit.
            return QueryTimeout(
                f"The query ran longer than {self.settings.query_timeout_s:g} s (the limit for "
                "one statement) and was stopped."
            )
        if isinstance(exc, duckdb.ParserException):
            return RefusedStatement(f"The SQL does not parse. {self.scrub(parser_message(exc))}")
        if isinstance(exc, duckdb.PermissionException):
            return RefusedStatement(
                "Files and network locations cannot be read, except inside the directories the "
                f"server allows. DuckDB said: {self.scrub(str(exc))}"
            )
        if isinstance(exc, duckdb.OutOfMemoryException):
            return QueryFailed(
                f"The query ran out of memory (limit {self.settings.memory_limit}). Aggregate, "
                "filter with WHERE, or select fewer columns."
            )
        if "read-only" in str(exc):
            return RefusedStatement(f"The database is read-only. {self.scrub(str(exc))}")
        return QueryFailed(self.scrub(str(exc)))

    def scrub(self, text: str) -> str:
        """Replace the server's own paths with placeholders and bound the length."""
        for path, placeholder in self._hidden_paths:
            text = text.replace(path, placeholder)
        text = text.strip()
        return text if len(text) <= _MAX_MESSAGE else text[:_MAX_MESSAGE] + "…"


def _paths_to_hide(database: Path, data_dir: Path, readable: list[Path]) -> list[tuple[str, str]]:
    pairs = [(str(database.resolve()), "<database>"), (str(database), "<database>")]
    pairs += [(str(p.resolve()), "<readable>") for p in readable]
    pairs += [(str(data_dir.resolve()), "<data>"), (str(PROJECT_ROOT), "<server>")]
    pairs += [(str(Path.home()), "<home>")]
    # Longest first, so a path is replaced before any of its parents.
    return sorted(set(pairs), key=lambda pair: len(pair[0]), reverse=True)


def _enable_progress(cursor: duckdb.DuckDBPyConnection) -> None:
    """Progress tracking for query_progress(), never printed (stdout may be the transport).
    One execute, ~0.2 ms; progress_bar_time only delays printing, so it is left alone."""
    cursor.execute("SET enable_progress_bar_print = false; SET enable_progress_bar = true")


def _continue(
    cursor: duckdb.DuckDBPyConnection, continuation: Callable[[duckdb.DuckDBPyConnection], None]
) -> None:
    try:
        continuation(cursor)
    finally:
        cursor.close()


class _Call(Generic[T]):
    """One call's work for a worker thread, stoppable whether or not the thread has started it.

    A deadline can cancel the hand-off before a worker thread picks the work up, and then the
    work never runs; ``stop`` tells the two cases apart under a lock, so it never waits for work
    that will not come, and work that starts after ``stop`` returns at once.
    """

    def __init__(self, work: Callable, cursor: duckdb.DuckDBPyConnection, with_progress: bool):
        self.work = work
        self.cursor = cursor
        self.with_progress = with_progress
        self.finished = threading.Event()
        self._lock = threading.Lock()
        self._started = False
        self._cancelled = False

    def __call__(self):
        with self._lock:
            if self._cancelled:
                self.finished.set()
                return None
            self._started = True
        try:
            if self.with_progress:
                _enable_progress(self.cursor)
            return self.work(self.cursor)
        finally:
            self.finished.set()

    async def stop(self, give_up_after: float) -> bool:
        """Interrupt the work until it returns (an early interrupt can be missed); True when
        the cursor is free again."""
        with self._lock:
            self._cancelled = True
            if not self._started:
                return True
        with anyio.move_on_after(give_up_after):
            while not self.finished.is_set():
                self.cursor.interrupt()
                await anyio.sleep(_STOP_POLL_S)
        return self.finished.is_set()


def sql_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def sql_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
