"""The statement gate: decide, before anything runs, whether SQL is one read-only statement, and
say clearly why not. The engine's read-only, locked configuration is the security boundary; this
gate exists so refusals are early, specific and actionable.
"""

import json
import re
from collections.abc import Iterator

import duckdb

READ_STATEMENTS = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN}
ACCEPTED = "SELECT, WITH, FROM, VALUES, DESCRIBE, SHOW, SUMMARIZE and EXPLAIN"

_WRITE_NODES = ("INSERT", "UPDATE", "DELETE", "MERGE")

# Functions that reveal the host (paths, settings), change the server's state, or run SQL from a
# string past this gate. The same names used as tables (the views DuckDB defines over some of
# them, e.g. `FROM pragma_database_list`, `FROM duckdb_databases`) are refused alike.
_REFUSED_FUNCTIONS = {
    "current_setting": "it reveals server settings",
    "duckdb_settings": "it reveals server settings",
    "duckdb_databases": "it reveals server file paths",
    "pragma_database_list": "it reveals server file paths",
    "duckdb_temporary_files": "it reveals server file paths",
    "duckdb_extensions": "it reveals server file paths",
    "duckdb_external_file_cache": "it reveals server file paths",
    "duckdb_logs": "it reveals server activity and file paths",
    "duckdb_log_contexts": "it reveals server activity",
    "duckdb_extension_repositories": "it reveals server configuration",
    "duckdb_prepared_statements": "it reveals other statements",
    "glob": "it lists server files with their full paths; read the files directly",
    **{
        name: "it reveals server file paths; read the data with read_csv, read_parquet or "
        "read_json (without filename=true)"
        for name in (
            "read_text",
            "read_blob",
            "sniff_csv",
            "parquet_metadata",
            "parquet_file_metadata",
            "parquet_kv_metadata",
            "parquet_full_metadata",
            "parquet_schema",
            "parquet_bloom_probe",
        )
    },  # fmt: skip
    "duckdb_secrets": "secrets are not available",
    "which_secret": "secrets are not available",
    "query": "it runs SQL from a string; write the SQL directly",
    "query_table": "it reads tables named by a string; name the table directly",
    "json_execute_serialized_sql": "it runs SQL from a string; write the SQL directly",
    **{
        name: "it changes the server's state"
        for name in (
            "enable_logging",
            "disable_logging",
            "truncate_duckdb_logs",
            "enable_profiling",
            "disable_profiling",
            "checkpoint",
            "force_checkpoint",
            "create_external_resource",
            "register_external_resource",
            "register_external_resource_type",
            "deregister_external_resource",
            "destroy_external_resource",
        )
    },  # fmt: skip
}

# The tree walk costs a parse; skip it when no word it looks for appears in the text at all.
_SUSPECT = re.compile(
    r"\b("
    + "|".join(["insert", "update", "delete", "merge", "filename", *_REFUSED_FUNCTIONS])
    + r")\b|u&",
    re.IGNORECASE,
)

_STATEMENT_ADVICE = {
    duckdb.StatementType.PRAGMA: "use the table functions instead, e.g. "
    "SELECT * FROM duckdb_tables() or DESCRIBE <table>",
    duckdb.StatementType.SET: "settings are fixed by the server and cannot be changed",
    duckdb.StatementType.COPY: "results cannot be written to files; use the result download",
    duckdb.StatementType.ATTACH: "only the served database is available",
    duckdb.StatementType.DETACH: "only the served database is available",
    duckdb.StatementType.LOAD: "extensions cannot be installed or loaded",
    duckdb.StatementType.EXPORT: "the database cannot be exported",
    duckdb.StatementType.CREATE: "the database is read-only",
}


class RefusedStatement(ValueError):
    """The statement is not allowed; the message says what and why."""


def check_statement(con: duckdb.DuckDBPyConnection, sql: str) -> duckdb.StatementType:
    """Return the type of the one read-only statement in sql, or raise RefusedStatement."""
    try:
        statements = con.extract_statements(sql)
        kinds = [statement.type for statement in statements]
    except duckdb.ParserException as exc:
        raise RefusedStatement(f"The SQL does not parse. {parser_message(exc)}") from None
    except ValueError:  # a statement type the Python enum does not know, e.g. UPDATE EXTENSIONS
        raise RefusedStatement(f"Only read-only statements ({ACCEPTED}) are allowed.") from None
    if not statements:
        raise RefusedStatement("The SQL is empty; send one statement.")
    if len(statements) > 1:
        raise RefusedStatement(
            f"Send exactly one statement per call; this SQL has {len(statements)}."
        )
    kind = kinds[0]
    if kind not in READ_STATEMENTS:
        advice = _STATEMENT_ADVICE.get(kind, "the database is read-only")
        raise RefusedStatement(
            f"{kind.name} statements are not allowed: {advice}. Accepted: {ACCEPTED}."
        )
    if kind == duckdb.StatementType.SELECT and _SUSPECT.search(sql):
        _check_tree(con, sql)
    return kind


def _check_tree(con: duckdb.DuckDBPyConnection, sql: str) -> None:
    """Refuse data-modifying CTEs (DuckDB classifies them as SELECT) and refused functions."""
    serialized = con.execute("SELECT json_serialize_sql(?)", [sql]).fetchall()[0][0]
    tree = json.loads(serialized)
    if tree.get("error"):  # not serialisable: let the engine judge (it is read-only anyway)
        return
    for key, value in _walk(tree):
        if key == "type" and isinstance(value, str) and value.endswith("_NODE"):
            verb = next((v for v in _WRITE_NODES if value.startswith(v)), None)
            if verb:
                raise RefusedStatement(
                    f"{verb} inside a query (a data-modifying CTE) is not allowed: "
                    "the database is read-only."
                )
        elif key == "function_name" and isinstance(value, str):
            reason = _REFUSED_FUNCTIONS.get(value.lower())
            if reason:
                raise RefusedStatement(f"The function {value}() is not allowed: {reason}.")
        elif isinstance(value, dict):
            for option in _table_function_options(value):
                if option == "filename":
                    raise RefusedStatement(
                        "The filename option is not allowed: it reveals server file paths. "
                        "Leave it out (the rows are the same)."
                    )
        elif key == "table_name" and isinstance(value, str):
            reason = _REFUSED_FUNCTIONS.get(value.lower())
            if reason:
                raise RefusedStatement(f"The view {value} is not allowed: {reason}.")


def _table_function_options(node: object) -> Iterator[str]:
    """Named options of a table function in a FROM clause (``read_csv(..., filename=true)``
    parses as an argument comparing a column reference to the value)."""
    if not isinstance(node, dict) or node.get("type") != "TABLE_FUNCTION":
        return
    for argument in (node.get("function") or {}).get("arguments") or []:
        expression = argument.get("expression") if isinstance(argument, dict) else None
        left = (expression or {}).get("left") if isinstance(expression, dict) else None
        if isinstance(left, dict) and left.get("class") == "COLUMN_REF":
            yield ".".join(str(n).lower() for n in left.get("column_names", []))


def _walk(tree: object) -> Iterator[tuple[str, object]]:
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield key, value
            yield from _walk(value)
    elif isinstance(tree, list):
        for value in tree:
            yield from _walk(value)


def parser_message(exc: Exception) -> str:
    """DuckDB's parser message, keeping its pointer to where the error is."""
    return str(exc).strip()
