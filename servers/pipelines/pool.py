"""The server side of run workers: a bounded pool of worker processes, runs with deadlines.

A run waits for a free worker (at most ``size`` run at once), sends it the job and relays its
progress while awaiting the pipe without blocking the event loop. If the caller is cancelled
(its deadline passed, or the client cancelled), the worker's whole process group is killed:
its DuckDB queries, its Python nodes and any local Dask processes stop with it, and a fresh
worker is started for the next run. Workers that finish cleanly are kept for later runs.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import weakref
from collections.abc import Awaitable, Callable
from multiprocessing.connection import Connection
from typing import Any

import anyio

from servers.pipelines.worker import Job, RunFailed, WorkerSpec
from servers.settings import PROJECT_ROOT

Progress = Callable[[int, int, str], Awaitable[None]]
_KILL_WAIT_S = 10.0


class _Process:
    def __init__(self, process: subprocess.Popen, conn: Connection):
        self.process = process
        self.conn = conn

    @property
    def pid(self) -> int:
        return self.process.pid

    def kill(self) -> None:
        """Kill the worker and everything it started (its process group), and reap it."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(_KILL_WAIT_S)
        self.conn.close()


class RunWorkers:
    """Worker processes for pipeline runs, at most ``size`` at once."""

    def __init__(self, spec: WorkerSpec, size: int):
        self.spec = spec
        self._limiter = anyio.CapacityLimiter(size)
        self._idle: list[_Process] = []
        self._live: set[_Process] = set()
        # Workers end with their server object, or at interpreter exit, whichever comes first.
        weakref.finalize(self, _kill_all, self._live)

    async def run(
        self, job: Job, progress: Progress, on_worker: Callable[[int], None] | None = None
    ) -> dict[str, Any]:
        """Run job on a free worker, relaying its progress; ``on_worker`` hears the worker's
        process id once it has one. Cancelling the caller (a deadline or a client's
        cancellation) kills the worker before this returns."""
        async with self._limiter:
            return await self._run_on_worker(job, progress, on_worker)

    async def discard_idle(self) -> int:
        """Stop the idle workers (a fresh one starts for the next run); returns how many. After
        the pipeline caches are deleted, no worker keeps a driver on a deleted cache."""
        idle, self._idle = self._idle, []
        for worker in idle:
            await self._discard(worker)
        return len(idle)

    async def _run_on_worker(
        self, job: Job, progress: Progress, on_worker: Callable[[int], None] | None
    ) -> dict[str, Any]:
        worker = self._idle.pop() if self._idle else await self._start()
        if on_worker is not None:
            on_worker(worker.pid)
        finished = False
        try:
            worker.conn.send(job)
            while True:
                await anyio.wait_readable(worker.conn.fileno())
                kind, *payload = worker.conn.recv()
                if kind == "progress":
                    await progress(*payload)
                    continue
                finished = True
                if kind == "failed":
                    raise RunFailed(payload[0])
                return payload[0]
        except (EOFError, OSError):  # the worker died (killed from outside, out of memory)
            raise RunFailed("its worker process stopped unexpectedly; try again") from None
        finally:
            if finished:
                self._idle.append(worker)
            else:
                with anyio.CancelScope(shield=True):
                    await self._discard(worker)

    async def _start(self) -> _Process:
        """A new worker: ``python -m servers.pipelines.worker FD`` in its own session, talking
        over a socket pair; it receives the spec first."""
        ours, theirs = socket.socketpair()
        with theirs:
            process = await anyio.to_thread.run_sync(
                lambda: subprocess.Popen(
                    [sys.executable, "-m", "servers.pipelines.worker", str(theirs.fileno())],
                    pass_fds=(theirs.fileno(),),
                    start_new_session=True,
                    cwd=PROJECT_ROOT,
                    stdin=subprocess.DEVNULL,
                    # Never the gateway's stdout: over stdio that is the MCP channel itself.
                    stdout=sys.stderr,
                )
            )
        worker = _Process(process, Connection(ours.detach()))
        self._live.add(worker)
        worker.conn.send(self.spec)
        return worker

    async def _discard(self, worker: _Process) -> None:
        self._live.discard(worker)
        await anyio.to_thread.run_sync(worker.kill)


def _kill_all(live: set[_Process]) -> None:
    for worker in list(live):
        worker.kill()
    live.clear()
