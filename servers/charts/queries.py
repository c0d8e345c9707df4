"""How many points reach Python: SQL that wraps the caller's query as a subquery, so that
sampling (scatter), averaging into buckets (line), binning (histogram) and aggregation happen in
DuckDB. However many rows the query yields, at most ``max_points`` rows come back.

The caller's query is a CTE marked NOT MATERIALIZED: DuckDB streams it, never holds it whole.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import duckdb

from servers.charts.plan import ChartPlan
from servers.results import Rows
from servers.settings import ChartSettings
from servers.sql.engine import sql_identifier

Stage = Literal["first", "sample", "buckets", "bins"]

_SAMPLE_SEED = 42


@dataclass(frozen=True)
class Query:
    sql: str
    max_rows: int
    stage: Stage


def statement_body(statement: str) -> str:
    """The statement without its trailing semicolons and comments, ready to wrap as a subquery."""
    end = len(statement)
    for offset, kind in reversed(duckdb.tokenize(statement)):
        if kind != duckdb.token_type.comment and statement[offset] != ";":
            break
        end = offset
    return statement[:end].rstrip()


def first_query(plan: ChartPlan, source: str, settings: ChartSettings) -> Query:
    """The first query to run: the bins of a histogram, or the first max_points rows (plus one,
    to learn whether there are more)."""
    if plan.kind == "histogram":
        return Query(_bins_sql(plan, source, settings), plan.bins * settings.max_series, "bins")
    order = " ORDER BY x NULLS LAST" if plan.aggregate else ""
    sql = (
        f"{_points_cte(plan, source, settings)}\nSELECT {_point_columns(plan)}{_series_count(plan)}"
    )
    sql += f" FROM points{order} LIMIT {settings.max_points + 1}"
    return Query(sql, settings.max_points, "first")


def follow_up(plan: ChartPlan, source: str, settings: ChartSettings, page: Rows) -> Query | None:
    """When the first rows were cut by the points cap: a sample (scatter) or buckets (a line over
    numbers or time); bars and category lines keep the first rows."""
    if page.truncated_reason != "rows":
        return None
    if plan.kind == "scatter":
        sql = (
            f"{_points_cte(plan, source, settings)}\nSELECT {_point_columns(plan)}"
            f"{_series_count(plan)}, (SELECT count(*) FROM points) AS __rows FROM points "
            f"USING SAMPLE reservoir({settings.max_points} ROWS) REPEATABLE ({_SAMPLE_SEED})"
        )
        return Query(sql, settings.max_points, "sample")
    if plan.kind == "line" and plan.x_kind != "category":
        return Query(_buckets_sql(plan, source, settings), settings.max_points, "buckets")
    return None


def _series_expr(plan: ChartPlan) -> str:
    assert plan.series is not None
    return f"coalesce(CAST({sql_identifier(plan.series.name)} AS VARCHAR), 'NULL')"


def _points_cte(plan: ChartPlan, source: str, settings: ChartSettings) -> str:
    """CTEs ``source`` (the caller's query, never materialised) and ``points`` (x, y0.., s)."""
    x = sql_identifier(plan.x.name)
    picked = [f"CAST({x} AS VARCHAR) AS x" if plan.x_kind == "category" else f"{x} AS x"]
    picked += [f"CAST({sql_identifier(c.name)} AS DOUBLE) AS y{i}" for i, c in enumerate(plan.y)]
    ctes = [f"WITH source AS NOT MATERIALIZED (\n{statement_body(source)}\n)"]
    where = ""
    if plan.series is not None:
        picked.append(f"{_series_expr(plan)} AS s")
        # The largest series: most rows, then the largest total of |y|, then by name.
        total = f"sum(abs(CAST({sql_identifier(plan.y[0].name)} AS DOUBLE)))" if plan.y else "0"
        ctes.append(
            "series_rank AS (SELECT s, row_number() OVER (ORDER BY n DESC, total DESC NULLS "
            f"LAST, s) AS r FROM (SELECT {_series_expr(plan)} AS s, count(*) AS n, {total} AS "
            "total FROM source GROUP BY s))"
        )
        where = (
            f" WHERE {_series_expr(plan)} IN "
            f"(SELECT s FROM series_rank WHERE r <= {settings.max_series})"
        )
    ctes.append(f"picked AS NOT MATERIALIZED (SELECT {', '.join(picked)} FROM source{where})")
    if plan.aggregate is None:
        ctes.append("points AS NOT MATERIALIZED (SELECT * FROM picked)")
    else:
        values = (
            ["count(*) AS y0"]
            if plan.aggregate == "count"
            else [f"{plan.aggregate}(y{i}) AS y{i}" for i in range(len(plan.y))]
        )
        keys = "x, s" if plan.series is not None else "x"
        ctes.append(
            f"points AS NOT MATERIALIZED (SELECT {keys}, {', '.join(values)} FROM picked "
            f"GROUP BY {keys})"
        )
    return ",\n".join(ctes)


def value_count(plan: ChartPlan) -> int:
    return 1 if plan.aggregate == "count" else len(plan.y)


def _point_columns(plan: ChartPlan) -> str:
    names = ["x", *(f"y{i}" for i in range(value_count(plan)))]
    return ", ".join(names + (["s"] if plan.series is not None else []))


def _series_count(plan: ChartPlan) -> str:
    if plan.series is None:
        return ""
    return ", (SELECT count(*) FROM series_rank) AS __series"


def _buckets_sql(plan: ChartPlan, source: str, settings: ChartSettings) -> str:
    """Average y over equal-width buckets of x: max_points rows at most (shared by series)."""
    buckets = settings.max_points // (settings.max_series if plan.series is not None else 1)
    number = "CAST(x AS DOUBLE)" if plan.x_kind == "number" else "CAST(epoch_us(x) AS DOUBLE)"
    back = "avg(xv)" if plan.x_kind == "number" else "make_timestamp(CAST(avg(xv) AS BIGINT))"
    values = ", ".join(f"avg(y{i}) AS y{i}" for i in range(value_count(plan)))
    series = ", s" if plan.series is not None else ""
    return (
        f"{_points_cte(plan, source, settings)},\n"
        f"numbered AS NOT MATERIALIZED (SELECT *, {number} AS xv FROM points "
        "WHERE x IS NOT NULL),\n"
        "bounds AS (SELECT min(xv) AS lo, max(xv) AS hi FROM numbered)\n"
        f"SELECT {back} AS x, {values}{series}{_series_count(plan)}, "
        "sum(count(*)) OVER () AS __rows FROM numbered, bounds "
        f"GROUP BY least(CAST(floor((xv - lo) / nullif(hi - lo, 0) * {buckets}) AS BIGINT), "
        f"{buckets - 1}){series} ORDER BY x{series}"
    )


MAX_MAGNITUDE = 1e100  # beyond it a bin's width overflows; such values are left out, and said


def _bins_sql(plan: ChartPlan, source: str, settings: ChartSettings) -> str:
    """Count the finite values of x in equal-width bins (per series), with the values left out."""
    n = plan.bins
    series = ", s" if plan.series is not None else ""
    value = "CAST(x AS DOUBLE)"
    return (
        f"{_points_cte(plan, source, settings)},\n"
        f"valued AS NOT MATERIALIZED (SELECT CASE WHEN isfinite({value}) AND abs({value}) <= "
        f"{MAX_MAGNITUDE:g} THEN {value} END AS v"
        f"{series} FROM points),\n"
        "bounds AS (SELECT min(v) AS lo, max(v) AS hi, count(*) - count(v) AS missing "
        "FROM valued)\n"
        f"SELECT coalesce(b, 0) AS bin, lo + (hi - lo) * coalesce(b, 0) / {n} AS bin_start, "
        f"CASE WHEN hi = lo THEN hi + 1 ELSE lo + (hi - lo) * (coalesce(b, 0) + 1) / {n} END "
        f"AS bin_end, count(*) AS count{series}{_series_count(plan)}, any_value(missing) "
        "AS __missing FROM (SELECT least(CAST(floor((v - lo) / nullif(hi - lo, 0) * "
        f"{n}) AS BIGINT), {n - 1}) AS b, lo, hi, missing{series} FROM valued, bounds "
        f"WHERE v IS NOT NULL) GROUP BY b, lo, hi{series} ORDER BY bin{series}"
    )
