"""`gateway.py new-pipeline NAME --dir DIR`: write a commented pipeline module to start from.

The module it writes passes the same validation as every served pipeline (it is checked here
before the command returns), reads one table the user names, and shows each part of the contract:
the docstring, ``Inputs``, plain typed functions, ``OUTPUTS`` and ``TABLES``.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_TABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*){0,2}$")

TEMPLATE = '''\
"""{title}: one line an LLM reads to decide whether this pipeline answers its question.

Say what it computes, from which tables, and what each output holds. This module docstring is
the pipeline's description in pipelines_list_pipelines.
"""

# Served by the gateway when this folder is in GATEWAY_PIPELINES__PATHS, as `{name}` (the file
# name). Each function is a node: its name is the node's name, its parameters the nodes (or
# inputs) it needs. `db` is injected by the gateway: a read-only DuckDB cursor on the served
# data. Never open files or connections here. Functions starting with _ are helpers, not nodes.

import pandas as pd
from pydantic import BaseModel, Field

import duckdb

# The tables this pipeline reads: it is left out (with a start-up log line) where they are missing.
TABLES = ("{table}",)

# The nodes a caller may ask for; each DataFrame is returned like a sql result (capped rows).
OUTPUTS = ("row_count", "preview")


class Inputs(BaseModel):
    """The values a caller chooses. Names and types must match the functions' parameters."""

    limit: int = Field(10, ge=1, le=1000, description="How many rows the preview shows.")


def {table_node}(db: duckdb.DuckDBPyConnection, limit: int) -> pd.DataFrame:
    """The first `limit` rows of {table}."""
    return db.execute("SELECT * FROM {table_sql} LIMIT ?", [limit]).df()


def row_count(db: duckdb.DuckDBPyConnection) -> int:
    """How many rows {table} has."""
    (count,) = db.execute("SELECT count(*) FROM {table_sql}").fetchone()
    return int(count)


def preview({table_node}: pd.DataFrame) -> pd.DataFrame:
    """The preview as served: change this to compute what you need from the rows above."""
    return {table_node}
'''


def render(name: str, table: str) -> str:
    """The module text for pipeline name reading table (a name as list_tables shows it)."""
    node = table.rsplit(".", 1)[-1].lower() + "_rows"
    title = name.replace("_", " ").capitalize()
    return TEMPLATE.format(name=name, title=title, table=table, table_sql=table, table_node=node)


def write(name: str, folder: Path, table: str, force: bool = False) -> Path:
    """Write folder/name.py and validate it as the gateway would; ValueError says what is wrong."""
    if not _NAME.match(name):
        raise ValueError(f"{name!r}: a pipeline name is a lower-case letter, then a-z, 0-9 or _")
    if not _TABLE.match(table):
        raise ValueError(f"{table!r}: name a table as list_tables shows it, e.g. lake.sales")
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{name}.py"
    if target.exists() and not force:
        raise ValueError(f"{target} exists; choose another name or pass --force")
    target.write_text(render(name, table))
    _validate(target)
    return target


def _validate(target: Path) -> None:
    import importlib.util

    from pipelines import Pipeline
    from servers.pipelines.registry import load_pipeline

    name = f"_scaffold_{target.stem}"
    spec = importlib.util.spec_from_file_location(name, target)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # Hamilton finds a module's functions through sys.modules
    try:
        spec.loader.exec_module(module)
        load_pipeline(target.stem, Pipeline(module, tuple(module.OUTPUTS)))
    finally:
        del sys.modules[name]


def command(argv: list[str]) -> int:
    """`gateway.py new-pipeline NAME --dir DIR [--table T]`: a pipeline module to start from."""
    parser = argparse.ArgumentParser(prog="gateway.py new-pipeline", description=command.__doc__)
    parser.add_argument("name", help="pipeline name, also the file name (snake_case)")
    parser.add_argument("--dir", type=Path, required=True, help="your pipelines folder")
    parser.add_argument("--table", default="my_table", help="a table it reads (list_tables)")
    parser.add_argument("--force", action="store_true", help="replace an existing file")
    args = parser.parse_args(argv)
    try:
        target = write(args.name, args.dir, args.table, args.force)
    except ValueError as exc:
        print(f"new-pipeline: {exc}")
        return 2
    print(f"wrote {target}; it passes validation. Serve it with:")
    print(f"  GATEWAY_PIPELINES__PATHS='[\"{args.dir.resolve()}\"]' uv run gateway.py")
    return 0
