"""What is in the database: tables, columns, samples and statistics, read from DuckDB's catalog.

Names passed in by a caller are checked against the catalog before they reach any SQL.
"""

import duckdb

from servers.results import cap_rows, json_value, relation_columns
from servers.sql.engine import sql_identifier
from servers.sql.gate import RefusedStatement
from servers.sql.result_store import table_rows

# Every table and view of the served database and of each attached source. Names in the served
# database are bare (`flights`); a source's are qualified by its name (`lake.sales`), and by
# schema too outside its main schema (`shop.raw.orders`).
_TABLES_SQL = """
    WITH entries AS (
        SELECT database_name AS db, schema_name AS sch, table_name AS base, 'table' AS kind,
               comment, estimated_size FROM duckdb_tables()
        UNION ALL
        SELECT database_name, schema_name, view_name, 'view', comment, NULL FROM duckdb_views()
        WHERE NOT internal
    ), named AS (
        SELECT *, CASE
            WHEN db = current_database() AND sch = current_schema() THEN base
            WHEN sch = 'main' THEN db || '.' || base
            ELSE db || '.' || sch || '.' || base END AS name
        FROM entries WHERE db NOT IN ('system', 'temp')
    )
    SELECT n.name, n.kind, n.comment, coalesce(n.estimated_size, 0) AS row_estimate,
           (SELECT count(*) FROM duckdb_columns() c WHERE c.database_name = n.db
              AND c.schema_name = n.sch AND c.table_name = n.base) AS columns,
           n.db, n.sch, n.base
    FROM named n
    WHERE n.name ILIKE coalesce(?, '%')
    ORDER BY n.db <> current_database(), n.name
"""

_COLUMNS_SQL = """
    SELECT column_name, data_type, is_nullable, comment FROM duckdb_columns()
    WHERE database_name = ? AND schema_name = ? AND table_name = ? ORDER BY column_index
"""

_SUMMARY = ["name", "kind", "comment", "row_estimate", "columns"]


def _entries(cursor: duckdb.DuckDBPyConnection, pattern: str | None) -> list[dict]:
    rows = cursor.execute(_TABLES_SQL, [pattern]).fetchall()
    return [dict(zip([*_SUMMARY, "db", "schema", "base"], row, strict=True)) for row in rows]


def tables(cursor: duckdb.DuckDBPyConnection, pattern: str | None, detail: str) -> list[dict]:
    found = _entries(cursor, pattern)
    if detail == "names":
        return [{"name": t["name"]} for t in found]
    if detail == "full":
        for table in found:
            table["column_list"] = _columns_of(cursor, table)
    return [{k: t[k] for k in _SUMMARY} | _extra(t) for t in found]


def _extra(entry: dict) -> dict:
    return {"column_list": entry["column_list"]} if "column_list" in entry else {}


def _columns_of(cursor: duckdb.DuckDBPyConnection, entry: dict) -> list[dict]:
    rows = cursor.execute(_COLUMNS_SQL, [entry["db"], entry["schema"], entry["base"]]).fetchall()
    return [
        {"name": name, "type": kind, "nullable": nullable, "comment": comment}
        for name, kind, nullable, comment in rows
    ]


def columns(cursor: duckdb.DuckDBPyConnection, table: str, strict: bool = False) -> list[dict]:
    return _columns_of(cursor, _lookup(cursor, table))


def _lookup(cursor: duckdb.DuckDBPyConnection, table: str) -> dict:
    known = {t["name"]: t for t in _entries(cursor, None)}
    if table not in known:
        raise RefusedStatement(
            f"There is no table or view named {table!r}. Known: {', '.join(sorted(known))}."
        )
    return known[table]


def check_table(cursor: duckdb.DuckDBPyConnection, table: str) -> dict:
    """The catalog entry of table, or RefusedStatement listing the tables there are."""
    entry = _lookup(cursor, table)
    return {k: entry[k] for k in _SUMMARY}


def qualified(cursor: duckdb.DuckDBPyConnection, table: str) -> str:
    """The table's name as SQL, each part quoted (checked against the catalog first)."""
    entry = _lookup(cursor, table)
    if entry["name"] == entry["base"]:
        return sql_identifier(entry["base"])
    return ".".join(sql_identifier(entry[k]) for k in ("db", "schema", "base"))


def describe(
    cursor: duckdb.DuckDBPyConnection, table: str, sample_rows: int, max_bytes: int
) -> dict:
    description = {**check_table(cursor, table), "column_list": columns(cursor, table)}
    if sample_rows:
        relation = cursor.sql(f"SELECT * FROM {qualified(cursor, table)} LIMIT {int(sample_rows)}")
        found = relation_columns(relation)
        rows = table_rows(relation.to_arrow_reader(sample_rows).read_all().to_batches())
        description["sample"] = cap_rows(found, rows, sample_rows, max_bytes).model_dump()
    return description


def statistics(cursor: duckdb.DuckDBPyConnection, table: str) -> list[dict]:
    """SUMMARIZE of the table: per column min, max, distinct estimate, mean, quartiles, nulls."""
    relation = cursor.sql(f"SUMMARIZE {qualified(cursor, table)}")
    names = relation.columns
    return [
        {name: json_value(value) for name, value in zip(names, row, strict=True)}
        for row in relation.fetchall()
    ]


CHEAT_SHEET = """\
# DuckDB SQL cheat sheet

- Explore: `DESCRIBE flights`, `SUMMARIZE flights`, `SELECT * FROM flights USING SAMPLE 10`.
- Start from the table: `FROM flights WHERE origin = 'JFK' SELECT carrier, dep_delay LIMIT 5`.
- Group by everything not aggregated: `SELECT origin, carrier, avg(dep_delay) FROM flights
  GROUP BY ALL ORDER BY ALL`.
- Filter groups and windows: `HAVING count(*) > 100`, `QUALIFY row_number() OVER
  (PARTITION BY origin ORDER BY dep_delay DESC) <= 3` (top 3 per group).
- Column sets: `SELECT * EXCLUDE (year, month)`, `SELECT COLUMNS('.*delay') FROM flights`,
  `SELECT max(COLUMNS('.*delay')) FROM flights`.
- Conditional aggregates: `count(*) FILTER (WHERE arr_delay > 15)`,
  `avg(arr_delay > 15)` (a boolean averages to a share).
- Percentiles: `median(x)`, `quantile_cont(x, 0.9)`, `quantile_cont(x, [0.1, 0.5, 0.9])`.
- Arg-max: `arg_max(carrier, dep_delay)`, `max_by(tailnum, distance)`.
- Dates: `date_trunc('month', time_hour)`, `strftime(time_hour, '%Y-%m')`,
  `make_date(year, month, day)`, `dayname(d)`, `extract(hour FROM ts)`, `d + INTERVAL 7 DAY`.
- Pivot: `PIVOT flights ON origin USING count(*) GROUP BY carrier`.
- Strings: `ILIKE '%air%'`, `regexp_matches(s, '^N[0-9]+')`, `string_agg(name, ', ')`.
- Nulls: `coalesce(x, 0)`, `count(x)` skips NULLs, `x IS DISTINCT FROM y`.
- Keep results small: aggregate in SQL and `ORDER BY ... LIMIT n`; the server caps rows and bytes.
"""
