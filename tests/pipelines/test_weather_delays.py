"""weather_delays on the hand-made database of tests/pipelines/conftest.py (flight numbers refer
to the table there).

Matched to their origin's weather hour, the flights have these visibilities (flight 8 has no
weather row; flight 5's hour has two rows, 2 and 4, averaged to 3):

    visib  flights            dep_delay (- = cancelled)
    1      6, 7, 13           60, 5, 10
    2      14                 30
    3      5, 15, 16          0, 20, -
    5      11, 12             15, 100
    10     1, 2, 3, 4, 9, 10  10, 30, -, -5, 20, -3
"""

from __future__ import annotations

import json

import pytest
from hamilton import driver

from pipelines import weather_delays

_COLUMNS = [
    "bucket",
    "value_min",
    "value_max",
    "flights",
    "cancelled",
    "cancelled_share",
    "mean_dep_delay",
    "dep_delayed_15_share",
]


def test_three_visibility_buckets_hold_flight_counts_as_equal_as_possible(run_pipeline):
    table = run_pipeline(weather_delays, weather_variable="visib", n_buckets=3)[
        "delay_by_weather_bucket"
    ]
    # Flights per value 1, 2, 3, 5, 10: 3, 1, 3, 2, 6. Sums of squared bucket sizes:
    # {1}{2}{3,5,10} 9+1+121=131, {1}{2,3}{5,10} 9+16+64=89, {1}{2,3,5}{10} 9+36+36=81,
    # {1,2}{3}{5,10} 16+9+64=89, {1,2}{3,5}{10} 16+25+36=77, {1,2,3}{5}{10} 49+4+36=89.
    # The smallest, 77, gives the buckets 1-2, 3-5 and 10.
    assert list(table.columns) == _COLUMNS
    assert list(table["bucket"]) == [1, 2, 3]
    assert list(table["value_min"]) == [1.0, 3.0, 10.0]
    assert list(table["value_max"]) == [2.0, 5.0, 10.0]
    assert list(table["flights"]) == [4, 5, 6]


def test_mean_delay_and_shares_per_visibility_bucket_match_hand_computation(run_pipeline):
    table = run_pipeline(weather_delays, weather_variable="visib", n_buckets=3)[
        "delay_by_weather_bucket"
    ]
    # 1-2: 60, 5, 10, 30 -> 105/4 = 26.25; more than 15 late: 60, 30 -> 0.5; none cancelled.
    # 3-5: 0, 20, 15, 100 -> 135/4 = 33.75; late: 20, 100 -> 0.5; 1 of 5 cancelled -> 0.2.
    # 10: 10, 30, -5, 20, -3 -> 52/5 = 10.4; late: 30, 20 -> 0.4; 1 of 6 cancelled -> 0.167.
    assert list(table["cancelled"]) == [0, 1, 1]
    assert list(table["cancelled_share"]) == [0.0, 0.2, 0.167]
    assert list(table["mean_dep_delay"]) == [26.25, 33.75, 10.4]
    assert list(table["dep_delayed_15_share"]) == [0.5, 0.5, 0.4]


def test_two_buckets_split_where_sizes_are_closest(run_pipeline):
    table = run_pipeline(weather_delays, weather_variable="visib", n_buckets=2)[
        "delay_by_weather_bucket"
    ]
    # {1,2,3}{5,10}: 7 and 8 flights, 49+64 = 113, beats {1,2,3,5}{10}: 81+36 = 117.
    assert list(table["value_max"]) == [3.0, 10.0]
    assert list(table["flights"]) == [7, 8]


def test_equal_values_stay_together_and_duplicate_weather_hours_are_averaged(run_pipeline):
    table = run_pipeline(weather_delays, weather_variable="visib", n_buckets=5)[
        "delay_by_weather_bucket"
    ]
    # Five distinct values and five buckets: one value per bucket. Flight 5's hour (rows 2 and
    # 4) counts once, at 3, next to flights 15 and 16; no bucket exists for 2 or 4 alone.
    assert list(table["value_min"]) == [1.0, 2.0, 3.0, 5.0, 10.0]
    assert list(table["value_max"]) == [1.0, 2.0, 3.0, 5.0, 10.0]
    assert list(table["flights"]) == [3, 1, 3, 2, 6]
    assert table["flights"].sum() == 15  # flight 8 has no weather and is left out


def test_fewer_buckets_when_the_variable_has_fewer_distinct_values(run_pipeline):
    result = run_pipeline(weather_delays, weather_variable="temp", n_buckets=5)
    table = result["delay_by_weather_bucket"]
    # temp is 30 in January and 50 in February (flight 8, March, has no weather).
    # 30: flights 1-4, 9, 10, 13-16, cancelled 3 and 16; departed delays sum to 112 over 8 = 14.
    # 50: flights 5, 6, 7, 11, 12: 0 + 60 + 5 + 15 + 100 = 180 over 5 = 36.
    assert list(table["value_min"]) == [30.0, 50.0]
    assert list(table["flights"]) == [10, 5]
    assert list(table["mean_dep_delay"]) == [14.0, 36.0]
    summary = result["weather_delay_summary"]
    assert (summary["buckets_requested"], summary["buckets"]) == (5, 2)
    assert summary["unit"] == "degrees F"


