"""Charts of table-shaped results, without MCP: what to draw. A ChartRequest (kind, x, y, series,
aggregate, labels; all optional) is resolved against a result's columns into a ChartPlan, choosing
missing columns from their types and refusing, with the fix in the message, what cannot be drawn.

The rest of the pipeline: ``chart_queries`` bounds the points in SQL, ``chart_points`` turns the
bounded rows into points, ``chart_render`` draws the PNG.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, Field

from servers.results import Column
from servers.settings import ChartSettings

Kind = Literal["bar", "line", "scatter", "histogram"]
Aggregate = Literal["count", "sum", "avg", "min", "max"]
ColumnKind = Literal["number", "time", "category"]

DEFAULT_BINS = 30
_NUMBER_TYPE = re.compile(
    r"^(U?(TINYINT|SMALLINT|INTEGER|BIGINT|HUGEINT)|FLOAT|DOUBLE|REAL|DECIMAL(\(.*\))?"
    r"|u?int(8|16|32|64)|float(16|32|64)|U?Int(8|16|32|64)|Float(32|64))$"
)
_TIME_TYPE = re.compile(r"^(DATE|TIMESTAMP.*|DATETIME|datetime64.*|date32.*|timestamp.*)$")


def _one_or_more(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


# Each field's type and description, shared by ChartRequest and the tools that take its fields
# as arguments (the LLM reads these descriptions).
KindArg = Annotated[
    Literal["auto", "bar", "line", "scatter", "histogram"],
    Field(description="auto: from column types."),
]
XArg = Annotated[str | None, Field(description="Column.")]
YArg = Annotated[
    list[str] | None,
    BeforeValidator(_one_or_more),
    Field(description="Numeric columns."),
]
SeriesArg = Annotated[str | None, Field(description="Column of series.")]
AggregateArg = Annotated[
    Aggregate | None,
    Field(description="Of y per x."),
]
BinsArg = Annotated[int | None, Field(ge=2, description="Histogram bins.")]
TitleArg = Annotated[str | None, Field(max_length=200)]
XLabelArg = Annotated[str | None, Field(max_length=100)]
YLabelArg = Annotated[str | None, Field(max_length=100)]
XUnitArg = Annotated[str | None, Field(max_length=30, description="e.g. km")]
YUnitArg = Annotated[str | None, Field(max_length=30)]


class ChartRequest(BaseModel):
    """What to draw; every field is optional and chosen from the column types when omitted."""

    kind: KindArg = "auto"
    x: XArg = None
    y: YArg = None
    series: SeriesArg = None
    aggregate: AggregateArg = None
    bins: BinsArg = None
    title: TitleArg = None
    x_label: XLabelArg = None
    y_label: YLabelArg = None
    x_unit: XUnitArg = None
    y_unit: YUnitArg = None


class ChartError(ValueError):
    """The request does not fit the data; the message says how to fix it."""


@dataclass(frozen=True)
class ChartPlan:
    """A request resolved against the result's columns."""

    kind: Kind
    x: Column
    y: tuple[Column, ...]
    series: Column | None
    aggregate: Aggregate | None
    bins: int
    request: ChartRequest
    line_if_ordered: bool = False  # auto with a numeric x: a line when x turns out unique

    @property
    def x_kind(self) -> ColumnKind:
        return classify(self.x.type)

    @property
    def y_names(self) -> list[str]:
        """The names of the plotted values, as the data and legend show them."""
        if self.kind == "histogram" or self.aggregate == "count":
            return ["count"]
        if self.aggregate:
            return [f"{self.aggregate}({c.name})" for c in self.y]
        return [c.name for c in self.y]


def classify(duckdb_or_pandas_type: str) -> ColumnKind:
    """number, time (dates and timestamps) or category (everything else, drawn as labels)."""
    name = duckdb_or_pandas_type.strip()
    if _NUMBER_TYPE.match(name):
        return "number"
    if _TIME_TYPE.match(name):
        return "time"
    return "category"


def resolve(request: ChartRequest, columns: list[Column], settings: ChartSettings) -> ChartPlan:
    """Pick the kind and the x, y and series columns; raise ChartError when they cannot fit."""
    if not columns:
        raise ChartError("The query returns no columns to chart.")
    x = _column(columns, request.x, "x")
    y = tuple(_column(columns, name, "y") for name in request.y or [])
    series = _column(columns, request.series, "series")
    kind = request.kind
    if kind == "auto":
        kind, x = _auto_kind(columns, x, y, series, request.aggregate)
    line_if_ordered = request.kind == "auto" and kind == "scatter"
    if kind == "histogram" and x is None and len(y) == 1:
        x, y = y[0], ()
    x = x or _default_x(kind, columns, y, series)
    if x is None:
        raise ChartError(
            f"No column fits the x axis of a {kind} chart. {_listing(columns)} Name one with x=..."
        )
    if not y and request.aggregate != "count" and kind != "histogram":
        y = _default_y(columns, x, series)
    if series is None and request.y is None and len(y) <= 1 and kind != "histogram":
        # The caller left the values to us: a spare category column splits them into series.
        series = next(
            (c for c in columns if c not in (x, *y) and classify(c.type) == "category"), None
        )
    plan = ChartPlan(
        kind=kind,
        x=x,
        y=y,
        series=series,
        aggregate=request.aggregate,
        bins=min(request.bins or DEFAULT_BINS, settings.max_bins),
        request=request,
        line_if_ordered=line_if_ordered,
    )
    _check(plan, columns, settings)
    return plan


