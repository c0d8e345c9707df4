"""Large results kept for paging and download.

When a query's result is cut for the context window, the rest keeps streaming from DuckDB in a
background thread into Arrow IPC chunk files (fixed rows per chunk, so any offset maps to one
file), never held in memory whole. The first page is served at once; later pages wait only until
the rows they need are stored. Stored results expire after a time, storage is bounded in rows per
result and in bytes overall, and only a few results are stored at once.

Each result is a directory of its own in the store's directory, with an index (``index.json``:
columns, rows and chunks stored, done or not, when it expires, until when its writer holds it)
beside its chunks. Replicas that share the data directory therefore all page and download every
result, whichever replica stored it. Results go when they expire, whoever made them; one whose
writer stopped renewing its lease while storing (a killed process) says storing stopped.
"""

from __future__ import annotations

import dataclasses
import io
import json
import re
import secrets
import shutil
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import duckdb

from servers.lazy import lazy_module
from servers.results import Column, cap_rows
from servers.settings import SqlSettings

# Loaded with the first stored result.
pa = lazy_module("pyarrow")
pa_csv = lazy_module("pyarrow.csv")
pa_ipc = lazy_module("pyarrow.ipc")
pq = lazy_module("pyarrow.parquet")

CHUNK_ROWS = 65_536
BATCH_ROWS = 8_192
INDEX = "index.json"
LEASE_SLACK_S = 60.0  # a writer's lease: the statement limit plus this, renewed at every chunk
POLL_S = 0.1  # how often a result another process is storing is looked at again
_RESULT_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")

Stopped = Literal["rows", "storage", "time", "expired", "error"]


class UnknownResult(LookupError):
    """No stored result has that id (never existed, or expired)."""


@dataclass
class StoredResult:
    id: str
    columns: list[Column]
    directory: Path
    expires_at: float = 0.0  # wall-clock time (shared by the processes on a volume)
    local: bool = True  # stored by this process (else read from its index)
    chunks: list[Path] = field(default_factory=list)
    rows: int = 0
    bytes: int = 0
    done: bool = False
    stopped: Stopped | None = None
    changed: threading.Condition = field(default_factory=threading.Condition)
    stop: threading.Event = field(default_factory=threading.Event)


