"""route_profile on the hand-made database of tests/pipelines/conftest.py (flight numbers refer
to the table there). The JFK-LAX route is flights 1 to 7."""

from __future__ import annotations

import json

import pytest
from hamilton import driver

from pipelines import route_profile


def test_flights_per_month_match_hand_computation(run_pipeline):
    monthly = run_pipeline(route_profile, origin="JFK", dest="LAX")["route_monthly_flights"]
    # January: flights 1-4, 3 cancelled. dep 10, 30, -5 -> 35/3 = 11.67; arr 20, 25, -10 ->
    # 35/3 = 11.67; on time (arr <= 15): only -10 -> 1/3.
    # February: flights 5-7. dep 0, 60, 5 -> 65/3 = 21.67; arr 5, 70, 15 -> 90/3 = 30.0;
    # on time: 5 and 15 -> 2/3.
    assert list(monthly.columns) == [
        "month",
        "flights",
        "cancelled",
        "mean_dep_delay",
        "mean_arr_delay",
        "on_time_share",
    ]
    assert list(monthly["month"]) == ["2013-01", "2013-02"]
    assert list(monthly["flights"]) == [4, 3]
    assert list(monthly["cancelled"]) == [1, 0]
    assert list(monthly["mean_dep_delay"]) == [11.67, 21.67]
    assert list(monthly["mean_arr_delay"]) == [11.67, 30.0]
    assert list(monthly["on_time_share"]) == [0.333, 0.667]


def test_carriers_with_shares_and_on_time_rates_match_hand_computation(run_pipeline):
    carriers = run_pipeline(route_profile, origin="JFK", dest="LAX")["route_carriers"]
    # AA: flights 1, 4, 5 -> 3/7 = 0.429; arr 20, -10, 5 -> mean 5.0, on time 2/3.
    # B6: flights 3 (cancelled), 7 -> 2/7 = 0.286; arr 15 -> on time 1/1.
    # DL: flights 2, 6 -> 2/7; arr 25, 70 -> mean 47.5, on time 0/2.
    # B6 and DL tie on flights and are then ordered by carrier code.
    assert list(carriers["carrier"]) == ["AA", "B6", "DL"]
    assert list(carriers["carrier_name"]) == [
        "American Airlines Inc.",
        "JetBlue Airways",
        "Delta Air Lines Inc.",
    ]
    assert list(carriers["flights"]) == [3, 2, 2]
    assert list(carriers["flight_share"]) == [0.429, 0.286, 0.286]
    assert list(carriers["cancelled"]) == [0, 1, 0]
    assert list(carriers["mean_arr_delay"]) == [5.0, 15.0, 47.5]
    assert list(carriers["on_time_share"]) == [0.667, 1.0, 0.0]


def test_delay_percentiles_interpolate_linearly(run_pipeline):
    table = run_pipeline(route_profile, origin="JFK", dest="LAX")["route_delay_percentiles"]
    # Departed flights' dep delays sorted: -5, 0, 5, 10, 30, 60 (n = 6, position = 5 * p).
    # p10: pos 0.5 -> -2.5; p25: pos 1.25 -> 1.25; p50: pos 2.5 -> 7.5; p75: pos 3.75 -> 25;
    # p90: pos 4.5 -> 45; p95: pos 4.75 -> 52.5; p99: pos 4.95 -> 58.5.
    # Arrival delays sorted: -10, 5, 15, 20, 25, 70.
    # p10: -2.5; p25: 5 + 0.25*10 = 7.5; p50: 17.5; p75: 20 + 0.75*5 = 23.75;
    # p90: 25 + 0.5*45 = 47.5; p95: 25 + 0.75*45 = 58.75; p99: 25 + 0.95*45 = 67.75.
    assert list(table["percentile"]) == [10, 25, 50, 75, 90, 95, 99]
    assert list(table["dep_delay"]) == [-2.5, 1.25, 7.5, 25.0, 45.0, 52.5, 58.5]
    assert list(table["arr_delay"]) == [-2.5, 7.5, 17.5, 23.75, 47.5, 58.75, 67.75]


