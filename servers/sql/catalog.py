"""What is in the database: tables, columns, samples and statistics, read from DuckDB's catalog.

Names passed in by a caller are checked against the catalog before they reach any SQL.
"""

import duckdb

from servers.results import cap_rows, json_value, relation_columns
from servers.sql.engine import sql_identifier
from servers.sql.gate import RefusedStatement
from servers.sql.result_store import table_rows

_TABLES_SQL = """
    SELECT t.name, t.kind, t.comment, coalesce(s.estimated_size, 0) AS row_estimate,
           (SELECT count(*) FROM duckdb_columns() c
             WHERE c.table_name = t.name AND c.schema_name = t.schema_name) AS columns
    FROM (
        SELECT table_name AS name, schema_name, 'table' AS kind, comment FROM duckdb_tables()
        UNION ALL
        SELECT view_name, schema_name, 'view', comment FROM duckdb_views() WHERE NOT internal
    ) t
    LEFT JOIN duckdb_tables() s ON s.table_name = t.name AND s.schema_name = t.schema_name
    WHERE t.schema_name = current_schema() AND t.name ILIKE coalesce(?, '%')
    ORDER BY t.name
"""

_COLUMNS_SQL = """
    SELECT column_name, data_type, is_nullable, comment FROM duckdb_columns()
    WHERE table_name = ? AND schema_name = current_schema() ORDER BY column_index
"""


def tables(cursor: duckdb.DuckDBPyConnection, pattern: str | None, detail: str) -> list[dict]:
    rows = cursor.execute(_TABLES_SQL, [pattern]).fetchall()
    names = ["name", "kind", "comment", "row_estimate", "columns"]
    found = [dict(zip(names, row, strict=True)) for row in rows]
    if detail == "names":
        return [{"name": t["name"]} for t in found]
    if detail == "full":
        for table in found:
            table["column_list"] = columns(cursor, table["name"])
    return found


def columns(cursor: duckdb.DuckDBPyConnection, table: str, strict: bool = False) -> list[dict]:
    if strict:
        check_table(cursor, table)
    rows = cursor.execute(_COLUMNS_SQL, [table]).fetchall()
    return [
        {"name": name, "type": kind, "nullable": nullable, "comment": comment}
        for name, kind, nullable, comment in rows
    ]


def check_table(cursor: duckdb.DuckDBPyConnection, table: str) -> dict:
    """The catalog entry of table, or RefusedStatement listing the tables there are."""
    known = {t["name"]: t for t in tables(cursor, None, "summary")}
    if table not in known:
        raise RefusedStatement(
            f"There is no table or view named {table!r}. Known: {', '.join(sorted(known))}."
        )
    return known[table]


def describe(
    cursor: duckdb.DuckDBPyConnection, table: str, sample_rows: int, max_bytes: int
) -> dict:
    description = {**check_table(cursor, table), "column_list": columns(cursor, table)}
    if sample_rows:
        relation = cursor.sql(f"SELECT * FROM {sql_identifier(table)} LIMIT {int(sample_rows)}")
        found = relation_columns(relation)
        rows = table_rows(relation.to_arrow_reader(sample_rows).read_all().to_batches())
        description["sample"] = cap_rows(found, rows, sample_rows, max_bytes).model_dump()
    return description


def statistics(cursor: duckdb.DuckDBPyConnection, table: str) -> list[dict]:
    """SUMMARIZE of the table: per column min, max, distinct estimate, mean, quartiles, nulls."""
    check_table(cursor, table)
    relation = cursor.sql(f"SUMMARIZE {sql_identifier(table)}")
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
