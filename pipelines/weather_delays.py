"""Weather delays: how one weather variable at the origin airport relates to departure delays.

Answers questions such as "do flights leave later in low visibility?", "how much does rain
delay departures at LGA?" or "are delays worse on windy hours?". Each flight is matched to the
hourly weather observation at its origin airport for its scheduled departure hour (origin and
time_hour); flights without a matching observation, or whose observation lacks the chosen
variable, are left out. The flights are then split into n_buckets ranges of the chosen weather
variable: contiguous ranges that never split equal values, chosen so the buckets hold numbers of
flights as equal as possible (a variable dominated by one value, like precip = 0 or visib = 10,
gets that value as its own bucket). A flight with no departure delay recorded is counted as
cancelled; delays are in minutes (negative = early) over the flights that departed; a share is a
fraction between 0 and 1.

Units: temp and dewp in degrees F, humid in percent, wind_speed and wind_gust in mph, precip in
inches per hour, pressure in millibars, visib in miles.

Outputs:
- delay_by_weather_bucket: one row per bucket (1 = lowest values): value_min, value_max,
  flights, cancelled, cancelled_share, mean_dep_delay and dep_delayed_15_share (share of
  departures more than 15 minutes late).
- weather_delay_summary: a small dict with the variable, the number of flights matched, the
  Pearson correlation between the variable and the departure delay across individual departed
  flights, and the buckets with the worst and best mean departure delay.
"""

from __future__ import annotations

from typing import Literal

import duckdb
from pydantic import BaseModel, Field

from pipelines.summary import plain_number as _clean
from servers.lazy import lazy_module

# Loaded when a node first runs (in a run worker), not when the gateway reads `Inputs`.
np = lazy_module("numpy")
pd = lazy_module("pandas")

Origin = Literal["EWR", "JFK", "LGA"]
WeatherVariable = Literal[
    "visib", "wind_speed", "wind_gust", "precip", "temp", "dewp", "humid", "pressure"
]

OUTPUTS: tuple[str, ...] = ("delay_by_weather_bucket", "weather_delay_summary")

# The only weather column names that may appear in SQL, with their units.
_UNITS = {
    "visib": "miles",
    "wind_speed": "mph",
    "wind_gust": "mph",
    "precip": "inches",
    "temp": "degrees F",
    "dewp": "degrees F",
    "humid": "percent",
    "pressure": "millibars",
}
_MAX_BUCKETS = 20

_BUCKET_COLUMNS = [
    "bucket",
    "value_min",
    "value_max",
    "flights",
    "cancelled",
    "cancelled_share",
    "mean_dep_delay",
    "dep_delayed_15_share",
]


class Inputs(BaseModel):
    """User inputs of the weather_delays pipeline."""

    origin: Origin | None = Field(
        default=None,
        description="Omit for all three.",
    )
    weather_variable: WeatherVariable = Field(
        default="visib",
        description="At departure.",
    )
    n_buckets: int = Field(
        default=5,
        ge=2,
        le=_MAX_BUCKETS,
        description="Ranges of the variable.",
    )


def _weather_join(origin: str | None, weather_variable: str) -> tuple[str, list]:
    """Validate the inputs; return a sub-query of (value, dep_delay) per flight, with params."""
    if weather_variable not in _UNITS:
        raise ValueError(
            f"weather_variable must be one of {', '.join(sorted(_UNITS))}; "
            f"got {weather_variable!r}."
        )
    column = weather_variable  # a whitelisted identifier, safe to place in SQL
    weather_filter, flight_filter, params = "", "", []
    if origin is not None:
        weather_filter, flight_filter = " AND origin = ?", " WHERE f.origin = ?"
        params = [origin, origin]
    # Two observations share an hour where clocks go back; average them.
    sql = f"""
        SELECT w.value, f.dep_delay
        FROM flights AS f
        JOIN (
            SELECT origin, time_hour, avg({column}) AS value
            FROM weather
            WHERE {column} IS NOT NULL{weather_filter}
            GROUP BY origin, time_hour
        ) AS w ON w.origin = f.origin AND w.time_hour = f.time_hour{flight_filter}
    """
    return sql, params