def _column(columns: list[Column], name: str | None, role: str) -> Column | None:
    if name is None:
        return None
    exact = [c for c in columns if c.name == name]
    folded = [c for c in columns if c.name.casefold() == name.casefold()]
    if len(exact) == 1 or len(folded) == 1:
        return (exact or folded)[0]
    raise ChartError(f"The {role} column {name!r} is not in the result. {_listing(columns)}")


def _listing(columns: list[Column]) -> str:
    shown = ", ".join(f"{c.name} ({c.type})" for c in columns[:30])
    more = f" and {len(columns) - 30} more" if len(columns) > 30 else ""
    return f"The result's columns are: {shown}{more}."


def _of_kind(columns: list[Column], kind: ColumnKind, *skip: Column | None) -> list[Column]:
    return [c for c in columns if classify(c.type) == kind and c not in skip]


def _auto_kind(
    columns: list[Column],
    x: Column | None,
    y: tuple[Column, ...],
    series: Column | None,
    aggregate: Aggregate | None,
) -> tuple[Kind, Column | None]:
    """The kind that suits the column types: time → line, category → bar, numbers → scatter
    (a line when x turns out ordered and unique), one number alone → histogram.

    Without x: a time column if any; else the first column when it is a number and another
    number follows (scatter or line); else a category; else the only number (histogram).
    """
    if x is None and (aggregate == "count" or y):
        x = next((c for c in columns if c not in (*y, series)), None)
    elif x is None:
        times = _of_kind(columns, "time", series)
        categories = _of_kind(columns, "category", series)
        numbers = _of_kind(columns, "number", series)
        numeric_first = classify(columns[0].type) == "number" and len(numbers) > 1
        x = next(iter(times + (numbers if numeric_first else categories) + numbers), None)
    if x is None:
        return "bar", None
    x_kind = classify(x.type)
    if x_kind == "time":
        return "line", x
    if x_kind == "category" or aggregate:
        return "bar", x
    others = y or tuple(_of_kind(columns, "number", x, series))
    return ("scatter" if others else "histogram"), x


def _default_x(
    kind: Kind, columns: list[Column], y: tuple[Column, ...], series: Column | None
) -> Column | None:
    numbers = _of_kind(columns, "number", series, *y)
    times = _of_kind(columns, "time", series, *y)
    categories = _of_kind(columns, "category", series, *y)
    candidates = {
        "histogram": numbers,
        "scatter": numbers + times,
        "line": times + [c for c in columns if c not in (series, *y, *times)],
        "bar": categories + times + numbers,
    }[kind]
    return next(iter(candidates), None)


def _default_y(columns: list[Column], x: Column, series: Column | None) -> tuple[Column, ...]:
    numbers = _of_kind(columns, "number", x, series)
    return tuple(numbers[:1]) if series else tuple(numbers)


def _check(plan: ChartPlan, columns: list[Column], settings: ChartSettings) -> None:
    kind, x_kind = plan.kind, plan.x_kind
    numbers = ", ".join(c.name for c in _of_kind(columns, "number")) or "none"
    for column in plan.y:
        if classify(column.type) != "number":
            raise ChartError(
                f"The y column {column.name!r} is {column.type}, not a number, so it cannot be "
                f"plotted as a value. Numeric columns in the result: {numbers}. To count rows "
                "per category use kind='bar' with aggregate='count', or CAST the column in SQL."
            )
    if kind == "histogram":
        if x_kind != "number":
            raise ChartError(
                f"A histogram needs a numeric column; {plan.x.name!r} is {plan.x.type}. "
                f"Numeric columns: {numbers}. To count rows over time use kind='line' with "
                "aggregate='count'."
            )
        if plan.y or plan.aggregate:
            raise ChartError(
                "A histogram counts the values of one column (x): drop y and aggregate, or use "
                "kind='bar' to plot values per category."
            )
    if kind == "scatter":
        if x_kind == "category":
            raise ChartError(
                f"A scatter plot needs a numeric or time x; {plan.x.name!r} is {plan.x.type}. "
                "Use kind='bar' for values per category."
            )
        if plan.aggregate:
            raise ChartError("aggregate applies to bar and line charts, not scatter plots.")
    if kind != "histogram" and not plan.y and plan.aggregate != "count":
        raise ChartError(
            f"No numeric column to plot against {plan.x.name!r}. {_listing(columns)} Name one "
            "with y=..., or count rows with aggregate='count'."
        )
    if plan.aggregate == "count" and plan.y:
        raise ChartError("aggregate='count' counts rows per x: drop y.")
    if plan.series is not None and len(plan.y) > 1:
        raise ChartError(
            "Give either several y columns or a series column, not both: each makes the series."
        )
    if plan.series is not None and plan.series in (plan.x, *plan.y):
        raise ChartError("The series column must differ from the x and y columns.")
    if len(plan.y) > settings.max_series:
        raise ChartError(f"At most {settings.max_series} y columns fit in one chart.")
