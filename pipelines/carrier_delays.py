"""Carrier delays: how punctual each airline was, month by month, over a date range.

Answers questions such as "which airline had the worst delays out of JFK last summer?" or "how
did United's on-time rate change over 2013?". Flights are selected by their scheduled departure
date (start_date..end_date, inclusive) and optionally by New York origin airport. A flight with
no departure delay recorded is counted as cancelled; delay statistics cover the flights that
flew. Delays are in minutes (negative = early); a share is a fraction between 0 and 1.

Outputs:
- delays_by_carrier_month: one row per carrier and month (YYYY-MM): flights, cancelled,
  cancelled_share, mean/median departure and arrival delay, and the shares of departures and
  arrivals more than 15 minutes late.
- delays_by_month: the same statistics for all carriers together, one row per month.
- carrier_totals: the same statistics per carrier over the whole range.
- carrier_ranking: one row per carrier with at least min_flights flights in the range, ranked
  from most punctual (rank 1) by the share of arrivals more than 15 minutes late, then by mean
  arrival delay.
- carrier_delay_summary: a small dict with the totals, overall delays, the most and least
  punctual carriers and the worst month.
"""

from __future__ import annotations

import datetime
from typing import Literal

import duckdb
from pydantic import BaseModel, Field

from pipelines.summary import plain_number as _clean
from servers.lazy import lazy_module

# Loaded when a node first runs (in a run worker), not when the gateway reads `Inputs`.
pd = lazy_module("pandas")

Origin = Literal["EWR", "JFK", "LGA"]

OUTPUTS: tuple[str, ...] = (
    "delays_by_carrier_month",
    "delays_by_month",
    "carrier_totals",
    "carrier_ranking",
    "carrier_delay_summary",
)


class Inputs(BaseModel):
    """User inputs of the carrier_delays pipeline."""

    start_date: datetime.date = Field(
        default=datetime.date(2013, 1, 1),
        description="Data: 2013.",
    )
    end_date: datetime.date = Field(
        default=datetime.date(2013, 12, 31),
        description="Inclusive.",
    )
    origin: Origin | None = Field(
        default=None,
        description="Omit for all three.",
    )
    min_flights: int = Field(
        default=100,
        ge=1,
        description="Fewer: not ranked.",
    )


_STATS_COLUMNS = [
    "flights",
    "cancelled",
    "cancelled_share",
    "mean_dep_delay",
    "median_dep_delay",
    "dep_delayed_15_share",
    "mean_arr_delay",
    "median_arr_delay",
    "arr_delayed_15_share",
]

_STATS_SQL = """
    count(*) AS flights,
    count(*) FILTER (WHERE dep_delay IS NULL) AS cancelled,
    avg((dep_delay IS NULL)::INTEGER) AS cancelled_share,
    avg(dep_delay) AS mean_dep_delay,
    median(dep_delay) AS median_dep_delay,
    avg((dep_delay > 15)::INTEGER) AS dep_delayed_15_share,
    avg(arr_delay) AS mean_arr_delay,
    median(arr_delay) AS median_arr_delay,
    avg((arr_delay > 15)::INTEGER) AS arr_delayed_15_share
"""

_DELAY_COLUMNS = ["mean_dep_delay", "median_dep_delay", "mean_arr_delay", "median_arr_delay"]
_SHARE_COLUMNS = ["cancelled_share", "dep_delayed_15_share", "arr_delayed_15_share"]


def _filtered_flights(
    start_date: datetime.date, end_date: datetime.date, origin: str | None
) -> tuple[str, list]:
    """Validate the range and return a sub-query of the selected flights with its parameters."""
    if start_date > end_date:
        raise ValueError(
            f"start_date ({start_date.isoformat()}) is after end_date ({end_date.isoformat()}); "
            "give a start_date on or before end_date."
        )
    sql = """
        SELECT f.carrier, strftime(make_date(f.year, f.month, f.day), '%Y-%m') AS month,
               f.dep_delay, f.arr_delay
        FROM flights AS f
        WHERE make_date(f.year, f.month, f.day) BETWEEN ? AND ?
    """
    params: list = [start_date, end_date]
    if origin is not None:
        sql += " AND f.origin = ?"
        params.append(origin)
    return sql, params


def _round(df: pd.DataFrame) -> pd.DataFrame:
    df[_DELAY_COLUMNS] = df[_DELAY_COLUMNS].astype("float64").round(2)
    df[_SHARE_COLUMNS] = df[_SHARE_COLUMNS].astype("float64").round(3)
    df[["flights", "cancelled"]] = df[["flights", "cancelled"]].astype("int64")
    return df


