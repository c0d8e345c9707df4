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
import re
import threading
import time
from collections.abc import Callable, Sequence
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


class ClusterUnavailable(ValueError):
    """The Dask cluster cannot run the nodes (no scheduler, or no worker); the message says
    what to start."""


def _without_credentials(address: str) -> str:
    return re.sub(r"://[^/@]*@", "://", address)


def _dask_client_for(settings: PipelineSettings):
    """This process's Dask client: the configured scheduler (reached within dask_wait_s), or a
    local cluster of worker processes started on first use; both kept for later runs."""
    global _dask_client
    from dask.distributed import Client, LocalCluster

    if _dask_client is None:
        if settings.dask_scheduler:
            try:
                _dask_client = Client(settings.dask_scheduler, timeout=settings.dask_wait_s)
            except (OSError, TimeoutError):
                address = _without_credentials(settings.dask_scheduler)
                raise ClusterUnavailable(
                    f"the Dask scheduler at {address} cannot be reached; start it with "
                    "`dask scheduler` (see docs/deployment.md) or check "
                    "GATEWAY_PIPELINES__DASK_SCHEDULER"
                ) from None
        else:
            cluster = LocalCluster(
                n_workers=settings.engine_workers,
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
            )
            _dask_client = Client(cluster)
    return _dask_client


def _dask_adapter(settings: PipelineSettings, on_node_done: Callable[[str], None] | None):
    """Hamilton's DaskGraphAdapter on this process's Dask client, computing every node as its
    own future: on_node_done(node) is called as each node finishes on the cluster (Hamilton's
    node hooks run while the graph is only being built), and a cluster without a worker for
    dask_wait_s fails the run with that reason instead of waiting for its timeout."""
    from dask import delayed
    from dask.distributed import TimeoutError as DaskTimeout
    from dask.distributed import wait
    from hamilton.plugins.h_dask import DaskGraphAdapter

    def no_workers() -> ClusterUnavailable:
        address = _without_credentials(settings.dask_scheduler or client.scheduler.address)
        return ClusterUnavailable(
            f"the Dask cluster at {address} has no workers; start one with `dask worker {address}`"
        )

    class Adapter(DaskGraphAdapter):
        def __init__(self) -> None:
            super().__init__(client, result_builder=base.DictResult())
            self.nodes: list[tuple[Any, str]] = []  # (task, node) of the run being built

        @staticmethod
        def check_input_type(node_type: type, input_value: Any) -> bool:
            return _accepts_shared_database(node_type, input_value) or (
                DaskGraphAdapter.check_input_type(node_type, input_value)
            )

        def execute_node(self, node, kwargs: dict[str, Any]) -> Any:
            task = super().execute_node(node, kwargs)
            self.nodes.append((task, node.name))
            return task

        def build_result(self, **outputs: Any) -> Any:
            nodes, self.nodes = self.nodes, []
            try:
                client.wait_for_workers(1, timeout=settings.dask_wait_s)
            except (DaskTimeout, TimeoutError):
                raise no_workers() from None
            result = delayed(self.result_builder.build_result)(**outputs)
            futures = client.compute([*(task for task, _ in nodes), result], optimize_graph=False)
            # Hamilton built the nodes in dependency order: report a batch in that order.
            names = {task.key: (index, name) for index, (task, name) in enumerate(nodes)}
            try:
                self.follow(futures, names)
                return futures[-1].result()
            finally:
                client.cancel(futures)

        def follow(self, futures: list, names: dict[str, tuple[int, str]]) -> None:
            """Report each node as it finishes; fail when no worker is left for dask_wait_s."""
            pending = set(futures)
            alone_since = None
            while pending:
                try:
                    done, pending = wait(pending, timeout=1, return_when="FIRST_COMPLETED")
                except (DaskTimeout, TimeoutError):
                    done = set()
                for future in sorted(done, key=lambda f: names.get(f.key, (len(names), ""))):
                    if future.status == "error":
                        future.result()  # raises the node's own exception
                    if future.key in names:
                        if on_node_done is not None:
                            on_node_done(names[future.key][1])
                        # Reported: the cluster keeps its value only while a node still needs it.
                        future.release()
                if done or client.scheduler_info(n_workers=1)["workers"]:
                    alone_since = None
                elif alone_since is None:
                    alone_since = time.monotonic()
                elif time.monotonic() - alone_since > settings.dask_wait_s:
                    raise no_workers()

    client = _dask_client_for(settings)
    return Adapter()


def build_driver(
    module: Any,
    engine: str,
    cache_dir: Path | None,
    settings: PipelineSettings,
    adapters: Sequence[lifecycle.api.LifecycleAdapter] = (),
    on_node_done: Callable[[str], None] | None = None,
) -> driver.Driver:
    """The Hamilton driver for module on engine, with caching when cache_dir is given; on the
    dask engine on_node_done(node) is called as each node finishes on the cluster."""
    builder = driver.Builder().with_modules(module)
    if engine == "threads":
        builder = builder.with_adapters(*_threads_adapters(settings.engine_workers))
    elif engine == "dask":
        builder = builder.with_adapters(_dask_adapter(settings, on_node_done))
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
