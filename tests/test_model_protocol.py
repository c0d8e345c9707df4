"""The protocol to the letter: a resource that does not exist, or a template parameter that
names nothing, answers -32602 with a clear message (not -32603), logged without a traceback."""

import logging

import pytest
from mcp import MCPError

INVALID_PARAMS = -32602

READS = [
    ("sql://sql/tabels", "Did you mean sql://sql/tables"),
    ("sql://sql/tables/nope/schema", "There is no table or view named 'nope'"),
    ("sql://sql/results/nope", "No stored result 'nope'"),
    ("pipelines://pipelines/nope/dag", "There is no pipeline named 'nope'"),
]


@pytest.mark.parametrize(("uri", "said"), READS, ids=[uri for uri, _ in READS])
async def test_a_read_naming_nothing_answers_invalid_params_with_a_clear_message(
    client, caplog, uri, said
):
    fastmcp_log = logging.getLogger("fastmcp")  # it does not propagate to the root logger
    fastmcp_log.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.INFO), pytest.raises(MCPError) as raised:
            await client.read_resource(uri)
    finally:
        fastmcp_log.removeHandler(caplog.handler)
    assert raised.value.error.code == INVALID_PARAMS
    assert said in raised.value.error.message
    assert not [r for r in caplog.records if r.exc_info and r.levelno >= logging.INFO]


async def test_an_existing_resource_still_reads(client):
    [contents] = await client.read_resource("sql://sql/tables/airlines/schema")
    assert "carrier" in contents.text