def delays_by_carrier_month(
    db: duckdb.DuckDBPyConnection,
    start_date: datetime.date,
    end_date: datetime.date,
    origin: Origin | None,
) -> pd.DataFrame:
    """Delay statistics per carrier and month (YYYY-MM), sorted by carrier then month."""
    flights, params = _filtered_flights(start_date, end_date, origin)
    df = db.execute(
        f"""
        SELECT s.carrier, a.name AS carrier_name, s.month, {_STATS_SQL}
        FROM ({flights}) AS s LEFT JOIN airlines AS a ON a.carrier = s.carrier
        GROUP BY s.carrier, a.name, s.month
        ORDER BY s.carrier, s.month
        """,
        params,
    ).df()
    df = df[["carrier", "carrier_name", "month", *_STATS_COLUMNS]]
    return _round(df).reset_index(drop=True)


def delays_by_month(
    db: duckdb.DuckDBPyConnection,
    start_date: datetime.date,
    end_date: datetime.date,
    origin: Origin | None,
) -> pd.DataFrame:
    """Delay statistics per month (YYYY-MM) for all carriers together, sorted by month."""
    flights, params = _filtered_flights(start_date, end_date, origin)
    df = db.execute(
        f"SELECT month, {_STATS_SQL} FROM ({flights}) AS s GROUP BY month ORDER BY month",
        params,
    ).df()
    df = df[["month", *_STATS_COLUMNS]]
    return _round(df).reset_index(drop=True)


def carrier_totals(
    db: duckdb.DuckDBPyConnection,
    start_date: datetime.date,
    end_date: datetime.date,
    origin: Origin | None,
) -> pd.DataFrame:
    """Delay statistics per carrier over the whole range, sorted by carrier."""
    flights, params = _filtered_flights(start_date, end_date, origin)
    df = db.execute(
        f"""
        SELECT s.carrier, a.name AS carrier_name, {_STATS_SQL}
        FROM ({flights}) AS s LEFT JOIN airlines AS a ON a.carrier = s.carrier
        GROUP BY s.carrier, a.name
        ORDER BY s.carrier
        """,
        params,
    ).df()
    df = df[["carrier", "carrier_name", *_STATS_COLUMNS]]
    return _round(df).reset_index(drop=True)


def carrier_ranking(carrier_totals: pd.DataFrame, min_flights: int) -> pd.DataFrame:
    """Carriers with at least min_flights flights, rank 1 = fewest arrivals over 15 min late."""
    if min_flights < 1:
        raise ValueError(f"min_flights must be at least 1, got {min_flights}.")
    ranked = carrier_totals[carrier_totals["flights"] >= min_flights].sort_values(
        ["arr_delayed_15_share", "mean_arr_delay", "carrier"], na_position="last", kind="stable"
    )
    ranked = ranked.reset_index(drop=True)
    ranked.insert(0, "rank", pd.Series(range(1, len(ranked) + 1), dtype="int64"))
    return ranked


def carrier_delay_summary(
    db: duckdb.DuckDBPyConnection,
    start_date: datetime.date,
    end_date: datetime.date,
    origin: Origin | None,
    min_flights: int,
    carrier_totals: pd.DataFrame,
    carrier_ranking: pd.DataFrame,
    delays_by_month: pd.DataFrame,
) -> dict:
    """Totals, overall delays, most and least punctual carriers and worst month, as a dict."""
    flights, params = _filtered_flights(start_date, end_date, origin)
    overall = db.execute(f"SELECT {_STATS_SQL} FROM ({flights}) AS s", params).df().iloc[0]
    total = int(overall["flights"])
    summary: dict = {
        "start_date": start_date.isoformat(),
        "end_date": end_date.isoformat(),
        "origin": origin if origin is not None else "all",
        "min_flights": int(min_flights),
        "flights": total,
        "cancelled": int(overall["cancelled"]),
        "cancelled_share": _clean(overall["cancelled_share"], 3),
        "mean_dep_delay": _clean(overall["mean_dep_delay"], 2),
        "mean_arr_delay": _clean(overall["mean_arr_delay"], 2),
        "arr_delayed_15_share": _clean(overall["arr_delayed_15_share"], 3),
        "carriers": len(carrier_totals),
        "ranked_carriers": len(carrier_ranking),
        "most_punctual_carrier": None,
        "least_punctual_carrier": None,
        "worst_month": None,
        "worst_month_mean_dep_delay": None,
    }
    if total == 0:
        summary["message"] = "No flights match these inputs; try a wider date range or origin."
        return summary
    if len(carrier_ranking):
        summary["most_punctual_carrier"] = str(carrier_ranking["carrier"].iloc[0])
        summary["least_punctual_carrier"] = str(carrier_ranking["carrier"].iloc[-1])
    months = delays_by_month.dropna(subset=["mean_dep_delay"]).sort_values(
        ["mean_dep_delay", "month"], ascending=[False, True], kind="stable"
    )
    if len(months):
        summary["worst_month"] = str(months["month"].iloc[0])
        summary["worst_month_mean_dep_delay"] = _clean(months["mean_dep_delay"].iloc[0], 2)
    summary["message"] = (
        f"{total} flights by {len(carrier_totals)} carriers; "
        f"{len(carrier_ranking)} have at least {min_flights} flights and are ranked."
    )
    return summary
