"""Route profile: everything about one route from a New York airport to a destination.

Answers questions such as "who flies JFK to LAX, and who is most often on time?", "when are the
busiest departure hours from LGA to ATL?" or "how late are flights on EWR-ORD usually?". A flight
with no departure delay recorded is counted as cancelled; delays are in minutes (negative =
early) and cover the flights that flew; "on time" means arriving no more than 15 minutes late
(among flights with a recorded arrival). A share is a fraction between 0 and 1.

Outputs:
- route_monthly_flights: one row per month (YYYY-MM): flights, cancelled, mean departure and
  arrival delay, on-time share.
- route_carriers: one row per carrier on the route: flights, share of the route's flights,
  cancelled, mean arrival delay and on-time share; busiest carrier first.
- route_delay_percentiles: departure and arrival delay at the 10th, 25th, 50th, 75th, 90th, 95th
  and 99th percentiles (linear interpolation); no rows if no flight on the route departed.
- route_busiest_hours: one row per scheduled departure hour (0-23): flights, share and mean
  departure delay; busiest hour first.
- route_summary: a small dict with totals, distance, typical air time (median, 10th and 90th
  percentile), median delays, on-time share, top carrier, busiest month and hour.
"""

from __future__ import annotations

import re
from typing import Literal

import duckdb
from pydantic import BaseModel, Field

from pipelines.summary import plain_number as _clean
from servers.lazy import lazy_module

# Loaded when a node first runs (in a run worker), not when the gateway reads `Inputs`.
pd = lazy_module("pandas")

Origin = Literal["EWR", "JFK", "LGA"]

OUTPUTS: tuple[str, ...] = (
    "route_monthly_flights",
    "route_carriers",
    "route_delay_percentiles",
    "route_busiest_hours",
    "route_summary",
)

_PERCENTILES = (10, 25, 50, 75, 90, 95, 99)
_AIRPORT_CODE = re.compile(r"^[A-Z0-9]{3}$")


class Inputs(BaseModel):
    """User inputs of the route_profile pipeline."""

    origin: Origin = Field(default="JFK", description="New York airport.")
    dest: str = Field(
        default="LAX",
        pattern=r"^[A-Z0-9]{3}$",
        description="FAA code, e.g. ATL.",
    )


def _route_flights(origin: str, dest: str) -> tuple[str, list]:
    """Validate the route and return a sub-query of its flights with its parameters."""
    if not _AIRPORT_CODE.match(dest):
        raise ValueError(
            f"dest must be a three-letter upper-case FAA airport code such as 'LAX', got {dest!r}."
        )
    if origin == dest:
        raise ValueError(f"origin and dest are both {origin!r}; choose a different destination.")
    sql = """
        SELECT strftime(make_date(year, month, day), '%Y-%m') AS month, carrier, hour,
               dep_delay, arr_delay, air_time, distance
        FROM flights
        WHERE origin = ? AND dest = ?
    """
    return sql, [origin, dest]


def route_monthly_flights(db: duckdb.DuckDBPyConnection, origin: Origin, dest: str) -> pd.DataFrame:
    """Flights, cancellations, mean delays and on-time share per month, sorted by month."""
    flights, params = _route_flights(origin, dest)
    df = db.execute(
        f"""
        SELECT month,
               count(*) AS flights,
               count(*) FILTER (WHERE dep_delay IS NULL) AS cancelled,
               avg(dep_delay) AS mean_dep_delay,
               avg(arr_delay) AS mean_arr_delay,
               avg((arr_delay <= 15)::INTEGER) AS on_time_share
        FROM ({flights}) AS r
        GROUP BY month ORDER BY month
        """,
        params,
    ).df()
    df[["flights", "cancelled"]] = df[["flights", "cancelled"]].astype("int64")
    df[["mean_dep_delay", "mean_arr_delay"]] = (
        df[["mean_dep_delay", "mean_arr_delay"]].astype("float64").round(2)
    )
    df["on_time_share"] = df["on_time_share"].astype("float64").round(3)
    return df.reset_index(drop=True)


def route_carriers(db: duckdb.DuckDBPyConnection, origin: Origin, dest: str) -> pd.DataFrame:
    """Carriers on the route with their share of flights and on-time share, busiest first."""
    flights, params = _route_flights(origin, dest)
    df = db.execute(
        f"""
        SELECT r.carrier, a.name AS carrier_name,
               count(*) AS flights,
               count(*) / sum(count(*)) OVER () AS flight_share,
               count(*) FILTER (WHERE r.dep_delay IS NULL) AS cancelled,
               avg(r.arr_delay) AS mean_arr_delay,
               avg((r.arr_delay <= 15)::INTEGER) AS on_time_share
        FROM ({flights}) AS r LEFT JOIN airlines AS a ON a.carrier = r.carrier
        GROUP BY r.carrier, a.name
        ORDER BY flights DESC, r.carrier
        """,
        params,
    ).df()
    df[["flights", "cancelled"]] = df[["flights", "cancelled"]].astype("int64")
    df["mean_arr_delay"] = df["mean_arr_delay"].astype("float64").round(2)
    df[["flight_share", "on_time_share"]] = (
        df[["flight_share", "on_time_share"]].astype("float64").round(3)
    )
    return df.reset_index(drop=True)


