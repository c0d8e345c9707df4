"""Drawing a chart: points to a PNG with matplotlib's Agg canvas, a one-line description of what
it shows, and ``ChartRenderer``, which draws in worker threads within a time budget.

Each chart is its own ``Figure`` on its own Agg canvas (no pyplot, no global state), so charts
can be drawn in separate threads.
"""

from __future__ import annotations

import datetime as dt
import io
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import anyio
from pydantic import BaseModel, Field

from servers.charts.plan import Kind
from servers.charts.points import Points
from servers.lazy import lazy_module
from servers.results import Column
from servers.settings import ChartSettings

if TYPE_CHECKING:
    from matplotlib.axes import Axes

# matplotlib loads with the first chart, not with the server.
mdates = lazy_module("matplotlib.dates")
ticker = lazy_module("matplotlib.ticker")

_DPI = 100
_LABEL_CHARS = 24
_MARKERS_UP_TO = 60


class ChartData(BaseModel):
    """What a chart shows, as data: the plotted rows and how they were bounded."""

    kind: Kind
    title: str
    description: str = Field(description="One line saying what the chart shows.")
    x: str = Field(description="Column on the x axis.")
    y: list[str] = Field(description="Plotted value columns (histograms: count).")
    series: str | None = Field(None, description="Column whose values are the series.")
    columns: list[Column] = Field(description="Columns of `rows`.")
    rows: list[list[Any]] = Field(description="The plotted rows, JSON-safe.")
    row_count: int
    source_rows: int | None = Field(
        None, description="Rows (histograms: values) the plotted data stands for, when reduced."
    )
    reduced: Literal["sampled", "bucketed", "binned", "cut"] | None = Field(
        None, description="How the data was bounded to the points cap, if it was."
    )
    notes: list[str] = Field(description="What was sampled, averaged, binned or cut, and why.")


@dataclass(frozen=True)
class Chart:
    png: bytes
    data: ChartData

    @property
    def description(self) -> str:
        return self.data.description


class RenderTimeout(TimeoutError):
    """Drawing ran past its budget and was abandoned."""


class ChartRenderer:
    """Draws charts in worker threads: at most ``render_concurrency`` at once, each within
    ``render_timeout_s``, so the event loop never waits on matplotlib."""

    def __init__(self, settings: ChartSettings):
        self.settings = settings
        self._limiter = anyio.CapacityLimiter(settings.render_concurrency)

    async def draw(self, points: Points) -> Chart:
        budget = self.settings.render_timeout_s
        async with self._limiter:
            try:
                with anyio.fail_after(budget):
                    return await anyio.to_thread.run_sync(
                        render_chart, points, self.settings, abandon_on_cancel=True
                    )
            except TimeoutError:
                raise RenderTimeout(
                    f"Drawing the chart took longer than {budget:g} s and was abandoned. "
                    "Plot fewer points: aggregate in SQL or ask for fewer bins or series."
                ) from None


def render_chart(points: Points, settings: ChartSettings) -> Chart:
    """The chart's PNG and data (blocking: call it in a worker thread)."""
    plan = points.plan
    title = plan.request.title or _default_title(points)
    description = describe(points, title)
    data = ChartData(
        kind=plan.kind,
        title=title,
        description=description,
        x=plan.x.name,
        y=plan.y_names,
        series=plan.series.name if plan.series else None,
        columns=points.columns,
        rows=points.rows,
        row_count=len(points.rows),
        source_rows=points.source_rows,
        reduced=points.reduced,
        notes=points.notes,
    )
    return Chart(png=render_png(points, title, settings), data=data)


