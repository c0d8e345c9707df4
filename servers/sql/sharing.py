"""Sharing the database files with their writers: open on demand, hold while used, let go idle.

DuckDB locks a file for as long as a connection to it is open, read-only ones included, and a
writer cannot open it meanwhile. ``SharedFiles`` opens the engine's connection when a call needs
it, counts the calls using it, and closes it ``idle_release_s`` after the last one ends (one
reaper thread waits for that moment). A file a writer holds is tried again every 50 ms until the
caller's wait runs out, then ``FilesUnavailable`` says so in one sentence.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import duckdb

_log = logging.getLogger("gateway.sql")
LOCK_POLL_S = 0.05
BUSY = "The database is being written by another process; try again shortly."
MISSING = "The database file does not exist yet; try again once it has been created."


class FilesUnavailable(RuntimeError):
    """A database file could not be opened in time; the message is safe to show a client."""


def unavailable_reason(exc: BaseException) -> str:
    """Why a file could not be opened, in words safe for a client (no paths)."""
    if isinstance(exc, FileNotFoundError):
        return "the database file does not exist"
    if "lock" in str(exc).lower():
        return "the database is being written by another process"
    return f"the database cannot be opened ({type(exc).__name__})"


class SharedFiles:
    """The engine's connection, opened by ``opener`` when needed and closed when idle.

    ``opener()`` returns ``(connection, busy_sources)``; it raises FileNotFoundError or
    duckdb.IOException when the database cannot be opened now.
    """

    def __init__(
        self,
        opener: Callable[[], tuple[duckdb.DuckDBPyConnection, dict[str, str]]],
        idle_release_s: float,
    ):
        self._opener = opener
        self._idle_release_s = idle_release_s
        self._state = threading.Condition()
        self._connection: duckdb.DuckDBPyConnection | None = None
        self._users = 0
        self._idle_since = 0.0
        self._shut = False
        self._opening = False
        self._reaper: threading.Thread | None = None
        self.unavailable: str | None = None
        self.busy: dict[str, str] = {}
        self.opened = 0  # how many times the files were opened (tests, benchmarks)

    def is_open(self) -> bool:
        return self._connection is not None

    def acquire_if_open(self) -> duckdb.DuckDBPyConnection | None:
        """The open connection, counted as used; None when it is closed (no waiting)."""
        with self._state:
            if self._connection is None:
                return None
            self._users += 1
            return self._connection

    def acquire(self, wait_s: float) -> duckdb.DuckDBPyConnection:
        """The connection, opened if needed, counted as used until ``release``. Waits up to
        wait_s for a file a writer holds, then raises FilesUnavailable. The open runs outside
        the lock, so callers that find the connection open never wait for one."""
        deadline = time.monotonic() + wait_s
        while True:
            with self._state:
                if self._shut:
                    raise FilesUnavailable("The sql engine is shutting down.")
                if self._connection is not None:
                    self._users += 1
                    return self._connection
                if self._opening:  # another caller is opening it: wait for that
                    self._state.wait(LOCK_POLL_S)
                    continue
                self._opening = True
            opened = self._attempt()
            with self._state:
                self._opening = False
                self._state.notify_all()
                if opened is not None and self._shut:
                    opened[0].close()
                    raise FilesUnavailable("The sql engine is shutting down.")
                if opened is not None:
                    self._connection, self.busy = opened
                    self._users += 1
                    return self._connection
            if time.monotonic() >= deadline:
                missing = self.unavailable == "the database file does not exist"
                raise FilesUnavailable(MISSING if missing else BUSY)
            time.sleep(LOCK_POLL_S)

    def try_open(self) -> None:
        """Open the files now if they are free (to learn the catalog or report health), and let
        them go again after the idle delay."""
        try:
            self.acquire(0)
        except FilesUnavailable:
            return
        self.release()

    def release(self) -> None:
        with self._state:
            self._users -= 1
            if self._users == 0:
                self._idle_since = time.monotonic()
                self._state.notify_all()

    def shut(self) -> None:
        with self._state:
            self._shut = True
            self._close_locked()
            self._state.notify_all()

    def _attempt(self) -> tuple[duckdb.DuckDBPyConnection, dict[str, str]] | None:
        """One try at opening; None (with the reason in ``unavailable``) when it cannot now."""
        try:
            opened = self._opener()
        except (FileNotFoundError, duckdb.IOException) as exc:
            reason = unavailable_reason(exc)
            if reason != self.unavailable:
                _log.warning("sql unavailable: %s", reason)
            self.unavailable = reason
            return None
        if self.unavailable:
            _log.warning("sql available again")
        self.unavailable = None
        self.opened += 1
        self._start_reaper()
        return opened

    def _close_locked(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _start_reaper(self) -> None:
        if self._reaper is None:
            self._reaper = threading.Thread(target=self._reap, name="sql-release", daemon=True)
            self._reaper.start()

    def _reap(self) -> None:
        """Close the connection idle_release_s after the last call ended."""
        with self._state:
            while not self._shut:
                if self._connection is None or self._users:
                    self._state.wait()
                    continue
                remaining = self._idle_since + self._idle_release_s - time.monotonic()
                if remaining > 0:
                    self._state.wait(remaining)
                    continue
                self._close_locked()
