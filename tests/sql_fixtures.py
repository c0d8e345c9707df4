"""Helpers for sql server tests: a private copy of the sample database per engine configuration.

DuckDB shares one database instance per file within a process, and its configuration is locked
at first open; a test that needs different limits therefore gets its own copy of the file.
"""

import hashlib
import shutil
from pathlib import Path

from fastmcp import FastMCP

from servers.sample_data import ensure_sample_database
from servers.settings import GatewaySettings
from servers.sql.server import create_server


def private_server(data_dir: Path, tmp_path: Path, **sql: object) -> FastMCP:
    """A sql server over a private copy of the sample database, with sql settings overridden."""
    database = tmp_path / "copy.duckdb"
    shutil.copyfile(ensure_sample_database(data_dir), database)
    settings = GatewaySettings.load(data_dir=tmp_path / "data", sql={"database": database, **sql})
    return create_server(settings)


def tree_digest(*roots: Path) -> str:
    """A digest of every file name, size and content under roots (to prove nothing changed)."""
    digest = hashlib.sha256()
    for root in roots:
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            digest.update(str(path).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()
