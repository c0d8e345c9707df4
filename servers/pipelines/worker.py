"""A run worker: a separate process that runs pipelines for the pipelines server.

The server starts workers on demand (``python -m servers.pipelines.worker FD``, in a new
session) and keeps them for later runs. Each worker leads its own process group, opens the
database with the sql server's hardened settings, builds each pipeline's driver once, and
answers one job at a time over a socket:
progress messages while nodes finish, then the shaped result (or an error message). A run
that times out or is cancelled is stopped by killing the worker's process group, which ends
its DuckDB queries, its Python nodes and any local Dask processes with it.
"""

from __future__ import annotations

import datetime as dt
import importlib
import logging
import os
import shutil
import signal
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
from hamilton.lifecycle import GraphExecutionHook, NodeExecutionHook

from servers.lazy import lazy_module
from servers.pipelines.engines import (
    build_driver,
    cache_directory,
    database_for,
    release_connections,
)
from servers.pipelines.registry import shape_output
from servers.settings import PIPELINE_OUTPUTS, PipelineSettings, SqlSettings

if TYPE_CHECKING:
    from hamilton import driver

pd = lazy_module("pandas")  # in the worker, which runs pipelines anyway


@dataclass(frozen=True)
class PipelinePlan:
    """What a worker needs to build one pipeline: its module by name and how it runs."""

    module: str
    engine: str
    cache: bool


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker process needs, picklable; the directories are the settings'
    ``scratch_dir``, ``pipeline_cache_dir`` and ``pipeline_outputs_dir``."""

    database: Path
    sql: SqlSettings
    settings: PipelineSettings
    scratch_dir: Path
    cache_dir: Path
    outputs_dir: Path
    plans: dict[str, PipelinePlan] = field(default_factory=dict)


@dataclass(frozen=True)
class Job:
    """One run: validated inputs, chosen outputs, and the caps results are shaped to."""

    pipeline: str
    inputs: dict[str, Any]
    outputs: list[str]
    max_rows: int
    max_bytes: int
    persist: bool


class RunFailed(Exception):
    """The run failed in a way the caller can act on; the message says how."""


class ProgressReporter(GraphExecutionHook, NodeExecutionHook):
    """Hamilton lifecycle adapter: sends (done, total, node) to the server as nodes finish.

    On the dask engine Hamilton's node hooks run while the Dask graph is being built, before
    any node ran: there the engine calls ``finished`` as each node's future completes, and the
    hook counts nothing (``from_hooks`` False)."""

    def __init__(self, send, from_hooks: bool = True):
        self._send = send
        self._from_hooks = from_hooks
        self._lock = threading.Lock()
        self._done = 0
        self._total = 0

    def run_before_graph_execution(self, *, execution_path, inputs, **_: Any) -> None:
        with self._lock:
            self._done = 0
            self._total = len([name for name in execution_path if name not in inputs])

    def finished(self, node_name: str) -> None:
        with self._lock:
            self._done += 1
            self._send(("progress", self._done, max(self._total, self._done), node_name))

    def run_after_node_execution(self, *, node_name: str, success: bool, **_: Any) -> None:
        if success and self._from_hooks:
            self.finished(node_name)

    def run_before_node_execution(self, **_: Any) -> None:
        pass

    def run_after_graph_execution(self, **_: Any) -> None:
        pass


class Worker:
    """The worker side: drivers built once per pipeline, one job at a time."""

    def __init__(self, spec: WorkerSpec, send):
        self.spec = spec
        self.send = send
        self.drivers: dict[str, driver.Driver] = {}

    def driver(self, name: str) -> driver.Driver:
        if name not in self.drivers:
            plan = self.spec.plans[name]
            cache = None
            if plan.cache:
                cache = cache_directory(self.spec.cache_dir, name, self.spec.database)
            module = importlib.import_module(plan.module)
            reporter = ProgressReporter(self.send, from_hooks=plan.engine != "dask")
            self.drivers[name] = build_driver(
                module, plan.engine, cache, self.spec.settings, [reporter], reporter.finished
            )
        return self.drivers[name]

    def run(self, job: Job) -> dict[str, Any]:
        plan = self.spec.plans[job.pipeline]
        try:
            # ValueError: a Dask cluster that cannot be reached (ClusterUnavailable); a writer
            # held the database past lock_wait_s, or it is missing.
            dr = self.driver(job.pipeline)
            db = database_for(plan.engine, self.spec.database, self.spec.sql, self.spec.scratch_dir)
        except ValueError as exc:
            raise RunFailed(str(exc)) from None
        try:
            results = dr.execute(job.outputs, inputs={**job.inputs, "db": db})
        except (ValueError, duckdb.Error) as exc:
            raise RunFailed(_first_line(exc)) from None
        finally:
            if isinstance(db, duckdb.DuckDBPyConnection):
                db.close()
        shaped = {
            name: shape_output(value, job.max_rows, job.max_bytes)
            for name, value in results.items()
        }
        answer: dict[str, Any] = {"outputs": shaped, "worker_pid": os.getpid()}
        if plan.cache:
            answer["cache"] = _cache_summary(dr)
        if job.persist:
            answer["parquet"] = self.persist(job.pipeline, results)
        return answer

    def persist(self, pipeline: str, results: dict[str, Any]) -> dict[str, str]:
        """Write each table output as Parquet; return the names sql_query reads them by."""
        root = self.spec.outputs_dir
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
        folder = f"{pipeline}_{stamp}_{uuid.uuid4().hex[:6]}"
        names = {}
        for name, value in results.items():
            if isinstance(value, pd.Series):
                value = value.to_frame()
            if isinstance(value, pd.DataFrame):
                (root / folder).mkdir(parents=True, exist_ok=True)
                value.to_parquet(root / folder / f"{name}.parquet", index=False)
                names[name] = f"{PIPELINE_OUTPUTS}/{folder}/{name}.parquet"
        _prune(root, self.spec.settings.results_keep)
        return names


def _cache_summary(dr: driver.Driver) -> dict[str, int]:
    """How many nodes came from Hamilton's cache and how many ran, in the last run."""
    from hamilton.caching.adapter import CachingEventType

    events = [e for node in dr.cache.logs(run_id=dr.cache.last_run_id).values() for e in node]
    kinds = [e.event_type for e in events]
    return {
        "from_cache": kinds.count(CachingEventType.GET_RESULT),
        "computed": kinds.count(CachingEventType.EXECUTE_NODE),
    }