class ResultStore:
    """Stored results by id, in one directory, bounded by the sql settings."""

    def __init__(self, root: Path, settings: SqlSettings, uri_prefix: str = "sql://results/"):
        # Replicas (and several servers in one process) share root: every result is found by
        # its id there, and goes when it expires.
        self.directory = root
        self.directory.mkdir(parents=True, exist_ok=True)
        self.settings = settings
        self.uri_prefix = uri_prefix
        self._results: dict[str, StoredResult] = {}
        self._lock = threading.Lock()
        self._swept = 0.0
        self.sweep()

    def reserve(self, columns: list[Column]) -> StoredResult | None:
        """A new empty result, or None when storing is off or enough results are being stored."""
        self.sweep()
        with self._lock:
            running = sum(not r.done for r in self._results.values())
            if running >= self.settings.results_max_running:
                return None
            result_id = secrets.token_urlsafe(12)
            expires_at = time.time() + self.settings.results_ttl_s
            result = StoredResult(result_id, columns, self.directory / result_id, expires_at)
            result.directory.mkdir()
            self._results[result_id] = result
        self._write_index(result)
        return result

    def handle(self, result: StoredResult) -> dict:
        """What a client needs to page through or download a result."""
        return {
            "id": result.id,
            "uri": f"{self.uri_prefix}{result.id}",
            "rows_stored": result.rows,
            "complete": result.done and result.stopped is None,
            "stored_until_s": round(max(0.0, result.expires_at - time.time()), 1),
            "csv": f"/sql/results/{result.id}.csv",
            "parquet": f"/sql/results/{result.id}.parquet",
        }

    def fill(
        self,
        result: StoredResult,
        first: list[pa.RecordBatch],
        reader: pa.RecordBatchReader,
    ) -> None:
        """Store first and then everything left in reader, in fixed-size chunks (blocking)."""
        pending: list[pa.RecordBatch] = []
        pending_rows = 0
        try:
            for batch in _chain(first, reader):
                if result.stop.is_set():
                    result.stopped = "expired"
                    break
                room = self.settings.results_max_rows - result.rows - pending_rows
                if batch.num_rows > room:
                    batch = batch.slice(0, room)
                    result.stopped = "rows"
                pending.append(batch)
                pending_rows += batch.num_rows
                while pending_rows >= CHUNK_ROWS:
                    pending, pending_rows = self._write_chunk(result, pending, CHUNK_ROWS)
                if result.stopped or self._over_storage(result):
                    result.stopped = result.stopped or "storage"
                    break
            if pending_rows and result.stopped != "storage":
                self._write_chunk(result, pending, pending_rows)
        except duckdb.InterruptException:
            result.stopped = "time"
        except Exception:  # a failed spool keeps what it stored and says it stopped
            result.stopped = "error"
        finally:
            with result.changed:
                result.done = True
                result.changed.notify_all()
            if result.stop.is_set():
                shutil.rmtree(result.directory, ignore_errors=True)
            else:
                self._write_index(result)

    def _write_chunk(
        self, result: StoredResult, pending: list[pa.RecordBatch], rows: int
    ) -> tuple[list[pa.RecordBatch], int]:
        table = pa.Table.from_batches(pending)
        chunk, rest = table.slice(0, rows), table.slice(rows)
        path = result.directory / f"{len(result.chunks):06d}.arrow"
        with pa_ipc.new_file(path, chunk.schema) as writer:
            writer.write_table(chunk)
        with result.changed:
            result.chunks.append(path)
            result.rows += chunk.num_rows
            result.bytes += path.stat().st_size
            result.changed.notify_all()
        self._write_index(result)
        return rest.to_batches(), rest.num_rows

    def _write_index(self, result: StoredResult) -> None:
        """Write result's index beside its chunks, atomically (readers never see half of it)."""
        index = {
            "columns": [column.model_dump() for column in result.columns],
            "chunks": len(result.chunks),
            "rows": result.rows,
            "bytes": result.bytes,
            "done": result.done,
            "stopped": result.stopped,
            "expires_at": result.expires_at,
            "lease_until": time.time() + self.settings.query_timeout_s + LEASE_SLACK_S,
        }
        partial = result.directory / f"{INDEX}.{secrets.token_hex(4)}"
        try:
            partial.write_text(json.dumps(index))
            partial.replace(result.directory / INDEX)
        except OSError:  # the result was dropped (expired or cleared) by another process
            partial.unlink(missing_ok=True)

    def _over_storage(self, result: StoredResult) -> bool:
        with self._lock:
            total = sum(r.bytes for r in self._results.values())
        return total > self.settings.results_max_bytes

    def get(self, result_id: str) -> StoredResult:
        self.sweep()
        with self._lock:
            result = self._results.get(result_id)
        if result is None and _RESULT_ID.fullmatch(result_id):
            result = _read_index(self.directory / result_id)
        if result is None or result.expires_at < time.time():
            raise UnknownResult(
                f"No stored result {result_id!r}: it expired (results are kept "
                f"{self.settings.results_ttl_s:g} s) or never existed. Run the query again."
            )
        return result

    def page(self, result_id: str, offset: int, limit: int, max_bytes: int) -> dict:
        """Rows [offset, offset + limit) of a stored result (blocking until they are stored)."""
        result = self.get(result_id)
        wanted = offset + limit
        result = _wait(result, lambda r: r.done or r.rows >= wanted, 30)
        available, done = result.rows, result.done
        rows = cap_rows(result.columns, self._rows(result, offset, wanted), limit, max_bytes)
        end = offset + rows.row_count
        more = end < available or not done
        page = rows.model_dump()
        page.update(
            offset=offset,
            next_offset=end if more else None,
            rows_stored=available,
            complete=done and result.stopped is None,
            stopped=result.stopped,
        )
        if result.stopped and not more:
            page["hint"] = _stopped_hint(result.stopped, self.settings)
        return page

    def _rows(self, result: StoredResult, start: int, end: int) -> Iterator[list]:
        first_chunk = start // CHUNK_ROWS
        for index in range(first_chunk, len(result.chunks)):
            chunk_start = index * CHUNK_ROWS
            if chunk_start >= end:
                return
            table = _read_chunk(result.chunks[index])
            table = table.slice(max(0, start - chunk_start), end - max(start, chunk_start))
            yield from _table_rows(table)

    def wait_done(self, result_id: str, timeout_s: float) -> StoredResult:
        return _wait(self.get(result_id), lambda r: r.done, timeout_s)

    def csv(self, result: StoredResult) -> Iterator[bytes]:
        """The stored rows as CSV, chunk by chunk, with one header line."""
        for index, path in enumerate(result.chunks):
            buffer = io.BytesIO()
            options = pa_csv.WriteOptions(include_header=index == 0)
            pa_csv.write_csv(_downloadable(_read_chunk(path)), buffer, options)
            yield buffer.getvalue()

    def parquet(self, result: StoredResult) -> Path:
        """The stored rows as one Parquet file, written once."""
        path = result.directory / "result.parquet"
        if not path.exists():  # replicas may write it at once: each its own partial file
            partial = path.with_suffix(f".{secrets.token_hex(4)}.partial")
            writer = None
            for chunk in result.chunks:
                table = _downloadable(_read_chunk(chunk))
                writer = writer or pq.ParquetWriter(partial, table.schema)
                writer.write_table(table)
            if writer is None:
                return path  # nothing stored; the caller reports it
            writer.close()
            partial.replace(path)
        return path

    def clear(self) -> int:
        """Forget every stored result now, whichever replica stored it (admin clear_caches):
        storing in progress here stops at its next batch and its files go with it (storing in
        another process stops at its next chunk); the rest is deleted at once. Returns how many
        results were dropped; their handles then answer as unknown."""
        with self._lock:
            dropped = list(self._results.values())
            self._results.clear()
        for result in dropped:
            result.stop.set()
        writing = {r.id for r in dropped if not r.done}
        others = [d for d in self.directory.iterdir() if d.is_dir() and d.name not in writing]
        for directory in others:
            shutil.rmtree(directory, ignore_errors=True)
        return len(writing) + len(others)

    def sweep(self) -> None:
        """Forget expired results and delete their files: this process's at once, and every
        expired one in the shared directory every few seconds (by its index's expiry, never by
        whether the process that stored it runs)."""
        now = time.time()
        with self._lock:
            expired = [r for r in self._results.values() if r.expires_at < now]
            for result in expired:
                del self._results[result.id]
            local = set(self._results)
            due, self._swept = now - self._swept > min(5.0, self.settings.results_ttl_s), now
        for result in expired:
            result.stop.set()
            if result.done:
                shutil.rmtree(result.directory, ignore_errors=True)
        if not due:
            return
        for directory in self.directory.iterdir():
            if directory.name not in local and _expired(directory, now, self.settings):
                shutil.rmtree(directory, ignore_errors=True)


