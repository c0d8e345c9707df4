"""Charts without MCP: column choice from types, SQL that bounds the points, and the PNG, on the
real sample data (a plain read-only DuckDB connection) and on pipeline-shaped rows."""

import datetime as dt
import io
import math
import shutil

import duckdb
import pandas as pd
import pytest
from PIL import Image

from servers.charts.plan import ChartError, ChartRequest, classify, resolve
from servers.charts.points import collect, points_from_rows
from servers.charts.queries import first_query, follow_up, statement_body
from servers.charts.render import render_chart
from servers.pipelines.registry import shape_output
from servers.results import Column, cap_rows, relation_columns
from servers.sample_data import SAMPLE_FILE, ensure_sample_database
from servers.settings import ChartSettings

SETTINGS = ChartSettings()
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(png: bytes) -> tuple[int, int]:
    """Width and height from the IHDR chunk, after checking the PNG signature."""
    assert png[:8] == PNG_SIGNATURE and png[12:16] == b"IHDR"
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


def assert_sensible_png(png: bytes, settings: ChartSettings = SETTINGS) -> None:
    assert png_size(png) == (settings.width_px, settings.height_px)
    assert 5_000 < len(png) < 1_000_000
    Image.open(io.BytesIO(png)).verify()  # a decoder accepts every chunk


@pytest.fixture(scope="module")
def flights(data_dir, tmp_path_factory):
    """A plain read-only connection to a private copy of the sample database (the served copy is
    opened once per process with the engine's locked configuration)."""
    copy = tmp_path_factory.mktemp("charts") / SAMPLE_FILE
    shutil.copyfile(ensure_sample_database(data_dir), copy)
    with duckdb.connect(str(copy), read_only=True) as con:
        yield con


def plan_for(con: duckdb.DuckDBPyConnection, sql: str, **request):
    return resolve(ChartRequest(**request), relation_columns(con.sql(sql)), SETTINGS)


def chart_of(con: duckdb.DuckDBPyConnection, sql: str, settings=SETTINGS, **request):
    """The chart of sql, run the way the sql server runs it (minus the server)."""
    plan = resolve(ChartRequest(**request), relation_columns(con.sql(sql)), settings)
    query = first_query(plan, sql, settings)
    page = _page(con, query)
    follow = follow_up(plan, sql, settings, page)
    if follow is not None:
        query, page = follow, _page(con, follow)
    return render_chart(collect(plan, query, page, settings), settings)


def _page(con, query):
    relation = con.sql(query.sql)
    return cap_rows(relation_columns(relation), relation.fetchall(), query.max_rows, 200_000)


def test_duckdb_and_pandas_types_are_numbers_times_or_categories():
    for name in ("BIGINT", "DOUBLE", "DECIMAL(18,3)", "UTINYINT", "int64", "Float64"):
        assert classify(name) == "number", name
    for name in ("DATE", "TIMESTAMP", "TIMESTAMP WITH TIME ZONE", "datetime64[ns]"):
        assert classify(name) == "time", name
    for name in ("VARCHAR", "BOOLEAN", "TIME", "object", "INTEGER[]"):
        assert classify(name) == "category", name


def test_auto_picks_the_kind_and_columns_from_the_column_types(flights):
    by_day = plan_for(flights, "SELECT time_hour, origin, dep_delay FROM flights")
    assert (by_day.kind, by_day.x.name, [c.name for c in by_day.y]) == (
        "line",
        "time_hour",
        ["dep_delay"],
    )
    assert by_day.series.name == "origin"
    by_carrier = plan_for(flights, "SELECT carrier, avg(arr_delay) FROM flights GROUP BY ALL")
    assert (by_carrier.kind, by_carrier.x.name) == ("bar", "carrier")
    pairs = plan_for(flights, "SELECT distance, air_time FROM flights")
    assert (pairs.kind, pairs.x.name, pairs.y[0].name) == ("scatter", "distance", "air_time")
    alone = plan_for(flights, "SELECT dep_delay FROM flights")
    assert (alone.kind, alone.x.name, alone.y) == ("histogram", "dep_delay", ())