def _equal_size_partition(sizes: np.ndarray, n_buckets: int) -> np.ndarray:
    """Bucket number (0-based) of each sorted distinct value, splitting sizes into contiguous
    groups that minimise the sum of squared group sizes (the most equal split)."""
    m = len(sizes)
    k = min(n_buckets, m)
    if m == 0:
        return np.zeros(0, dtype="int64")
    prefix = np.concatenate([[0.0], np.cumsum(sizes, dtype="float64")])
    previous = np.full(m + 1, np.inf)
    previous[0] = 0.0
    choices = []
    for b in range(1, k + 1):
        current = np.full(m + 1, np.inf)
        choice = np.zeros(m + 1, dtype="int64")
        for j in range(b, m + 1):
            starts = np.arange(b - 1, j)
            costs = previous[b - 1 : j] + (prefix[j] - prefix[b - 1 : j]) ** 2
            best = int(np.argmin(costs))
            current[j] = costs[best]
            choice[j] = starts[best]
        choices.append(choice)
        previous = current
    buckets = np.zeros(m, dtype="int64")
    end = m
    for b in range(k, 0, -1):
        start = int(choices[b - 1][end])
        buckets[start:end] = b - 1
        end = start
    return buckets


def _bucket_label(row: pd.Series) -> str:
    """A readable bucket description such as '3: 0.5 to 2'."""
    low, high = float(row["value_min"]), float(row["value_max"])
    span = f"{low:g}" if low == high else f"{low:g} to {high:g}"
    return f"{int(row['bucket'])}: {span}"


def _describe_correlation(r: float | None, variable: str) -> str:
    if r is None:
        return "no correlation can be computed (too few flights or a constant variable)"
    size = abs(r)
    strength = (
        "very weak"
        if size < 0.1
        else "weak"
        if size < 0.3
        else "moderate"
        if size < 0.5
        else "strong"
    )
    direction = "longer" if r > 0 else "shorter"
    return (
        f"correlation with departure delay {r} ({strength}; higher {variable} goes with "
        f"{direction} delays)"
    )


def flights_by_weather_value(
    db: duckdb.DuckDBPyConnection, origin: Origin | None, weather_variable: WeatherVariable
) -> pd.DataFrame:
    """Flights, cancellations and departure delay totals per distinct weather value."""
    joined, params = _weather_join(origin, weather_variable)
    df = db.execute(
        f"""
        SELECT value,
               count(*) AS flights,
               count(*) FILTER (WHERE dep_delay IS NULL) AS cancelled,
               count(dep_delay) AS departed,
               coalesce(sum(dep_delay), 0)::DOUBLE AS total_dep_delay,
               count(*) FILTER (WHERE dep_delay > 15) AS delayed_15
        FROM ({joined}) AS j
        GROUP BY value ORDER BY value
        """,
        params,
    ).df()
    counts = ["flights", "cancelled", "departed", "delayed_15"]
    df[counts] = df[counts].astype("int64")
    df[["value", "total_dep_delay"]] = df[["value", "total_dep_delay"]].astype("float64")
    return df.reset_index(drop=True)