def _read_index(directory: Path) -> StoredResult | None:
    """The result stored in directory, as its index describes it (None without one)."""
    try:
        index = json.loads((directory / INDEX).read_text())
    except (OSError, ValueError):
        return None
    done, stopped = index["done"], index["stopped"]
    if not done and index["lease_until"] < time.time():
        done, stopped = True, "error"  # its writer stopped renewing: it is gone
    return StoredResult(
        directory.name,
        [Column(**column) for column in index["columns"]],
        directory,
        expires_at=index["expires_at"],
        local=False,
        chunks=[directory / f"{i:06d}.arrow" for i in range(index["chunks"])],
        rows=index["rows"],
        bytes=index["bytes"],
        done=done,
        stopped=stopped,
    )


def _expired(directory: Path, now: float, settings: SqlSettings) -> bool:
    """A result directory past its expiry; without an index (being made, or left by an older
    version): once it is older than a result's lifetime."""
    try:
        return json.loads((directory / INDEX).read_text())["expires_at"] < now
    except (OSError, ValueError, KeyError, TypeError):
        try:
            return directory.stat().st_mtime < now - settings.results_ttl_s
        except OSError:
            return False


def _wait(result: StoredResult, ready, timeout_s: float) -> StoredResult:
    """result once ready(result) holds or timeout_s passed: this process's results are
    signalled; another's are read again from their index."""
    if result.local:
        with result.changed:
            result.changed.wait_for(lambda: ready(result), timeout=timeout_s)
        return result
    deadline = time.monotonic() + timeout_s
    while not ready(result) and time.monotonic() < deadline:
        time.sleep(POLL_S)
        result = _read_index(result.directory) or dataclasses.replace(result, done=True)
    return result


def _chain(first: list[pa.RecordBatch], reader: Iterable[pa.RecordBatch]):
    yield from first
    yield from reader


def _read_chunk(path: Path) -> pa.Table:
    with pa.memory_map(str(path)) as source:
        return pa_ipc.open_file(source).read_all()


def table_rows(batches: Iterable[pa.RecordBatch]) -> Iterator[list]:
    """Rows of Arrow batches as lists of Python values, lazily."""
    for batch in batches:
        yield from _table_rows(batch)


def _table_rows(table: pa.Table | pa.RecordBatch) -> Iterator[list]:
    columns = [column.to_pylist() for column in table.columns]
    yield from (list(row) for row in zip(*columns, strict=True))


def _downloadable(table: pa.Table) -> pa.Table:
    """Cast the few Arrow types CSV and Parquet writers cannot take (intervals) to strings."""
    fields = []
    for f in table.schema:
        if pa.types.is_interval(f.type):
            fields.append(pa.field(f.name, pa.string()))
        else:
            fields.append(f)
    schema = pa.schema(fields)
    if schema == table.schema:
        return table
    arrays = [
        pa.array([None if v is None else str(v) for v in col.to_pylist()], pa.string())
        if pa.types.is_interval(col.type)
        else col
        for col in table.columns
    ]
    return pa.Table.from_arrays(arrays, schema=schema)


def _stopped_hint(stopped: Stopped, settings: SqlSettings) -> str:
    return {
        "rows": f"Only the first {settings.results_max_rows} rows were stored.",
        "storage": "Storage for results is full; the rest was not stored. Narrow the query.",
        "time": f"Storing stopped at the {settings.query_timeout_s:g} s statement limit.",
        "expired": "The result expired while it was being stored.",
        "error": "Storing stopped on an error; the rows before it are complete.",
    }[stopped]