def test_auto_with_an_ordered_unique_numeric_x_draws_a_line_not_a_scatter(flights):
    chart = chart_of(
        flights,
        "SELECT month, avg(dep_delay) AS dep, avg(arr_delay) AS arr FROM flights GROUP BY ALL "
        "ORDER BY month",
    )
    assert chart.data.kind == "line"
    assert chart.data.y == ["dep", "arr"]
    assert chart.data.row_count == 12


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        ({"x": "nope"}, "The x column 'nope' is not in the result"),
        ({"y": "carrier"}, "The y column 'carrier' is VARCHAR, not a number"),
        ({"kind": "histogram", "x": "carrier"}, "A histogram needs a numeric column"),
        ({"kind": "scatter", "x": "carrier"}, "A scatter plot needs a numeric or time x"),
        ({"y": ["dep_delay", "arr_delay"], "series": "origin"}, "not both"),
        ({"aggregate": "count", "y": "dep_delay"}, "aggregate='count' counts rows"),
    ],
)
def test_requests_that_cannot_fit_the_data_say_how_to_fix_them(flights, request_, message):
    sql = "SELECT carrier, origin, dep_delay, arr_delay FROM flights"
    with pytest.raises(ChartError, match=message) as error:
        plan_for(flights, sql, **request_)
    assert "\n" not in str(error.value)


def test_column_names_match_without_regard_to_case(flights):
    plan = plan_for(flights, "SELECT carrier, dep_delay FROM flights", x="CARRIER", y="Dep_Delay")
    assert (plan.x.name, plan.y[0].name) == ("carrier", "dep_delay")


def test_bars_that_would_overlap_are_refused_with_the_aggregate_to_use(flights):
    with pytest.raises(ChartError, match="repeats the value .* aggregate='avg'"):
        chart_of(flights, "SELECT carrier, dep_delay FROM flights LIMIT 100", kind="bar")
    chart = chart_of(flights, "SELECT carrier, dep_delay FROM flights", aggregate="avg")
    assert chart.data.kind == "bar" and chart.data.y == ["avg(dep_delay)"]
    assert chart.data.row_count == 16


def test_the_callers_statement_is_wrapped_whole_whatever_its_ending():
    assert statement_body("SELECT 1 ;  \n; ") == "SELECT 1"
    assert statement_body("SELECT ';' AS a -- x;") == "SELECT ';' AS a"
    assert statement_body("SELECT 1; -- done") == "SELECT 1"
    with duckdb.connect() as con:
        for sql in (
            "SELECT 1 AS a, 2 AS b -- trailing comment",
            "SELECT 1 AS a, 2 AS b; -- done",
            "SELECT 1 AS a, /* two */ 2 AS b /* end */;",
        ):
            assert chart_of(con, sql, kind="bar").data.rows == [[1, 2.0]], sql


def test_a_big_scatter_is_sampled_in_sql_and_says_so(flights):
    chart = chart_of(flights, "SELECT distance, air_time FROM flights")
    assert (chart.data.reduced, chart.data.source_rows) == ("sampled", 336_776)
    assert chart.data.row_count == SETTINGS.max_points
    assert "random sample of 2,000 of the 336,776 rows" in chart.data.notes[0]


def test_a_long_line_is_averaged_into_buckets_and_says_so(flights):
    chart = chart_of(flights, "SELECT time_hour, dep_delay FROM flights")
    assert chart.data.reduced == "bucketed" and chart.data.source_rows == 336_776
    assert chart.data.row_count <= SETTINGS.max_points
    assert "averaged into" in chart.data.notes[0]