def _prune(root: Path, keep: int) -> None:
    runs = sorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)
    for old in runs[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _die_with(parent: int) -> None:
    """Kill this worker's process group (it, and a local Dask cluster) within a second of its
    parent's death, even in the middle of a run: a killed gateway or task worker leaves no run
    spinning on."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os.killpg(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def main(conn: Connection) -> None:
    """The worker process: read the spec, then answer jobs until the server closes the pipe."""
    logging.getLogger("hamilton").setLevel(logging.CRITICAL)
    spec = conn.recv()
    os.nice(spec.settings.worker_nice)  # long runs yield to the gateway's fast calls
    _die_with(os.getppid())
    lock = threading.Lock()

    def send(message: tuple) -> None:
        with lock:
            conn.send(message)

    worker = Worker(spec, send)
    while True:
        try:
            # Idle for sql.idle_release_s: let the database file go, so a writer can open it.
            if not conn.poll(spec.sql.idle_release_s):
                release_connections()
            job = conn.recv()
        except (EOFError, OSError):
            break
        try:
            send(("done", worker.run(job)))
        except RunFailed as exc:
            send(("failed", str(exc)))
        except Exception as exc:  # a bug in a node: say which kind, keep the details here
            logging.getLogger("gateway.pipelines").exception("pipeline %s failed", job.pipeline)
            send(("failed", f"the pipeline raised {type(exc).__name__}"))
    # The server is gone: take any helper processes (a local Dask cluster) down with us.
    os.killpg(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    # A worker runs pipelines: it loads Hamilton and pandas at once, at full priority, before
    # main() lowers it (the gateway, which imports this module for Job and WorkerSpec, never).
    import hamilton.driver  # noqa: F401
    import pandas  # noqa: F401

    main(Connection(int(sys.argv[1])))