def delay_by_weather_bucket(flights_by_weather_value: pd.DataFrame, n_buckets: int) -> pd.DataFrame:
    """Flights, cancellations and departure delays per bucket of the weather variable."""
    if not 2 <= n_buckets <= _MAX_BUCKETS:
        raise ValueError(f"n_buckets must be between 2 and {_MAX_BUCKETS}, got {n_buckets}.")
    values = flights_by_weather_value.copy()
    values["bucket"] = _equal_size_partition(values["flights"].to_numpy(), n_buckets) + 1
    grouped = values.groupby("bucket", sort=True).agg(
        value_min=("value", "min"),
        value_max=("value", "max"),
        flights=("flights", "sum"),
        cancelled=("cancelled", "sum"),
        departed=("departed", "sum"),
        total_dep_delay=("total_dep_delay", "sum"),
        delayed_15=("delayed_15", "sum"),
    )
    df = grouped.reset_index()
    departed = df["departed"].where(df["departed"] > 0)
    df["cancelled_share"] = (df["cancelled"] / df["flights"]).round(3)
    df["mean_dep_delay"] = (df["total_dep_delay"] / departed).round(2)
    df["dep_delayed_15_share"] = (df["delayed_15"] / departed).round(3)
    df[["value_min", "value_max"]] = df[["value_min", "value_max"]].round(2)
    types = {c: "float64" for c in _BUCKET_COLUMNS} | dict.fromkeys(
        ["bucket", "flights", "cancelled"], "int64"
    )
    df = df[_BUCKET_COLUMNS].astype(types)
    return df.reset_index(drop=True)


def weather_delay_correlation(
    db: duckdb.DuckDBPyConnection, origin: Origin | None, weather_variable: WeatherVariable
) -> float | None:
    """Pearson correlation between the weather variable and departure delay per departed flight."""
    joined, params = _weather_join(origin, weather_variable)
    (r,) = db.execute(f"SELECT corr(value, dep_delay) FROM ({joined}) AS j", params).fetchone()
    return _clean(r, 3)


def weather_delay_summary(
    db: duckdb.DuckDBPyConnection,
    origin: Origin | None,
    weather_variable: WeatherVariable,
    n_buckets: int,
    flights_by_weather_value: pd.DataFrame,
    delay_by_weather_bucket: pd.DataFrame,
    weather_delay_correlation: float | None,
) -> dict:
    """Variable, flights matched, correlation, and the worst and best buckets, as a dict."""
    where, params = ("", []) if origin is None else (" WHERE origin = ?", [origin])
    (total,) = db.execute(f"SELECT count(*) FROM flights{where}", params).fetchone()
    values = flights_by_weather_value
    matched, departed = int(values["flights"].sum()), int(values["departed"].sum())
    r = weather_delay_correlation
    summary: dict = {
        "origin": origin if origin is not None else "all",
        "weather_variable": weather_variable,
        "unit": _UNITS[weather_variable],
        "buckets_requested": int(n_buckets),
        "buckets": len(delay_by_weather_bucket),
        "flights": int(total),
        "flights_with_weather": matched,
        "departed_flights_with_weather": departed,
        "mean_dep_delay": None,
        "correlation": r,
        "worst_bucket": None,
        "worst_bucket_mean_dep_delay": None,
        "best_bucket": None,
        "best_bucket_mean_dep_delay": None,
    }
    if matched == 0:
        summary["message"] = (
            f"No flights have a {weather_variable} observation at their origin for their "
            "departure hour; try another variable or origin."
        )
        return summary
    if departed:
        summary["mean_dep_delay"] = _clean(values["total_dep_delay"].sum() / departed, 2)
        rated = delay_by_weather_bucket.dropna(subset=["mean_dep_delay"])
        worst = rated.sort_values(["mean_dep_delay", "bucket"], ascending=[False, True]).iloc[0]
        best = rated.sort_values(["mean_dep_delay", "bucket"], ascending=[True, True]).iloc[0]
        summary["worst_bucket"] = _bucket_label(worst)
        summary["worst_bucket_mean_dep_delay"] = _clean(worst["mean_dep_delay"], 2)
        summary["best_bucket"] = _bucket_label(best)
        summary["best_bucket_mean_dep_delay"] = _clean(best["mean_dep_delay"], 2)
    summary["message"] = (
        f"{matched} of {total} flights matched to a {weather_variable} observation; "
        f"{_describe_correlation(r, weather_variable)}."
    )
    return summary