def test_a_histogram_counts_every_value_in_sql_and_says_what_it_left_out(flights):
    chart = chart_of(flights, "SELECT dep_delay FROM flights", bins=40)
    counted = sum(row[2] for row in chart.data.rows)
    [(total, missing)] = flights.sql(
        "SELECT count(dep_delay), count(*) - count(dep_delay) FROM flights"
    ).fetchall()
    assert counted == total == chart.data.source_rows
    assert chart.data.row_count <= 40
    assert f"{missing:,} null or non-finite values are left out" in " ".join(chart.data.notes)


def test_too_many_bars_or_series_are_cut_to_the_limits_with_a_note(flights):
    small = ChartSettings(max_bars=5, max_series=2)
    bars = chart_of(
        flights, "SELECT dest, count(*) AS n FROM flights GROUP BY ALL ORDER BY n DESC", small
    )
    assert bars.data.row_count == 5 and bars.data.reduced == "cut"
    assert "first 5 of 105 categories" in bars.data.notes[0]
    lines = chart_of(
        flights,
        "SELECT month, carrier, dep_delay FROM flights",
        small,
        kind="line",
        series="carrier",
        aggregate="avg",
    )
    assert {row[2] for row in lines.data.rows} == {"UA", "B6"}  # the two with the most rows
    assert "Only the 2 largest of 16 series" in " ".join(lines.data.notes)


@pytest.mark.parametrize(
    ("kind", "sql"),
    [
        ("bar", "SELECT origin, count(*) AS flights FROM flights GROUP BY ALL"),
        ("line", "SELECT time_hour::DATE AS day, avg(dep_delay) AS delay FROM flights GROUP BY 1"),
        ("scatter", "SELECT distance, air_time, origin FROM flights"),
        ("histogram", "SELECT arr_delay FROM flights"),
    ],
)
def test_each_kind_renders_a_sensible_png_with_a_one_line_description(flights, kind, sql):
    chart = chart_of(flights, sql, kind=kind, title="A title", y_unit="min")
    assert_sensible_png(chart.png)
    assert chart.data.kind == kind and chart.data.title == "A title"
    assert "\n" not in chart.description and chart.description


def test_an_empty_result_still_draws_a_chart_that_says_so(flights):
    chart = chart_of(flights, "SELECT carrier, dep_delay FROM flights WHERE false")
    assert_sensible_png(chart.png)
    assert "returned no rows" in chart.description


def test_pipeline_shaped_rows_chart_the_same_way_as_a_query():
    frame = pd.DataFrame(
        {
            "day": pd.date_range("2024-01-01", periods=30, freq="D"),
            "carrier": ["AA", "UA", "DL"] * 10,
            "delay": [float(i % 7) if i != 4 else math.nan for i in range(30)],
        }
    )
    shaped = shape_output(frame, 500, 200_000)
    columns = [Column(**column) for column in shaped["columns"]]
    points = points_from_rows(columns, shaped["rows"], ChartRequest(), SETTINGS, 200_000)
    chart = render_chart(points, SETTINGS)
    assert (chart.data.kind, chart.data.x, chart.data.series) == ("line", "day", "carrier")
    assert chart.data.row_count == 30
    assert_sensible_png(chart.png)
    histogram = points_from_rows(
        columns, shaped["rows"], ChartRequest(kind="histogram", x="delay"), SETTINGS, 200_000
    )
    assert histogram.source_rows == 29  # the NaN (a missing value) is left out


def test_rows_with_iso_timestamps_and_offsets_plot_as_times():
    columns = [Column(name="at", type="TIMESTAMP WITH TIME ZONE"), Column(name="v", type="DOUBLE")]
    rows = [["2024-01-01T00:00:00+02:00", 1.0], ["2024-01-01T01:00:00+00:00", 2.0]]
    points = points_from_rows(columns, rows, ChartRequest(), SETTINGS, 200_000)
    assert points.plan.kind == "line"
    assert points.x == [dt.datetime(2023, 12, 31, 22), dt.datetime(2024, 1, 1, 1)]
