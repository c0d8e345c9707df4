"""The pipeline registry: start-up validation, the input schemas the run tools publish, and
the pure functions under the pipelines server (result shaping, call checking)."""

import datetime as dt

import numpy as np
import pandas as pd
import pytest
from fastmcp import Client

from pipelines import Pipeline, carrier_delays, registry, route_profile
from servers.pipelines.registry import (
    PipelineError,
    check_call,
    input_schema,
    load_registry,
    shape_output,
)
from servers.pipelines.server import create_server
from servers.settings import GatewaySettings, PipelineOverride
from tests.fixtures import broken_pipeline


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_a_broken_pipeline_is_withdrawn_naming_the_module_and_the_problem(settings, mode):
    # Built and validated in a subprocess after start (Hamilton stays out of the server):
    # its calls are refused with the reason, and it leaves the list.
    broken = {"broken": Pipeline(broken_pipeline, broken_pipeline.OUTPUTS)}
    async with Client(create_server(settings, pipelines=broken), mode=mode) as client:
        run = await client.call_tool("run_broken", {}, raise_on_error=False)
        assert run.is_error
        message = run.content[0].text
        assert "withdrawn" in message and "tests.fixtures.broken_pipeline" in message
        assert "input 'days' is int in `Inputs` but the functions take str" in message
        listed = (await client.call_tool("list_pipelines", {})).structured_content
        assert listed["result"] == []


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        (Pipeline(route_profile, ("no_such_node",)), "declares outputs that are not nodes"),
        (Pipeline(route_profile, ("origin",)), "declares outputs that are not nodes"),
        (Pipeline(route_profile, ()), "declares no public outputs"),
        (Pipeline(route_profile, ("route_summary",), engine="spark"), "names engine 'spark'"),
        (Pipeline(broken_pipeline, ("flights_in_window",)), "input 'days' is int"),
    ],
)
def test_each_kind_of_broken_registry_entry_is_refused_with_its_reason(spec, problem):
    with pytest.raises(PipelineError, match=problem) as failed:
        load_registry({"entry": spec})
    assert "pipeline 'entry' (module " in str(failed.value)


def test_an_override_for_an_unknown_pipeline_is_refused_naming_the_registered_ones():
    with pytest.raises(PipelineError, match="unknown pipelines \\['carrier_dealys'\\]") as failed:
        load_registry(registry(), {"carrier_dealys": PipelineOverride(engine="threads")})
    assert "carrier_delays" in str(failed.value)


def test_settings_override_the_registry_run_options_per_pipeline():
    loaded = load_registry(
        registry(), {"route_profile": PipelineOverride(engine="threads", run_timeout_s=5)}
    )
    assert (loaded["route_profile"].spec.engine, loaded["route_profile"].spec.timeout_s) == (
        "threads",
        5,
    )
    assert loaded["carrier_delays"].spec.engine == "local"


def test_the_carrier_delays_schema_has_types_formats_defaults_descriptions_and_choices():
    schema = input_schema(load_registry(registry())["carrier_delays"])
    props = schema["properties"]
    assert schema["additionalProperties"] is False
    assert set(props) == set(carrier_delays.Inputs.model_fields)
    assert schema.get("required", []) == []
    assert props["start_date"] == {
        "type": "string",
        "format": "date",
        "default": "2013-01-01",
        "description": carrier_delays.Inputs.model_fields["start_date"].description,
    }
    assert props["origin"]["anyOf"] == [
        {"enum": ["EWR", "JFK", "LGA"], "type": "string"},
        {"type": "null"},
    ]
    assert props["origin"]["default"] is None
    assert props["min_flights"]["type"] == "integer"
    assert props["min_flights"]["minimum"] == 1
    assert all(p.get("description") for p in props.values())


def test_the_route_profile_schema_carries_the_pattern_and_the_enum():
    props = input_schema(load_registry(registry())["route_profile"])["properties"]
    assert props["origin"]["enum"] == ["EWR", "JFK", "LGA"]
    assert props["dest"]["pattern"] == "^[A-Z0-9]{3}$"
    assert props["dest"]["default"] == "LAX"


async def test_each_run_tool_publishes_its_pipelines_schema_as_its_parameters(data_dir):
    settings = GatewaySettings.load(data_dir=data_dir, mcpServers={})
    server = create_server(settings)
    loaded = load_registry(registry())
    async with Client(server) as client:
        tools = {tool.name: tool for tool in await client.list_tools()}
    for name, pipeline in loaded.items():
        assert tools[f"run_{name}"].input_schema == input_schema(pipeline)
    assert {"start_run", "get_run", "cancel_run", "run_pipeline"} <= set(tools)


def test_per_pipeline_overrides_come_from_the_environment_as_json(monkeypatch):
    monkeypatch.setenv(
        "GATEWAY_PIPELINES__OVERRIDES", '{"route_profile": {"engine": "dask", "cache": true}}'
    )
    override = GatewaySettings.load().pipelines.overrides["route_profile"]
    assert (override.engine, override.cache, override.run_timeout_s) == ("dask", True, None)


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
