"""The backends' pure parts, without MCP: circuit breaker, names, catalog states, failure
reasons, and the config rules that stop a bad mcpServers entry at start-up."""

import re

import httpx2
import mcp_types
import pytest
from mcp import MCPError
from pydantic import ValidationError

from servers.backends.catalog import Catalog, catalog_state
from servers.backends.circuit import CircuitBreaker
from servers.backends.errors import backend_answer, describe_failure
from servers.backends.names import (
    NAME_MAX,
    assign_names,
    backend_uri,
    gateway_name,
    namespaced_uri,
    tool_allowed,
)
from servers.settings import GatewaySettings

VALID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_circuit_opens_after_the_configured_consecutive_failures():
    breaker = CircuitBreaker(failures=3, reset_s=10, clock=Clock())
    for _ in range(2):
        assert breaker.allow()
        breaker.record_failure()
    assert breaker.state == "closed"
    assert breaker.allow()
    breaker.record_failure()
    assert breaker.state == "open"
    assert not breaker.allow()
    assert breaker.snapshot()["times_opened"] == 1


def test_a_success_resets_the_failure_count():
    breaker = CircuitBreaker(failures=2, reset_s=10, clock=Clock())
    breaker.record_failure()
    breaker.record_success()
    breaker.record_failure()
    assert breaker.state == "closed"


def test_an_open_circuit_lets_one_probe_through_after_the_reset_time():
    clock = Clock()
    breaker = CircuitBreaker(failures=1, reset_s=10, clock=clock)
    breaker.record_failure()
    clock.now += 9.9
    assert not breaker.allow()
    assert breaker.retry_in() == pytest.approx(0.1)
    clock.now += 0.1
    assert breaker.state == "half_open"
    assert breaker.allow()  # the probe
    assert not breaker.allow()  # only one at a time


def test_a_successful_probe_closes_the_circuit_and_a_failed_one_reopens_it():
    clock = Clock()
    breaker = CircuitBreaker(failures=1, reset_s=10, clock=clock)
    breaker.record_failure()
    clock.now += 10
    assert breaker.allow()
    breaker.record_failure()
    assert breaker.state == "open"
    assert breaker.retry_in() == pytest.approx(10)
    assert breaker.times_opened == 2
    clock.now += 10
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state == "closed" and breaker.allow()


def test_a_cancelled_probe_gives_its_turn_back():
    clock = Clock()
    breaker = CircuitBreaker(failures=1, reset_s=1, clock=clock)
    breaker.record_failure()
    clock.now += 1
    assert breaker.allow()
    breaker.release_probe()
    assert breaker.allow()


def test_short_valid_names_are_kept_as_namespace_underscore_name():
    assert gateway_name("demo", "convert_units") == "demo_convert_units"


@pytest.mark.parametrize(
    "name", ["x" * 80, "summarise every delay/by carrier", "résumé", "a" * 59 + "bcdef"]
)
def test_long_or_invalid_names_are_shortened_to_valid_names_deterministically(name):
    shortened = gateway_name("weather", name)
    assert VALID.match(shortened) and len(shortened) <= NAME_MAX
    assert shortened.startswith("weather_")
    assert shortened == gateway_name("weather", name)


def test_names_that_shorten_alike_stay_distinct():
    a, b = "x" * 70 + "a", "x" * 70 + "b"
    assert gateway_name("ns", a) != gateway_name("ns", b)


def test_assigned_names_avoid_reserved_and_earlier_names():
    taken = {"search_tools"}
    names = assign_names("search", ["tools", "other"], taken)
    assert names["other"] == "search_other"
    assert names["tools"] != "search_tools" and VALID.match(names["tools"])
    again = assign_names("search", ["other"], taken)  # a second backend claiming the same name
    assert again["other"] != "search_other"
    assert again == assign_names(
        "search", ["other"], {"search_tools", names["tools"], "search_other"}
    )


def test_resource_uris_are_namespaced_and_reversible():
    assert namespaced_uri("docs", "notes://today/1") == "notes://docs/today/1"
    assert backend_uri("docs", "notes://docs/today/1") == "notes://today/1"
    assert backend_uri("docs", "notes://other/today") is None


@pytest.mark.parametrize(
    ("name", "allow", "deny", "offered"),
    [
        ("echo", [], [], True),
        ("echo", ["e*"], [], True),
        ("crash", ["e*"], [], False),
        ("crash", [], ["crash"], False),
        ("echo", ["*"], ["ec*"], False),  # deny wins
    ],
)
def test_allow_and_deny_lists_use_shell_patterns_and_deny_wins(name, allow, deny, offered):
    assert tool_allowed(name, allow, deny) is offered


def test_a_catalog_is_fresh_then_stale_then_expired_after_the_grace_period():
    catalog = Catalog(fetched_at=0.0)
    state = lambda now, since=None: catalog_state(  # noqa: E731
        catalog, now=now, refresh_interval_s=60, unhealthy_since=since, grace_s=300
    )
    assert state(10) == "fresh"
    assert state(61) == "stale"  # old, still offered while it is refreshed
    assert state(70, since=65) == "stale"  # backend down: offered for the grace period
    assert state(366, since=65) == "expired"
    assert catalog_state(None, now=0, refresh_interval_s=1, unhealthy_since=None, grace_s=1) == (
        "none"
    )


