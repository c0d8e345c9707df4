"""The pure functions under the pipelines server: result shaping and call checking."""

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from pipelines import registry
from servers.pipeline_registry import PipelineError, check_call, load_registry, shape_output


def test_missing_values_in_a_dataframe_become_null():
    frame = pd.DataFrame(
        {
            "x": [1.5, np.nan],
            "when": [pd.Timestamp("2013-01-01"), pd.NaT],
            "tag": pd.Series(["a", None], dtype="string"),
        }
    )
    shaped = shape_output(frame, max_rows=10, max_bytes=10_000)
    assert shaped["rows"] == [[1.5, "2013-01-01T00:00:00", "a"], [None, None, None]]
    assert [c["name"] for c in shaped["columns"]] == ["x", "when", "tag"]


def test_a_large_dataframe_is_capped_and_says_so():
    shaped = shape_output(pd.DataFrame({"n": range(1000)}), max_rows=10, max_bytes=10_000)
    assert (shaped["row_count"], shaped["truncated"], shaped["truncated_reason"]) == (
        10,
        True,
        "rows",
    )


def test_summaries_become_plain_json():
    shaped = shape_output({"day": dt.date(2013, 7, 4), "n": np.int64(3)}, 10, 10_000)
    assert shaped == {"day": "2013-07-04", "n": 3}


@pytest.fixture(scope="module")
def loaded():
    return load_registry(registry())


def test_defaults_fill_inputs_and_all_public_outputs_are_chosen(loaded):
    values, outputs = check_call(loaded["route_profile"], {}, None)
    assert values == {"origin": "JFK", "dest": "LAX"}
    assert outputs == list(loaded["route_profile"].spec.outputs)


@pytest.mark.parametrize(
    ("inputs", "outputs", "message"),
    [
        ({"origin": "BOS"}, None, "origin: Input should be 'EWR', 'JFK' or 'LGA'"),
        ({"orign": "JFK"}, None, "Unknown inputs .* orign"),
        ({}, ["_route_flights"], "no public output '_route_flights'"),
        ({}, ["route_summary", "db"], "no public output 'db'"),
    ],
)
def test_wrong_inputs_and_hidden_outputs_are_refused_listing_what_is_expected(
    loaded, inputs, outputs, message
):
    with pytest.raises(PipelineError, match=message) as info:
        check_call(loaded["route_profile"], inputs, outputs)
    if outputs is None:
        assert "Expected: origin" in str(info.value)
