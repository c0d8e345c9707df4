"""How a pipeline's nodes run: the Hamilton driver for each engine, and the database they share.

``local`` runs nodes one after another in the run worker with its own hardened cursor.
``threads`` (Hamilton's FutureAdapter) and ``dask`` (Hamilton's DaskGraphAdapter) run nodes on
other threads or processes, so their ``db`` is a ``SharedDatabase``: a small picklable handle
that opens the same hardened read-only connection (the sql server's settings) in whichever
process uses it, with one cursor per thread. Engines and caching come from the registry and
settings only.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import duckdb
from hamilton import htypes, lifecycle
from hamilton.lifecycle.base import BaseDoValidateInput

from servers.lazy import lazy_module
from servers.leftovers import own_folder, remove_leftovers
from servers.settings import PipelineSettings, SqlSettings
from servers.sql.engine import open_connection
from servers.sql.sharing import BUSY, LOCK_POLL_S, MISSING

# hamilton.driver and hamilton.base import pandas (and, by Hamilton's extension autoloading,
# dask.dataframe): they load in the run worker that builds a driver, not in the gateway.
base = lazy_module("hamilton.base")
driver = lazy_module("hamilton.driver")

_connections: dict[Path, duckdb.DuckDBPyConnection] = {}
_connections_lock = threading.Lock()


def hardened_connection(
    database: Path, settings: SqlSettings, scratch_dir: Path
) -> duckdb.DuckDBPyConnection:
    """This process's hardened read-only connection to database, opened once.

    Each process spills to its own folder under scratch_dir, the settings' ``scratch_dir``
    (DuckDB's temporary file names are not unique across processes); the folders of processes
    that have ended are removed first (``servers.leftovers``).
    """
    with _connections_lock:
        if database not in _connections:
            remove_leftovers(scratch_dir)
            # Nodes read only the database: no readable directories.
            own = own_folder(scratch_dir)
            _connections[database] = _open_waiting(database, settings, own)
        return _connections[database]


def _open_waiting(
    database: Path, settings: SqlSettings, scratch_dir: Path
) -> duckdb.DuckDBPyConnection:
    """open_connection, waiting up to lock_wait_s for a file another process is writing."""
    deadline = time.monotonic() + settings.lock_wait_s
    while True:
        try:
            return open_connection(database, settings, scratch_dir, [])
        except duckdb.IOException as exc:
            if time.monotonic() >= deadline:
                raise ValueError(BUSY if "lock" in str(exc).lower() else MISSING) from None
        time.sleep(LOCK_POLL_S)


def release_connections() -> None:
    """Close this process's connections, letting the database files go between runs (a writer
    may open them meanwhile); the next run opens them again."""
    with _connections_lock:
        while _connections:
            _connections.popitem()[1].close()


class SharedDatabase:
    """The ``db`` of engines that run nodes on other threads or processes.

    Behaves like a DuckDB cursor (``db.execute(sql, params).df()``): every thread gets its own
    cursor on this process's hardened connection. Pickling keeps only where the database is,
    so a Dask worker process opens its own hardened connection.
    """

    def __init__(self, database: Path, settings: SqlSettings, scratch_dir: Path):
        self.database = database
        self.settings = settings
        self.scratch_dir = scratch_dir
        self._local = threading.local()

    def cursor(self) -> duckdb.DuckDBPyConnection:
        cursor = getattr(self._local, "cursor", None)
        if cursor is None:
            connection = hardened_connection(self.database, self.settings, self.scratch_dir)
            cursor = self._local.cursor = connection.cursor()
        return cursor

    def execute(self, query: str, parameters: Any = None) -> duckdb.DuckDBPyConnection:
        return self.cursor().execute(query, parameters)

    def sql(self, query: str, params: Any = None) -> duckdb.DuckDBPyRelation:
        return self.cursor().sql(query, params=params)

    def __getstate__(self) -> dict:
        return {"database": self.database, "settings": self.settings, "dir": self.scratch_dir}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["database"], state["settings"], state["dir"])

    def __dask_tokenize__(self) -> str:
        return f"gateway-db:{self.database}"


class _AcceptSharedDatabase(BaseDoValidateInput):
    """Lets a SharedDatabase stand for the ``db: DuckDBPyConnection`` input (threads engine)."""

    def do_validate_input(self, *, node_type: type, input_value: Any) -> bool:
        return _accepts_shared_database(node_type, input_value) or htypes.check_input_type(
            node_type, input_value
        )


def _accepts_shared_database(node_type: type, value: Any) -> bool:
    return isinstance(value, SharedDatabase) and node_type is duckdb.DuckDBPyConnection


def _threads_adapters(workers: int) -> list:
    from hamilton.plugins.h_threadpool import FutureAdapter

    return [FutureAdapter(max_workers=workers), _AcceptSharedDatabase()]


_dask_client = None


def _dask_adapter(settings: PipelineSettings):
    """Hamilton's DaskGraphAdapter on this process's Dask client: the configured scheduler, or
    a local cluster of worker processes started on first use and kept for later runs."""
    global _dask_client
    from dask.distributed import Client, LocalCluster
    from hamilton.plugins.h_dask import DaskGraphAdapter

    class Adapter(DaskGraphAdapter):
        @staticmethod
        def check_input_type(node_type: type, input_value: Any) -> bool:
            return _accepts_shared_database(node_type, input_value) or (
                DaskGraphAdapter.check_input_type(node_type, input_value)
            )

    if _dask_client is None:
        if settings.dask_scheduler:
            _dask_client = Client(settings.dask_scheduler, timeout=30)
        else:
            cluster = LocalCluster(
                n_workers=settings.engine_workers,
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
            )
            _dask_client = Client(cluster)
    return Adapter(_dask_client, result_builder=base.DictResult())


def build_driver(
    module: Any,
    engine: str,
    cache_dir: Path | None,
    settings: PipelineSettings,
    adapters: Sequence[lifecycle.api.LifecycleAdapter] = (),
) -> driver.Driver:
    """The Hamilton driver for module on engine, with caching when cache_dir is given."""
    builder = driver.Builder().with_modules(module)
    if engine == "threads":
        builder = builder.with_adapters(*_threads_adapters(settings.engine_workers))
    elif engine == "dask":
        builder = builder.with_adapters(_dask_adapter(settings))
    if adapters:
        builder = builder.with_adapters(*adapters)
    if cache_dir is not None:
        # The database is read-only, so the cursor is not part of any cache key; a different
        # database file gets a different cache directory instead.
        builder = builder.with_cache(path=str(cache_dir), ignore=["db"])
    return builder.build()


def cache_directory(root: Path, pipeline: str, database: Path) -> Path:
    """Where one pipeline's cache lives for one version of one database file."""
    stat = database.stat()
    identity = f"{database.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    return root / pipeline / hashlib.sha256(identity.encode()).hexdigest()[:16]


def database_for(
    engine: str, database: Path, settings: SqlSettings, scratch_dir: Path
) -> duckdb.DuckDBPyConnection | SharedDatabase:
    """What a run injects as ``db``: a fresh cursor locally, a SharedDatabase otherwise."""
    if engine == "local":
        return hardened_connection(database, settings, scratch_dir).cursor()
    return SharedDatabase(database, settings, scratch_dir)


async def scheduler_health(address: str) -> dict:
    """Readiness check of the configured Dask scheduler: up when it accepts a connection
    within a second (``tcp://host:port``)."""
    import anyio

    host, _, port = address.removeprefix("tcp://").rpartition(":")
    try:
        with anyio.fail_after(1):
            stream = await anyio.connect_tcp(host.strip("[]"), int(port))
        await stream.aclose()
    except (OSError, TimeoutError, ValueError):
        return {"status": "down", "error": "the Dask scheduler cannot be reached"}
    return {"status": "up"}
