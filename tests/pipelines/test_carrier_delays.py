"""carrier_delays on the hand-made database of tests/pipelines/conftest.py (flight numbers refer
to the table there)."""

from __future__ import annotations

import datetime
import json

import pytest
from hamilton import driver

from pipelines import carrier_delays

_STATS = [
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


def _row(df, **keys):
    match = df
    for column, value in keys.items():
        match = match[match[column] == value]
    assert len(match) == 1, f"expected one row for {keys}, got {len(match)}"
    return match.iloc[0]


def test_carrier_month_rows_are_sorted_by_carrier_then_month(run_pipeline):
    table = run_pipeline(carrier_delays)["delays_by_carrier_month"]
    assert list(table.columns) == ["carrier", "carrier_name", "month", *_STATS]
    assert list(zip(table["carrier"], table["month"], strict=True)) == [
        ("AA", "2013-01"),
        ("AA", "2013-02"),
        ("B6", "2013-01"),
        ("B6", "2013-02"),
        ("DL", "2013-01"),
        ("DL", "2013-02"),
        ("HA", "2013-03"),
    ]
    assert _row(table, carrier="HA")["carrier_name"] == "Hawaiian Airlines Inc."


def test_departure_and_arrival_delays_per_carrier_month_match_hand_computation(run_pipeline):
    table = run_pipeline(carrier_delays)["delays_by_carrier_month"]
    aa_january = _row(table, carrier="AA", month="2013-01")
    # AA in January: flights 1, 4, 9, 14.
    # dep 10, -5, 20, 30: mean 55/4 = 13.75; median of -5, 10, 20, 30 = (10+20)/2 = 15;
    # more than 15 late: 20 and 30 -> 2/4 = 0.5.
    # arr 20, -10, 15, 25: mean 50/4 = 12.5; median of -10, 15, 20, 25 = 17.5;
    # more than 15 late: 20 and 25 -> 0.5 (15 itself is not late).
    assert aa_january["flights"] == 4
    assert aa_january["cancelled"] == 0
    assert aa_january["cancelled_share"] == 0.0
    assert aa_january["mean_dep_delay"] == 13.75
    assert aa_january["median_dep_delay"] == 15.0
    assert aa_january["dep_delayed_15_share"] == 0.5
    assert aa_january["mean_arr_delay"] == 12.5
    assert aa_january["median_arr_delay"] == 17.5
    assert aa_january["arr_delayed_15_share"] == 0.5


def test_cancelled_flights_are_counted_but_left_out_of_delay_statistics(run_pipeline):
    table = run_pipeline(carrier_delays)["delays_by_carrier_month"]
    b6_january = _row(table, carrier="B6", month="2013-01")
    # B6 in January: flights 3 and 16 cancelled; 13 (dep 10, arr 12) and 15 (dep 20, arr 18).
    assert b6_january["flights"] == 4
    assert b6_january["cancelled"] == 2
    assert b6_january["cancelled_share"] == 0.5
    assert b6_january["mean_dep_delay"] == 15.0  # (10 + 20) / 2
    assert b6_january["dep_delayed_15_share"] == 0.5  # 20 > 15, 10 is not
    assert b6_january["mean_arr_delay"] == 15.0  # (12 + 18) / 2
    assert b6_january["arr_delayed_15_share"] == 0.5  # 18 > 15


def test_monthly_table_for_all_carriers_matches_hand_computation(run_pipeline):
    table = run_pipeline(carrier_delays)["delays_by_month"]
    assert list(table["month"]) == ["2013-01", "2013-02", "2013-03"]
    assert list(table["flights"]) == [10, 5, 1]
    assert list(table["cancelled"]) == [2, 0, 0]
    # January departed: 10, 30, -5, 20, -3, 10, 30, 20 = 112 over 8 -> 14.0
    # February: 0, 60, 5, 15, 100 = 180 over 5 -> 36.0; March: flight 8 -> 7.0
    assert list(table["mean_dep_delay"]) == [14.0, 36.0, 7.0]
    assert list(table["cancelled_share"]) == [0.2, 0.0, 0.0]
    # More than 15 late in February: 60 and 100 (15 is not) -> 2/5 = 0.4.
    assert table["dep_delayed_15_share"].iloc[1] == 0.4


def test_carrier_ranking_orders_by_late_arrival_share_then_mean_arrival_delay(run_pipeline):
    ranking = run_pipeline(carrier_delays, min_flights=2)["carrier_ranking"]
    # HA has 1 flight < min_flights = 2, so it is not ranked.
    # B6: arrivals 12, 18, 15 -> 1 of 3 more than 15 late = 0.333.
    # AA: arrivals 20, -10, 15, 25, 5, 90 -> 3/6 = 0.5, mean 145/6 = 24.17.
    # DL: arrivals 25, -8, 70, 10 -> 2/4 = 0.5, mean 97/4 = 24.25: ties AA, loses on the mean.
    assert list(ranking["carrier"]) == ["B6", "AA", "DL"]
    assert list(ranking["rank"]) == [1, 2, 3]
    assert list(ranking["arr_delayed_15_share"]) == [0.333, 0.5, 0.5]
    assert list(ranking["mean_arr_delay"]) == [15.0, 24.17, 24.25]
    assert list(ranking["flights"]) == [5, 6, 4]
    # AA departures 10, -5, 20, 30, 0, 100: mean 155/6 = 25.83, median (10+20)/2 = 15.
    aa = _row(ranking, carrier="AA")
    assert aa["mean_dep_delay"] == 25.83
    assert aa["median_dep_delay"] == 15.0


def test_carrier_totals_include_carriers_below_min_flights(run_pipeline):
    totals = run_pipeline(carrier_delays, min_flights=2)["carrier_totals"]
    assert list(totals["carrier"]) == ["AA", "B6", "DL", "HA"]
    assert list(totals["flights"]) == [6, 5, 4, 1]


def test_summary_reports_totals_overall_delays_and_extremes(run_pipeline):
    summary = run_pipeline(carrier_delays, min_flights=2)["carrier_delay_summary"]
    # 16 flights, 2 cancelled (3 and 16) -> 0.125. Departed delays sum to 299 over 14 -> 21.36.
    # Arrivals 20,25,-10,5,70,15,3,15,-8,10,90,12,25,18 sum to 290 over 14 -> 20.71; more than
    # 15 late: 20, 25, 70, 90, 25, 18 -> 6/14 = 0.429. February has the worst mean, 36.0.
    assert summary == {
        "start_date": "2013-01-01",
        "end_date": "2013-12-31",
        "origin": "all",
        "min_flights": 2,
        "flights": 16,
        "cancelled": 2,
        "cancelled_share": 0.125,
        "mean_dep_delay": 21.36,
        "mean_arr_delay": 20.71,
        "arr_delayed_15_share": 0.429,
        "carriers": 4,
        "ranked_carriers": 3,
        "most_punctual_carrier": "B6",
        "least_punctual_carrier": "DL",
        "worst_month": "2013-02",
        "worst_month_mean_dep_delay": 36.0,
        "message": "16 flights by 4 carriers; 3 have at least 2 flights and are ranked.",
    }
    json.dumps(summary, allow_nan=False)  # plain JSON values only


def test_origin_filter_keeps_only_that_airports_departures(run_pipeline):
    table = run_pipeline(carrier_delays, origin="LGA")["delays_by_carrier_month"]
    # LGA: flights 9 (AA Jan, 20), 10 (DL Jan, -3), 11 (DL Feb, 15), 12 (AA Feb, 100).
    assert list(zip(table["carrier"], table["month"], table["mean_dep_delay"], strict=True)) == [
        ("AA", "2013-01", 20.0),
        ("AA", "2013-02", 100.0),
        ("DL", "2013-01", -3.0),
        ("DL", "2013-02", 15.0),
    ]


def test_date_range_is_inclusive_at_both_ends(run_pipeline):
    outputs = ["delays_by_carrier_month", "carrier_delay_summary"]
    day = datetime.date(2013, 3, 1)
    result = run_pipeline(carrier_delays, outputs, start_date=day, end_date=day, min_flights=1)
    assert list(result["delays_by_carrier_month"]["carrier"]) == ["HA"]
    assert result["carrier_delay_summary"]["flights"] == 1
    assert result["carrier_delay_summary"]["most_punctual_carrier"] == "HA"


def test_february_range_selects_february_flights_only(run_pipeline):
    result = run_pipeline(
        carrier_delays,
        ["delays_by_month"],
        start_date=datetime.date(2013, 2, 1),
        end_date=datetime.date(2013, 2, 28),
    )
    table = result["delays_by_month"]
    assert list(table["month"]) == ["2013-02"]
    assert table["flights"].iloc[0] == 5  # flights 5, 6, 7, 11, 12


def test_start_date_after_end_date_is_rejected_with_an_actionable_message(run_pipeline):
    with pytest.raises(ValueError, match=r"start_date \(2013-06-01\) is after end_date"):
        run_pipeline(
            carrier_delays,
            ["delays_by_carrier_month"],
            start_date=datetime.date(2013, 6, 1),
            end_date=datetime.date(2013, 5, 1),
        )


def test_min_flights_below_one_is_rejected(run_pipeline):
    with pytest.raises(ValueError, match="min_flights must be at least 1"):
        run_pipeline(carrier_delays, ["carrier_ranking"], min_flights=0)


def test_range_without_flights_gives_empty_tables_and_a_summary_saying_so(run_pipeline):
    result = run_pipeline(
        carrier_delays,
        start_date=datetime.date(2014, 1, 1),
        end_date=datetime.date(2014, 12, 31),
    )
    assert result["delays_by_carrier_month"].empty
    assert list(result["delays_by_carrier_month"].columns) == [
        "carrier",
        "carrier_name",
        "month",
        *_STATS,
    ]
    assert result["delays_by_month"].empty
    assert result["carrier_ranking"].empty
    assert "rank" in result["carrier_ranking"].columns
    summary = result["carrier_delay_summary"]
    assert summary["flights"] == 0
    assert summary["mean_dep_delay"] is None
    assert summary["most_punctual_carrier"] is None
    assert summary["worst_month"] is None
    assert summary["message"].startswith("No flights match")
    json.dumps(summary, allow_nan=False)


def test_inputs_fields_equal_the_dag_external_inputs_except_db():
    dr = driver.Builder().with_modules(carrier_delays).build()
    external = {v.name: v.type for v in dr.list_available_variables() if v.is_external_input}
    assert "db" in external
    del external["db"]
    fields = carrier_delays.Inputs.model_fields
    assert {name: field.annotation for name, field in fields.items()} == external
    assert all(field.description for field in fields.values())


def test_every_declared_output_is_a_node_of_the_dag():
    dr = driver.Builder().with_modules(carrier_delays).build()
    nodes = {v.name for v in dr.list_available_variables() if not v.is_external_input}
    assert set(carrier_delays.OUTPUTS) <= nodes


def test_default_inputs_run_on_the_fixture_database(run_pipeline):
    result = run_pipeline(carrier_delays)
    assert set(result) == set(carrier_delays.OUTPUTS)
    # min_flights defaults to 100, more than any fixture carrier has, so nobody is ranked.
    assert result["carrier_ranking"].empty
    assert result["carrier_delay_summary"]["flights"] == 16
    assert result["carrier_delay_summary"]["most_punctual_carrier"] is None
