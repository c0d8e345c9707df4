"""From bounded rows to points to draw: typed values, the same data JSON-safe for the caller, and
notes saying what was sampled, averaged, binned or cut, and why.

``points_from_rows`` does the whole way for rows already in memory (a pipeline's table output),
planned exactly like a query, on a private in-memory DuckDB.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import duckdb

from servers.charts.plan import ChartError, ChartPlan, ChartRequest, ColumnKind, classify, resolve
from servers.charts.queries import Query, first_query, follow_up, value_count
from servers.lazy import lazy_module
from servers.results import Column, Rows, cap_rows, relation_columns
from servers.settings import ChartSettings

pa = lazy_module("pyarrow")  # loads with the first chart


@dataclass
class Points:
    """Bounded, typed values ready to draw, and the same data JSON-safe for the caller."""

    plan: ChartPlan
    x: list[Any]  # float, datetime or str; histograms: bin starts
    values: list[list[float]]  # one list per y name, NaN where missing
    series: list[str] | None
    notes: list[str] = field(default_factory=list)
    x_end: list[float] | None = None  # histograms: bin ends
    source_rows: int | None = None
    reduced: Literal["sampled", "bucketed", "binned", "cut"] | None = None
    columns: list[Column] = field(default_factory=list)
    rows: list[list[Any]] = field(default_factory=list)


def collect(plan: ChartPlan, query: Query, page: Rows, settings: ChartSettings) -> Points:
    """Typed points from a page of a plan's query, with notes on what was reduced and why."""
    names = [c.name for c in page.columns]
    index = {name: i for i, name in enumerate(names)}
    rows = page.rows
    notes: list[str] = []
    extra = {name: rows[0][index[name]] if rows else None for name in names if name[:2] == "__"}
    if query.stage == "bins":
        return _histogram_points(plan, page, index, extra, settings)
    x = [_typed(row[index["x"]], plan.x_kind) for row in rows]
    values = [[_number(row[index[f"y{i}"]]) for row in rows] for i in range(value_count(plan))]
    series = [row[index["s"]] for row in rows] if plan.series is not None else None
    points = Points(plan=plan, x=x, values=values, series=series, notes=notes)
    if plan.line_if_ordered and query.stage == "first" and not page.truncated:
        keys = list(zip(x, series or [None] * len(x), strict=True))
        if len(set(keys)) == len(keys) and None not in x:
            points.plan = plan = replace(plan, kind="line", line_if_ordered=False)
    if query.stage == "sample":
        points.reduced, points.source_rows = "sampled", extra.get("__rows")
        notes.append(
            f"A random sample of {len(rows):,} of the {points.source_rows:,} rows is plotted "
            f"(limit {settings.max_points:,} points)."
        )
    elif query.stage == "buckets":
        points.reduced, points.source_rows = "bucketed", extra.get("__rows")
        notes.append(
            f"The {points.source_rows:,} rows were averaged into {len(rows):,} buckets of "
            f"{plan.x.name} (limit {settings.max_points:,} points)."
        )
    elif page.truncated:
        points.reduced = "cut"
        notes.append(
            f"Only the first {len(rows):,} rows are plotted: "
            + (
                f"the result has more than {settings.max_points:,} (limit max_points). "
                "Aggregate in SQL or with aggregate=... to plot all of it."
                if page.truncated_reason == "rows"
                else "the data passed the byte limit of one result. Select fewer columns."
            )
        )
    _check_drawable(points)
    _note_series(points, extra.get("__series"), settings)
    _keep_data(points, page, index)
    if plan.kind == "bar":
        _limit_bars(points, settings)
    return points


# Beyond these a chart's axis (its span and margins) overflows or leaves matplotlib's calendar.
MAX_MAGNITUDE = 1e100
FIRST_YEAR, LAST_YEAR = 1000, 9000


def _check_drawable(points: Points) -> None:
    """Refuse values no chart can draw (ChartError, saying which column and what to do)."""
    plan = points.plan
    named = [(plan.x.name, points.x)] if plan.x_kind == "number" else []
    named += list(zip(plan.y_names, points.values, strict=False))
    for name, values in named:
        extreme = next((v for v in values if isinstance(v, float) and abs(v) > MAX_MAGNITUDE), None)
        if extreme is not None:
            raise ChartError(
                f"Column {name!r} holds {extreme:g}, beyond what a chart can draw "
                f"(±{MAX_MAGNITUDE:g}). Filter such values out (WHERE abs({name}) < "
                f"{MAX_MAGNITUDE:g}) or scale them."
            )
    if plan.x_kind == "time":
        late = next(
            (t for t in points.x if t is not None and not FIRST_YEAR <= t.year <= LAST_YEAR), None
        )
        if late is not None:
            raise ChartError(
                f"Column {plan.x.name!r} holds {late.isoformat()}, outside the years a chart can "
                f"draw ({FIRST_YEAR}-{LAST_YEAR}). Filter such times out with WHERE."
            )


def _histogram_points(
    plan: ChartPlan, page: Rows, index: dict, extra: dict, settings: ChartSettings
) -> Points:
    rows = page.rows
    series = [row[index["s"]] for row in rows] if plan.series is not None else None
    points = Points(
        plan=plan,
        x=[_number(row[index["bin_start"]]) for row in rows],
        x_end=[_number(row[index["bin_end"]]) for row in rows],
        values=[[_number(row[index["count"]]) for row in rows]],
        series=series,
        reduced="binned",
    )
    points.source_rows = int(sum(points.values[0]))
    missing = extra.get("__missing") or 0
    points.notes.append(f"{points.source_rows:,} values in {plan.bins} bins.")
    if missing:
        points.notes.append(
            f"{missing:,} null or non-finite values are left out (beyond ±1e100 counts as "
            "non-finite)."
        )
    _note_series(points, extra.get("__series"), settings)
    _keep_data(points, page, index)
    return points