def render_png(points: Points, title: str, settings: ChartSettings) -> bytes:
    """The chart as PNG bytes, ``width_px`` by ``height_px``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    plan = points.plan
    figure = Figure(
        figsize=(settings.width_px / _DPI, settings.height_px / _DPI),
        dpi=_DPI,
        layout="constrained",
    )
    axes = figure.add_subplot()
    if points.x:
        {"bar": _bars, "line": _lines, "scatter": _scatter, "histogram": _histogram}[plan.kind](
            axes, points
        )
    else:
        axes.text(0.5, 0.5, "The query returned no rows.", ha="center", va="center")
        axes.set_xticks([])
        axes.set_yticks([])
    figure.suptitle(title, fontsize=14)
    if points.notes:
        axes.set_title(" ".join(points.notes), fontsize=8, color="dimgray", loc="left", wrap=True)
    axes.set_xlabel(_axis_label(plan.request.x_label or plan.x.name, plan.request.x_unit))
    axes.set_ylabel(
        _axis_label(plan.request.y_label or _default_y_label(points), plan.request.y_unit)
    )
    axes.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: _number_text(v)))
    if plan.kind != "bar" and plan.x_kind == "number":
        axes.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: _number_text(v)))
    if plan.kind != "bar" and plan.x_kind == "time":
        locator = mdates.AutoDateLocator()
        axes.xaxis.set_major_locator(locator)
        axes.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    axes.grid(True, axis="y", alpha=0.3)
    axes.spines[["top", "right"]].set_visible(False)
    if len(_groups(points)) > 1:
        axes.legend(title=plan.series.name if plan.series else None, fontsize="small")
    buffer = io.BytesIO()
    FigureCanvasAgg(figure).print_png(buffer)
    return buffer.getvalue()


Group = tuple[str | None, list[Any], list[float]]


def _groups(points: Points) -> list[Group]:
    """(label, x values, y values) per plotted series: one per y column, or per series value."""
    names = points.plan.y_names
    if points.series is not None:
        groups = []
        for label in sorted(set(points.series)):
            rows = [i for i, s in enumerate(points.series) if s == label]
            groups.append((label, [points.x[i] for i in rows], [points.values[0][i] for i in rows]))
        return groups
    if len(points.values) > 1:
        return [(name, points.x, values) for name, values in zip(names, points.values, strict=True)]
    return [(None, points.x, points.values[0])]


def _bars(axes: Axes, points: Points) -> None:
    categories = list(dict.fromkeys(_label(v) for v in points.x))
    groups = _groups(points)
    width = 0.8 / len(groups)
    for i, (label, xs, ys) in enumerate(groups):
        heights = dict(zip(map(_label, xs), ys, strict=True))
        offsets = [p - 0.4 + width * (i + 0.5) for p in range(len(categories))]
        axes.bar(offsets, [heights.get(c, math.nan) for c in categories], width, label=label)
    _category_ticks(axes, categories)
    axes.axhline(0, color="black", linewidth=0.6)


def _lines(axes: Axes, points: Points) -> None:
    categories = points.plan.x_kind == "category"
    order = list(dict.fromkeys(_label(v) for v in points.x)) if categories else []
    for label, xs, ys in _groups(points):
        pairs = [(x, y) for x, y in zip(xs, ys, strict=True) if x is not None]
        if categories:
            pairs = [(order.index(_label(x)), y) for x, y in pairs]
        pairs.sort(key=lambda pair: pair[0])
        marker = "o" if len(pairs) <= _MARKERS_UP_TO else None
        axes.plot(
            [x for x, _ in pairs], [y for _, y in pairs], marker=marker, markersize=4, label=label
        )
    if categories:
        _category_ticks(axes, order)


def _scatter(axes: Axes, points: Points) -> None:
    size = 8 if len(points.x) > 500 else 20
    for label, xs, ys in _groups(points):
        pairs = [(x, y) for x, y in zip(xs, ys, strict=True) if x is not None]
        axes.scatter(
            [x for x, _ in pairs],
            [y for _, y in pairs],
            s=size,
            alpha=0.6,
            edgecolors="none",
            label=label,
        )


def _histogram(axes: Axes, points: Points) -> None:
    """Equal-width bins from the lowest start to the highest end; missing bins count zero."""
    assert points.x_end is not None
    lo, hi, n = min(points.x), max(points.x_end), points.plan.bins
    edges = [lo + (hi - lo) * k / n for k in range(n + 1)]
    groups = _groups(points)
    for label, starts, counts in groups:
        heights = [0.0] * n
        for start, count in zip(starts, counts, strict=True):
            heights[min(n - 1, round((start - lo) / (hi - lo) * n))] += count
        alpha = 0.85 if len(groups) == 1 else 0.45
        axes.stairs(heights, edges, fill=True, alpha=alpha, label=label)


def _category_ticks(axes: Axes, categories: list[str]) -> None:
    crowded = len(categories) > 12 or max((len(c) for c in categories), default=0) > 8
    labels = [c if len(c) <= _LABEL_CHARS else c[: _LABEL_CHARS - 1] + "…" for c in categories]
    axes.set_xticks(
        range(len(categories)),
        labels,
        rotation=45 if crowded else 0,
        ha="right" if crowded else "center",
    )


def _default_title(points: Points) -> str:
    plan = points.plan
    values = ", ".join(plan.y_names)
    per = f" per {plan.series.name}" if plan.series else ""
    return {
        "bar": f"{values} by {plan.x.name}{per}",
        "line": f"{values} over {plan.x.name}{per}",
        "scatter": f"{values} against {plan.x.name}{per}",
        "histogram": f"Distribution of {plan.x.name}{per}",
    }[plan.kind]


def _default_y_label(points: Points) -> str:
    names = points.plan.y_names
    if points.plan.kind == "histogram":
        return "count of rows"
    return names[0] if len(names) == 1 else "value"


def _axis_label(label: str, unit: str | None) -> str:
    return f"{label} ({unit})" if unit else label


def describe(points: Points, title: str) -> str:
    """One line saying what the chart shows, with its extremes, for readers without the image."""
    plan = points.plan
    kind = {"bar": "Bar chart", "line": "Line chart", "scatter": "Scatter plot"}.get(
        plan.kind, "Histogram"
    )
    notes = (" " + " ".join(points.notes)) if points.notes else ""
    if not points.x:
        return f"{kind} '{title}': the query returned no rows.{notes}"
    y_unit = f" {plan.request.y_unit}" if plan.request.y_unit else ""
    if plan.kind == "histogram":
        counts = points.values[0]
        fullest = max(range(len(counts)), key=counts.__getitem__)
        assert points.x_end is not None
        of = f" ({points.series[fullest]})" if points.series is not None else ""
        detail = (
            f"values of {plan.x.name} from {_number_text(min(points.x))} to "
            f"{_number_text(max(points.x_end))}; the fullest bin{of}, "
            f"{_number_text(points.x[fullest])} to {_number_text(points.x_end[fullest])}, holds "
            f"{int(counts[fullest]):,}"
        )
        return f"{kind} '{title}': {detail}.{notes}"
    extremes = _extremes(_groups(points))
    if extremes is None:
        return f"{kind} '{title}': {len(points.x):,} points, none with a value.{notes}"
    (low, low_at), (high, high_at) = extremes
    span = ""
    if plan.kind != "bar" and plan.x_kind != "category":
        known = [x for x in points.x if x is not None]
        if known:
            span = f" over {plan.x.name} from {_label(min(known))} to {_label(max(known))}"
    count = len(set(points.x)) if plan.kind == "bar" else len(points.x)
    unit = "categories" if plan.kind == "bar" else "points"
    return (
        f"{kind} '{title}': {count:,} {unit}{span}; highest {_number_text(high)}{y_unit} at "
        f"{high_at}, lowest {_number_text(low)}{y_unit} at {low_at}.{notes}"
    )


def _extremes(groups: list[Group]) -> tuple[tuple[float, str], tuple[float, str]] | None:
    found = [
        (y, _label(x) + (f" ({label})" if label and len(groups) > 1 else ""))
        for label, xs, ys in groups
        for x, y in zip(xs, ys, strict=True)
        if not math.isnan(y)
    ]
    if not found:
        return None
    return min(found, key=lambda f: f[0]), max(found, key=lambda f: f[0])


def _label(value: Any) -> str:
    """A short label for an x value: integral numbers without '.0', dates without midnight."""
    if value is None:
        return "NULL"
    if isinstance(value, float):
        return _number_text(value)
    if isinstance(value, dt.datetime):
        if value.time() == dt.time():
            return value.date().isoformat()
        return value.isoformat(sep=" ", timespec="minutes")
    return str(value)


def _number_text(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if abs(value) >= 1_000 or value == int(value):
        return f"{value:,.0f}"
    return f"{value:.4g}"