def test_failures_are_described_without_hosts_or_paths():
    refused = ExceptionGroup("x", [httpx2.ConnectError("[Errno 111] 127.0.0.1:9 refused")])
    assert describe_failure(refused, 3) == "connection refused or host unreachable"
    assert describe_failure(TimeoutError(), 3) == "no answer within 3 s"
    closed = MCPError(code=mcp_types.CONNECTION_CLOSED, message="Connection closed")
    assert describe_failure(closed, 3) == "the connection was lost"


def test_only_the_backends_own_errors_count_as_answers():
    answer = MCPError(code=mcp_types.INVALID_PARAMS, message="bad arguments")
    assert backend_answer(ExceptionGroup("x", [answer])) is answer
    assert backend_answer(MCPError(code=mcp_types.CONNECTION_CLOSED, message="gone")) is None
    assert backend_answer(httpx2.ReadTimeout("slow")) is None


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"url": "http://a/mcp", "openapi": "spec.json"}, "exactly one"),
        ({"openapi": "http://a/openapi.json"}, "base_url"),
        ({"openapi": "no/such/spec.json", "base_url": "http://a"}, "does not exist"),
        ({"url": "http://a/mcp", "bearer_token_env": "NO_SUCH_VARIABLE_X"}, "NO_SUCH_VARIABLE_X"),
        ({"url": "http://a/mcp", "timeout_s": 0}, "timeout_s"),
        ({"url": "http://a/mcp", "circuit_failures": 0}, "circuit_failures"),
        (
            {"command": "x", "restart_backoff_s": 5, "restart_backoff_max_s": 1},
            "restart_backoff_max_s",
        ),
    ],
)
def test_an_invalid_backend_entry_stops_start_up_naming_it(entry, message):
    with pytest.raises(ValidationError, match=message) as info:
        GatewaySettings.load(mcpServers={"weather": entry})
    assert "weather" in str(info.value)


@pytest.mark.parametrize("key", ["sql_extra", "admin_tools", "pipelines_more"])
def test_a_backend_cannot_take_a_namespace_that_would_shadow_local_tools(key):
    with pytest.raises(ValidationError, match="shadow"):
        GatewaySettings.load(mcpServers={key: {"url": "http://a/mcp"}})


async def test_the_provider_checks_then_applies_backend_changes_and_keeps_health_in_step():
    from servers.backends.provider import BackendsProvider
    from servers.health import Health

    health = Health()
    first = GatewaySettings(mcpServers={"one": {"url": "http://127.0.0.1:9/mcp"}})
    provider = BackendsProvider(first.backends, set(), health=health)
    assert set(health.checks) == {"one"}
    second = GatewaySettings(mcpServers={"two": {"url": "http://127.0.0.1:9/mcp"}})
    changes = provider.check(second)
    assert set(provider.backends) == {"one"} and set(health.checks) == {"one"}  # no effect yet
    assert await provider.apply(changes) == ["backends (added: two; removed: one)"]
    assert set(provider.backends) == {"two"} and set(health.checks) == {"two"}
    assert await provider.apply(provider.check(second)) == []  # nothing changed
    assert (await health.checks["two"][1]())["status"] == "stopped"  # not running: not "up"


def test_a_component_that_cannot_be_offered_is_dropped_and_its_siblings_stay():
    from servers.backends.components import build_index

    class Caller:
        name = "odd"

    catalog = Catalog(
        tools=(mcp_types.Tool(name="echo", input_schema={"type": "object"}),),
        resources=tuple(
            mcp_types.Resource(uri=uri, name=f"r{i}")
            for i, uri in enumerate(["urn:example:report", "mailto:a@b.c", "", "test://fine"])
        ),
        templates=(mcp_types.ResourceTemplate(uri_template="urn:{x}", name="t"),),
    )
    index = build_index([(Caller(), catalog, [], [])], set())
    assert set(index.tools) == {"odd_echo"}
    assert set(index.resources) == {"test://odd/fine"}
    assert index.templates == []
    assert len(index.dropped["odd"]) == 4


@pytest.mark.parametrize(
    ("head", "request_id"),
    [
        (b'{"jsonrpc":"2.0","id":7,"result":{"content":[{"type":"text","text":"xx', 7),
        (b'{"id": "abc", "jsonrpc": "2.0", "result": {', "abc"),
        (b'{"jsonrpc":"2.0","method":"notifications/progress","params":{"id":3,', None),
    ],
)
def test_an_over_long_stdio_answer_is_answered_with_an_error_for_its_own_request_only(
    head, request_id
):
    from servers.backends.link import ANSWER_TOO_LARGE
    from servers.backends.process import _too_large

    answer = _too_large(head, 1000)
    if request_id is None:
        assert answer is None  # a notification's inner "id" is never taken for a request's
    else:
        assert answer.message.id == request_id
        assert answer.message.error.code == ANSWER_TOO_LARGE
        assert "larger than 1000 bytes" in answer.message.error.message