def _note_series(points: Points, total: int | None, settings: ChartSettings) -> None:
    if total and total > settings.max_series:
        points.notes.append(
            f"Only the {settings.max_series} largest of {total:,} series of "
            f"{points.plan.series.name} are shown (limit max_series)."
        )


def _limit_bars(points: Points, settings: ChartSettings) -> None:
    """Refuse overlapping bars; keep the first max_bars categories."""
    keys = list(zip(points.x, points.series or [None] * len(points.x), strict=True))
    repeated = next((key for key, n in Counter(keys).items() if n > 1), None)
    if repeated is not None:
        x = points.plan.x.name
        raise ChartError(
            f"The x column {x!r} repeats the value {repeated[0]!r}, so bars would overlap. "
            f"Pass aggregate='avg' (or sum, count, min, max), GROUP BY {x} in the SQL, or "
            "name a series column."
        )
    categories = list(dict.fromkeys(points.x))
    if len(categories) > settings.max_bars:
        keep = set(categories[: settings.max_bars])
        mask = [value in keep for value in points.x]

        def kept(values: list) -> list:
            return [v for v, m in zip(values, mask, strict=True) if m]

        points.x, points.rows = kept(points.x), kept(points.rows)
        points.values = [kept(values) for values in points.values]
        points.series = kept(points.series) if points.series is not None else None
        points.reduced = "cut"
        points.notes.append(
            f"Only the first {settings.max_bars} of {len(categories):,} categories are shown "
            "(limit max_bars)."
        )


def _keep_data(points: Points, page: Rows, index: dict[str, int]) -> None:
    """The plotted rows, JSON-safe, under the real column names (internal columns dropped)."""
    plan = points.plan
    renames = {"x": plan.x.name, "s": plan.series.name if plan.series else "s"}
    renames |= {f"y{i}": name for i, name in enumerate(plan.y_names)}
    kept = [c for c in page.columns if c.name[:2] != "__" and c.name != "bin"]
    points.columns = [Column(name=renames.get(c.name, c.name), type=c.type) for c in kept]
    points.rows = [[row[index[c.name]] for c in kept] for row in page.rows]


def _number(value: Any) -> float:
    if value is None or isinstance(value, bool):
        return math.nan if value is None else float(value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        return math.nan
    return number if math.isfinite(number) else math.nan


def _typed(value: Any, kind: ColumnKind) -> Any:
    if value is None:
        return None
    if kind == "number":
        return _number(value)
    if kind == "time":
        return _instant(value)
    return str(value)


def _instant(value: Any) -> dt.datetime | None:
    """A naive UTC datetime from an ISO 8601 date or timestamp (None when it is not one)."""
    if isinstance(value, dt.datetime):
        moment = value
    elif isinstance(value, dt.date):
        moment = dt.datetime.combine(value, dt.time())
    else:
        try:
            moment = dt.datetime.fromisoformat(str(value))
        except ValueError:
            return None
    if moment.tzinfo is not None:
        moment = moment.astimezone(dt.UTC).replace(tzinfo=None)
    return moment


def points_from_rows(
    columns: list[Column],
    rows: list[list[Any]],
    request: ChartRequest,
    settings: ChartSettings,
    max_bytes: int,
) -> Points:
    """Points from rows already in memory (e.g. a pipeline's table output shaped by
    ``shape_output``), planned exactly like a query, on a private in-memory DuckDB.

    Blocking: call it in a worker thread. Raises ChartError when the request does not fit.
    """
    table = _arrow_table(columns, rows)
    with duckdb.connect(config={"enable_external_access": False, "threads": 1}) as con:
        con.register("chart_input", table)
        source = "SELECT * FROM chart_input"
        plan = resolve(request, relation_columns(con.sql(source)), settings)
        query = first_query(plan, source, settings)
        page = _page(con, query, max_bytes)
        follow = follow_up(plan, source, settings, page)
        if follow is not None:
            query, page = follow, _page(con, follow, max_bytes)
        return collect(plan, query, page, settings)


def _page(con: duckdb.DuckDBPyConnection, query: Query, max_bytes: int) -> Rows:
    relation = con.sql(query.sql)  # every plan's SQL is bounded: fetching all of it is safe
    return cap_rows(relation_columns(relation), relation.fetchall(), query.max_rows, max_bytes)


def _arrow_table(columns: list[Column], rows: list[list[Any]]) -> pa.Table:
    """JSON-safe rows as Arrow columns typed by kind: numbers, timestamps or text."""
    arrays = []
    for i, column in enumerate(columns):
        values = [row[i] for row in rows]
        kind = classify(column.type)
        if kind == "number":
            numbers = [
                None if v is None else v if isinstance(v, int) else _number(v) for v in values
            ]
            arrays.append(pa.array(numbers, pa.int64() if _all_int(numbers) else pa.float64()))
        elif kind == "time":
            arrays.append(pa.array([_instant(v) for v in values], pa.timestamp("us")))
        else:
            arrays.append(pa.array([None if v is None else str(v) for v in values], pa.string()))
    names = [c.name for c in columns]
    return pa.Table.from_arrays(arrays, names=names) if names else pa.table({})


def _all_int(values: list[Any]) -> bool:
    return all(v is None or (isinstance(v, int) and not isinstance(v, bool)) for v in values)
