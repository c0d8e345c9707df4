"""The dataflow the benchmarks run: `answer` is a trivial run (one tiny node, no data);
`delay_profile` is a real one of a few hundred milliseconds (the flights table into pandas,
joined to the hourly weather, then group-bys); `long_profile` repeats those group-bys for
`seconds` seconds, a long CPU-bound run (one core, like a heavy pandas transform) for
bench_isolation.py. Registered only by the benchmarks (bench_pipelines.py, bench/trivial.py)."""

import time

import duckdb
import pandas as pd
from pydantic import BaseModel, Field

OUTPUTS = ("answer", "delay_profile", "long_profile")


class Inputs(BaseModel):
    x: int = Field(41, description="A number.")
    seconds: float = Field(1.0, description="How long long_profile keeps computing.")


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


def long_profile(flights_with_weather: pd.DataFrame, seconds: float) -> dict:
    """delay_profile computed again and again for `seconds` seconds: how many times it ran."""
    deadline = time.monotonic() + seconds
    repeats = 0
    while True:
        delay_profile(flights_with_weather)
        repeats += 1
        if time.monotonic() >= deadline:
            return {"repeats": repeats}