def route_delay_percentiles(
    db: duckdb.DuckDBPyConnection, origin: Origin, dest: str
) -> pd.DataFrame:
    """Departure and arrival delay percentiles (10th to 99th) over the flights that flew."""
    flights, params = _route_flights(origin, dest)
    fractions = [p / 100 for p in _PERCENTILES]
    dep, arr = db.execute(
        f"""
        SELECT quantile_cont(dep_delay, {fractions!r}), quantile_cont(arr_delay, {fractions!r})
        FROM ({flights}) AS r
        """,
        params,
    ).fetchone()
    if dep is None and arr is None:  # no flight on the route departed
        dep, arr, percentiles = [], [], []
    else:
        percentiles = list(_PERCENTILES)
        dep = dep or [None] * len(percentiles)
        arr = arr or [None] * len(percentiles)
    df = pd.DataFrame(
        {
            "percentile": pd.Series(percentiles, dtype="int64"),
            "dep_delay": pd.Series(dep, dtype="float64"),
            "arr_delay": pd.Series(arr, dtype="float64"),
        }
    )
    df[["dep_delay", "arr_delay"]] = df[["dep_delay", "arr_delay"]].round(2)
    return df


def route_busiest_hours(db: duckdb.DuckDBPyConnection, origin: Origin, dest: str) -> pd.DataFrame:
    """Flights, share and mean departure delay per scheduled departure hour, busiest first."""
    flights, params = _route_flights(origin, dest)
    df = db.execute(
        f"""
        SELECT hour,
               count(*) AS flights,
               count(*) / sum(count(*)) OVER () AS flight_share,
               avg(dep_delay) AS mean_dep_delay
        FROM ({flights}) AS r
        GROUP BY hour
        ORDER BY flights DESC, hour
        """,
        params,
    ).df()
    df[["hour", "flights"]] = df[["hour", "flights"]].astype("int64")
    df["flight_share"] = df["flight_share"].astype("float64").round(3)
    df["mean_dep_delay"] = df["mean_dep_delay"].astype("float64").round(2)
    return df.reset_index(drop=True)


def route_summary(
    db: duckdb.DuckDBPyConnection,
    origin: Origin,
    dest: str,
    route_monthly_flights: pd.DataFrame,
    route_carriers: pd.DataFrame,
    route_busiest_hours: pd.DataFrame,
) -> dict:
    """Totals, distance, typical air time, median delays, top carrier, busiest month and hour."""
    flights, params = _route_flights(origin, dest)
    row = db.execute(
        f"""
        SELECT count(*) AS flights,
               count(*) FILTER (WHERE dep_delay IS NULL) AS cancelled,
               median(distance) AS distance_miles,
               median(air_time) AS median_air_time,
               quantile_cont(air_time, 0.1) AS p10_air_time,
               quantile_cont(air_time, 0.9) AS p90_air_time,
               median(dep_delay) AS median_dep_delay,
               median(arr_delay) AS median_arr_delay,
               avg((arr_delay <= 15)::INTEGER) AS on_time_share,
               (SELECT name FROM airports WHERE faa = ?) AS dest_name
        FROM ({flights}) AS r
        """,
        [dest, *params],
    ).fetchone()
    (total, cancelled, distance, air_med, air_p10, air_p90, dep_med, arr_med, on_time, name) = row
    summary: dict = {
        "origin": origin,
        "dest": dest,
        "dest_name": name,
        "flights": int(total),
        "cancelled": int(cancelled),
        "carriers": len(route_carriers),
        "distance_miles": _clean(distance, 1),
        "median_air_time": _clean(air_med, 1),
        "p10_air_time": _clean(air_p10, 1),
        "p90_air_time": _clean(air_p90, 1),
        "median_dep_delay": _clean(dep_med, 2),
        "median_arr_delay": _clean(arr_med, 2),
        "on_time_share": _clean(on_time, 3),
        "top_carrier": None,
        "top_carrier_share": None,
        "busiest_month": None,
        "busiest_hour": None,
    }
    if total == 0:
        summary["message"] = (
            f"No flights from {origin} to {dest}; check the destination code or try another "
            "origin airport."
        )
        return summary
    summary["top_carrier"] = str(route_carriers["carrier"].iloc[0])
    summary["top_carrier_share"] = _clean(route_carriers["flight_share"].iloc[0], 3)
    months = route_monthly_flights.sort_values(
        ["flights", "month"], ascending=[False, True], kind="stable"
    )
    summary["busiest_month"] = str(months["month"].iloc[0])
    summary["busiest_hour"] = int(route_busiest_hours["hour"].iloc[0])
    summary["message"] = (
        f"{total} flight(s) from {origin} to {dest} by {len(route_carriers)} carrier(s)."
    )
    return summary
