"""The dataflow bench_pipelines.py runs: `answer` is a trivial run (one tiny node, no data);
`delay_profile` is a real one of a few hundred milliseconds (the flights table into pandas,
joined to the hourly weather, then group-bys). Registered only by the benchmark."""

import duckdb
import pandas as pd
from pydantic import BaseModel, Field

OUTPUTS = ("answer", "delay_profile")


class Inputs(BaseModel):
    x: int = Field(41, description="A number.")


def answer(x: int) -> int:
    """x + 1."""
    return x + 1


def flights(db: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Every flight."""
    return db.execute("SELECT * FROM flights").df()


def weather(db: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Every hourly weather observation."""
    return db.execute("SELECT origin, time_hour, visib, wind_speed FROM weather").df()


def flights_with_weather(flights: pd.DataFrame, weather: pd.DataFrame) -> pd.DataFrame:
    """Flights joined to the weather at their origin and scheduled hour."""
    return flights.merge(weather, on=["origin", "time_hour"], how="left")


def delay_profile(flights_with_weather: pd.DataFrame) -> dict:
    """Mean departure delay by origin, by carrier and month, and by visibility band."""
    frame = flights_with_weather.assign(poor_visibility=flights_with_weather["visib"] < 3)
    by_origin = frame.groupby("origin")["dep_delay"].mean()
    by_carrier_month = frame.groupby(["carrier", "month"])["dep_delay"].agg(["mean", "median"])
    by_visibility = frame.groupby(["origin", "poor_visibility"])["dep_delay"].mean()
    return {
        "origins": {k: float(v) for k, v in by_origin.items()},
        "carrier_months": len(by_carrier_month),
        "poor_visibility_penalty": {
            origin: float(by_visibility[origin, True] - by_visibility[origin, False])
            for origin in by_origin.index
        },
    }