def test_correlation_on_one_airport_matches_hand_computation(run_pipeline):
    summary = run_pipeline(weather_delays, origin="EWR", weather_variable="visib")[
        "weather_delay_summary"
    ]
    # EWR departed flights (visib, dep_delay): (1, 10), (2, 30), (3, 20); flight 16 cancelled.
    # Deviations from the means 2 and 20: x -1, 0, 1; y -10, 10, 0.
    # r = (10 + 0 + 0) / sqrt(2 * 200) = 10 / 20 = 0.5.
    assert summary["correlation"] == 0.5
    assert summary["flights"] == 4
    assert summary["flights_with_weather"] == 4
    assert summary["departed_flights_with_weather"] == 3


def test_summary_over_all_airports_matches_hand_computation(run_pipeline):
    summary = run_pipeline(weather_delays, weather_variable="visib", n_buckets=3)[
        "weather_delay_summary"
    ]
    # 13 departed matched flights: sum x = 71, sum y = 292, sum xy = 1290, sum x^2 = 575,
    # sum y^2 = 16684. r = (13*1290 - 71*292) / sqrt((13*575 - 71^2) * (13*16684 - 292^2))
    #   = -3962 / sqrt(2434 * 131628) = -3962 / 17899.2 = -0.221.
    # Mean delay 292 / 13 = 22.46.
    assert summary == {
        "origin": "all",
        "weather_variable": "visib",
        "unit": "miles",
        "buckets_requested": 3,
        "buckets": 3,
        "flights": 16,
        "flights_with_weather": 15,
        "departed_flights_with_weather": 13,
        "mean_dep_delay": 22.46,
        "correlation": -0.221,
        "worst_bucket": "2: 3 to 5",
        "worst_bucket_mean_dep_delay": 33.75,
        "best_bucket": "3: 10",
        "best_bucket_mean_dep_delay": 10.4,
        "message": "15 of 16 flights matched to a visib observation; correlation with departure "
        "delay -0.221 (weak; higher visib goes with shorter delays).",
    }
    json.dumps(summary, allow_nan=False)


def test_observations_missing_the_variable_are_left_out(run_pipeline):
    result = run_pipeline(weather_delays, weather_variable="wind_gust")
    # Only JFK 01-01 8 has a wind_gust (20): flights 1 and 2. One value, so no correlation.
    assert list(result["delay_by_weather_bucket"]["flights"]) == [2]
    assert list(result["delay_by_weather_bucket"]["mean_dep_delay"]) == [20.0]  # (10+30)/2
    summary = result["weather_delay_summary"]
    assert summary["flights_with_weather"] == 2
    assert summary["correlation"] is None
    assert "no correlation can be computed" in summary["message"]


def test_no_matching_weather_gives_an_empty_table_and_a_summary_saying_so(run_pipeline):
    result = run_pipeline(weather_delays, origin="LGA", weather_variable="wind_gust")
    table = result["delay_by_weather_bucket"]
    assert table.empty
    assert list(table.columns) == _COLUMNS
    summary = result["weather_delay_summary"]
    assert summary["flights"] == 4
    assert summary["flights_with_weather"] == 0
    assert summary["correlation"] is None
    assert summary["mean_dep_delay"] is None
    assert summary["worst_bucket"] is None
    assert summary["message"].startswith("No flights have a wind_gust observation")
    json.dumps(summary, allow_nan=False)


def test_a_single_bucket_is_rejected(run_pipeline):
    with pytest.raises(ValueError, match="n_buckets must be between 2 and 20, got 1"):
        run_pipeline(weather_delays, ["delay_by_weather_bucket"], n_buckets=1)


def test_an_unknown_weather_variable_is_rejected(run_pipeline):
    with pytest.raises(ValueError, match="weather_variable"):
        run_pipeline(weather_delays, ["weather_delay_summary"], weather_variable="humidity")


def test_inputs_fields_equal_the_dag_external_inputs_except_db():
    dr = driver.Builder().with_modules(weather_delays).build()
    external = {v.name: v.type for v in dr.list_available_variables() if v.is_external_input}
    assert "db" in external
    del external["db"]
    fields = weather_delays.Inputs.model_fields
    assert {name: field.annotation for name, field in fields.items()} == external
    assert all(field.description for field in fields.values())


def test_every_declared_output_is_a_node_of_the_dag():
    dr = driver.Builder().with_modules(weather_delays).build()
    nodes = {v.name for v in dr.list_available_variables() if not v.is_external_input}
    assert set(weather_delays.OUTPUTS) <= nodes


def test_default_inputs_bucket_visibility_on_the_fixture_database(run_pipeline):
    result = run_pipeline(weather_delays)
    assert set(result) == set(weather_delays.OUTPUTS)
    assert result["weather_delay_summary"]["weather_variable"] == "visib"
    assert len(result["delay_by_weather_bucket"]) == 5