def test_busiest_hours_come_first_with_their_mean_departure_delay(run_pipeline):
    hours = run_pipeline(route_profile, origin="JFK", dest="LAX")["route_busiest_hours"]
    # 8 o'clock: flights 1, 2, 4, 5 -> 4/7 = 0.571, dep (10+30-5+0)/4 = 8.75.
    # 17 o'clock: flights 3 (cancelled), 6, 7 -> 3/7 = 0.429, dep (60+5)/2 = 32.5.
    assert list(hours["hour"]) == [8, 17]
    assert list(hours["flights"]) == [4, 3]
    assert list(hours["flight_share"]) == [0.571, 0.429]
    assert list(hours["mean_dep_delay"]) == [8.75, 32.5]


def test_summary_gives_typical_air_time_distance_and_delays(run_pipeline):
    summary = run_pipeline(route_profile, origin="JFK", dest="LAX")["route_summary"]
    # Air times sorted: 320, 325, 330, 335, 340, 345 -> median 332.5, p10 322.5, p90 342.5.
    # On time overall: arrivals -10, 5, 15 of 6 -> 0.5.
    assert summary == {
        "origin": "JFK",
        "dest": "LAX",
        "dest_name": "Los Angeles Intl",
        "flights": 7,
        "cancelled": 1,
        "carriers": 3,
        "distance_miles": 2475.0,
        "median_air_time": 332.5,
        "p10_air_time": 322.5,
        "p90_air_time": 342.5,
        "median_dep_delay": 7.5,
        "median_arr_delay": 17.5,
        "on_time_share": 0.5,
        "top_carrier": "AA",
        "top_carrier_share": 0.429,
        "busiest_month": "2013-01",
        "busiest_hour": 8,
        "message": "7 flight(s) from JFK to LAX by 3 carrier(s).",
    }
    json.dumps(summary, allow_nan=False)


def test_other_routes_are_profiled_independently(run_pipeline):
    result = run_pipeline(route_profile, origin="EWR", dest="BOS")
    # EWR-BOS: flights 13, 15 and cancelled 16, all B6 in January; no airports row for BOS.
    summary = result["route_summary"]
    assert summary["flights"] == 3
    assert summary["cancelled"] == 1
    assert summary["dest_name"] is None
    assert summary["median_dep_delay"] == 15.0  # (10 + 20) / 2
    assert list(result["route_carriers"]["on_time_share"]) == [0.5]  # 12 on time, 18 late


def test_origin_equal_to_dest_is_rejected(run_pipeline):
    with pytest.raises(ValueError, match="origin and dest are both 'JFK'"):
        run_pipeline(route_profile, ["route_summary"], origin="JFK", dest="JFK")


def test_lower_case_destination_code_is_rejected_with_an_example(run_pipeline):
    with pytest.raises(ValueError, match="three-letter upper-case FAA airport code such as 'LAX'"):
        run_pipeline(route_profile, ["route_carriers"], origin="JFK", dest="lax")


def test_route_without_flights_gives_empty_tables_and_a_summary_saying_so(run_pipeline):
    result = run_pipeline(route_profile, origin="LGA", dest="LAX")
    for name in ("route_monthly_flights", "route_carriers", "route_busiest_hours"):
        assert result[name].empty, name
    assert list(result["route_delay_percentiles"].columns) == [
        "percentile",
        "dep_delay",
        "arr_delay",
    ]
    assert result["route_delay_percentiles"].empty
    summary = result["route_summary"]
    assert summary["flights"] == 0
    assert summary["top_carrier"] is None
    assert summary["median_air_time"] is None
    assert summary["message"].startswith("No flights from LGA to LAX")
    json.dumps(summary, allow_nan=False)


def test_inputs_fields_equal_the_dag_external_inputs_except_db():
    dr = driver.Builder().with_modules(route_profile).build()
    external = {v.name: v.type for v in dr.list_available_variables() if v.is_external_input}
    assert "db" in external
    del external["db"]
    fields = route_profile.Inputs.model_fields
    assert {name: field.annotation for name, field in fields.items()} == external
    assert all(field.description for field in fields.values())


def test_every_declared_output_is_a_node_of_the_dag():
    dr = driver.Builder().with_modules(route_profile).build()
    nodes = {v.name for v in dr.list_available_variables() if not v.is_external_input}
    assert set(route_profile.OUTPUTS) <= nodes


def test_default_inputs_profile_jfk_to_lax_on_the_fixture_database(run_pipeline):
    result = run_pipeline(route_profile)
    assert set(result) == set(route_profile.OUTPUTS)
    assert result["route_summary"]["origin"] == "JFK"
    assert result["route_summary"]["dest"] == "LAX"
    assert result["route_summary"]["flights"] == 7
