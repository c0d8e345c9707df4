"""Writer processes for the file-sharing tests: real processes opening a DuckDB file read-write.

DuckDB shares one database instance per file within a process, so a writer must be another
process, as a user's notebook or ETL job is.
"""

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

# Opens the file read-write (retrying while the gateway still holds it), runs the SQL of argv[2],
# says "held", and keeps the file until its stdin closes.
_WRITER = """
import sys, time, duckdb
deadline = time.monotonic() + 90
while True:
    try:
        con = duckdb.connect(sys.argv[1])
        break
    except duckdb.IOException:
        if time.monotonic() > deadline:
            raise
        time.sleep(0.05)
if sys.argv[2]:
    con.execute(sys.argv[2])
print("held", flush=True)
sys.stdin.read()
con.close()
"""


def make_database(path: Path, sql: str) -> Path:
    """A DuckDB file holding what sql creates (opened and closed before any engine opens it)."""
    con = duckdb.connect(str(path))
    con.execute(sql)
    con.close()
    return path


@contextmanager
def writer(database: Path, sql: str = "") -> Iterator[subprocess.Popen]:
    """A process holding database read-write (after running sql and committing) until the
    block ends; it waits up to 90 s for the file to be free first."""
    process = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(database), sql],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = process.stdout.readline()
        if line.strip() != "held":
            raise RuntimeError(f"the writer did not get the file: {process.stderr.read()[-2000:]}")
        yield process
    finally:
        process.stdin.close()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def write(database: Path, sql: str) -> None:
    """Run sql in a writer process and let the file go again."""
    with writer(database, sql):
        pass


def poll(check, timeout_s: float = 90, interval_s: float = 0.1):
    """Call check() until it returns something truthy; fail after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while True:
        seen = check()
        if seen:
            return seen
        if time.monotonic() > deadline:
            raise AssertionError(f"still {seen!r} after {timeout_s} s")
        time.sleep(interval_s)
