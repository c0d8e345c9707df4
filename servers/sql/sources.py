"""The sql server's extra sources (``GATEWAY_SQL__SOURCES``): DuckDB files and folders of files.

A DuckDB file is attached read-only under its name. A folder becomes a small DuckDB file of views
(one per Parquet, CSV or JSON file in it, named after the file), built in the process's scratch
folder and attached read-only under the folder's name, so ``<name>.<file>`` reads the file. The
views are rebuilt whenever the folder's files change and the engine opens its connection again
(it lets the files go after every idle moment), so files added or removed show up without a
restart. The folders join the engine's readable directories; nothing else about the engine's
hardening changes.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import duckdb

from servers.sql.sharing import LOCK_POLL_S, FilesUnavailable, SharedFiles

T = TypeVar("T")

NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
# How each kind of file in a folder is read; the view is named after the file's stem.
READERS = {
    ".parquet": "read_parquet",
    ".csv": "read_csv",
    ".tsv": "read_csv",
    ".json": "read_json",
    ".jsonl": "read_json",
    ".ndjson": "read_json",
}
RESERVED = {"main", "temp", "system", "memory"}
_DUCKDB_MAGIC = b"DUCK"


def is_duckdb_file(path: Path) -> bool:
    """True when path starts like a DuckDB database file (its magic bytes at offset 8)."""
    try:
        with open(path, "rb") as file:
            header = file.read(12)
    except OSError:
        return False
    return header[8:12] == _DUCKDB_MAGIC


def check_database(path: Path) -> None:
    """A clear start-up error when the served database exists but is not a DuckDB file."""
    if path.is_file() and path.stat().st_size > 0 and not is_duckdb_file(path):
        kind = path.suffix.lstrip(".").upper() or "this kind of"
        raise ValueError(
            f"GATEWAY_SQL__DATABASE names {path}, which is not a DuckDB database. Serve a "
            f"{kind} file by putting it in a folder and naming that folder in "
            'GATEWAY_SQL__SOURCES, e.g. {"mydata": "/path/to/folder"}.'
        )


@dataclass
class Folder:
    """One folder source: the views file built from it, and the files it was built from."""

    name: str
    path: Path
    built: tuple = ()
    views: Path | None = None
    skipped: dict[str, str] = field(default_factory=dict)

    def signature(self) -> tuple:
        """The data files in the folder with their sizes and times: a change means a rebuild."""
        found = []
        for entry in sorted(self.path.iterdir()):
            if entry.suffix.lower() in READERS and entry.is_file():
                stat = entry.stat()
                found.append((entry.name, stat.st_size, stat.st_mtime_ns))
        return tuple(found)


@dataclass
class Sources:
    """Every configured source, checked at start-up."""

    files: dict[str, Path] = field(default_factory=dict)
    folders: dict[str, Folder] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, sources: Mapping[str, Path], main: Path | None) -> Sources:
        """The sources of settings, or ValueError naming a bad name or a path that is neither a
        DuckDB file nor a folder."""
        found = cls()
        for name, path in sources.items():
            where = f"GATEWAY_SQL__SOURCES entry {name!r} ({path})"
            if not NAME.match(name) or name.lower() in RESERVED:
                raise ValueError(
                    f"{where}: a source name is a letter or _, then letters, digits or _, and "
                    f"not one of {', '.join(sorted(RESERVED))}"
                )
            if main is not None and name == main.stem:
                raise ValueError(f"{where}: the name is already the served database's")
            path = Path(path).expanduser().resolve()
            if path.is_dir():
                found.folders[name] = Folder(name, path)
            elif path.is_file() and is_duckdb_file(path):
                found.files[name] = path
            else:
                raise ValueError(
                    f"{where} is neither a DuckDB database file nor a folder of Parquet, CSV "
                    "or JSON files"
                )
        return found

    def identity(self, database: Path) -> tuple:
        """Size and time of every file served (and of the folders' files): unchanged, the
        catalog is unchanged too."""
        files = [database, *self.files.values()]
        files += [f.with_name(f.name + ".wal") for f in files]  # commits not checkpointed yet
        stats = [(f.stat().st_size, f.stat().st_mtime_ns) for f in files if f.exists()]
        return (*stats, *(f.built for f in self.folders.values()))

    @property
    def directories(self) -> list[Path]:
        return [folder.path for folder in self.folders.values()]

    def hidden_paths(self) -> list[tuple[str, str]]:
        pairs = [(str(path), f"<{name}>") for name, path in self.files.items()]
        return pairs + [(str(f.path), f"<{name}>") for name, f in self.folders.items()]

    def prepare(self, scratch: Path) -> list[Path]:
        """Build the folders' views files where their files changed; returns every file the
        engine will attach (allowed by name in the hardened connection)."""
        for folder in self.folders.values():
            build_views(folder, scratch)
        return [*self.files.values(), *(f.views for f in self.folders.values())]

    def attach_all(self, con: duckdb.DuckDBPyConnection) -> dict[str, str]:
        """Attach every source to con (read-only), after ``prepare``; returns the sources that
        could not be attached now, with why (a writer holds the file)."""
        busy = {}
        for name, path in self.files.items():
            try:
                attach(con, name, path)
            except duckdb.IOException as exc:
                busy[name] = _reason(exc)
        for folder in self.folders.values():
            attach(con, folder.name, folder.views)
        return busy

    def attach_busy(self, con: duckdb.DuckDBPyConnection, busy: dict[str, str]) -> dict[str, str]:
        """Attach the busy sources whose files are free now; returns those still busy."""
        still = {}
        for name, reason in busy.items():
            try:
                attach(con, name, self.files[name])
            except duckdb.IOException:
                still[name] = reason
            except duckdb.BinderException:  # attached meanwhile by another call
                pass
        return still


def waiting_for_sources(
    work: Callable[[duckdb.DuckDBPyConnection], T],
    sources: Sources,
    files: SharedFiles,
    wait_s: float,
) -> Callable[[duckdb.DuckDBPyConnection], T]:
    """work, which, while a writer holds a source's file (``files.busy``), attaches it as soon
    as it is free, and waits for it up to wait_s when the statement cannot find what it names;
    then FilesUnavailable names the source."""

    def waiting(cursor: duckdb.DuckDBPyConnection) -> T:
        deadline = time.monotonic() + wait_s
        while True:
            files.busy = sources.attach_busy(cursor, files.busy)
            try:
                return work(cursor)
            except duckdb.CatalogException:
                if not files.busy:
                    raise
                if time.monotonic() >= deadline:
                    names = ", ".join(sorted(files.busy))
                    raise FilesUnavailable(
                        f"The source {names} is being written by another process; try again "
                        "shortly."
                    ) from None
                time.sleep(LOCK_POLL_S)

    return waiting


def attach(con: duckdb.DuckDBPyConnection, name: str, path: Path) -> None:
    con.execute(f"ATTACH {_literal(str(path))} AS {_identifier(name)} (READ_ONLY)")


def build_views(folder: Folder, scratch: Path) -> Path:
    """The views file of folder, rebuilt when its files changed since the last build."""
    signature = folder.signature()
    if folder.views is not None and folder.views.exists() and signature == folder.built:
        return folder.views
    scratch.mkdir(parents=True, exist_ok=True)
    serial = 0 if folder.views is None else int(folder.views.stem.rsplit("-", 1)[1]) + 1
    target = scratch / f"source-{folder.name}-{serial}.duckdb"
    target.unlink(missing_ok=True)
    folder.skipped = {}
    # The builder reads only the folder (schemas and CSV dialects are taken at CREATE VIEW).
    builder = duckdb.connect(
        str(target),
        config={
            "autoinstall_known_extensions": False,
            "autoload_known_extensions": False,
            "python_enable_replacements": False,
        },
    )
    try:
        builder.execute(f"SET allowed_directories = [{_literal(str(folder.path) + '/')}]")
        builder.execute("SET enable_external_access = false")
        for entry_name, _, _ in signature:
            entry = folder.path / entry_name
            reader = READERS[entry.suffix.lower()]
            view = _identifier(entry.stem)
            try:
                builder.execute(
                    f"CREATE OR REPLACE VIEW {view} AS "
                    f"SELECT * FROM {reader}({_literal(str(entry))})"
                )
            except duckdb.Error as exc:
                folder.skipped[entry_name] = type(exc).__name__
    finally:
        builder.close()
    if folder.views is not None and folder.views != target:
        folder.views.unlink(missing_ok=True)
    folder.views, folder.built = target, signature
    return target


def _reason(exc: duckdb.Error) -> str:
    if "lock" in str(exc).lower():
        return "being written by another process"
    return "cannot be opened"


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
