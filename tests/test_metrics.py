"""Prometheus metrics at /metrics and the per-tool numbers of admin_status."""

import contextlib
import re

from fastmcp.exceptions import ToolError
from fastmcp.utilities.tests import asgi_server


def sample(text: str, metric: str, **labels: str) -> float:
    """The value of one sample of the exposition text (0 when absent)."""
    for line in text.splitlines():
        if not line.startswith(metric + "{"):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_metrics_count_calls_errors_and_latency_per_tool_and_show_backends(gateway):
    async with asgi_server(gateway) as server:
        async with server.http_client() as http:
            before = (await http.get("/metrics")).text
        async with server.client(mode="legacy") as client:
            await client.call_tool("sql_list_tables", {})
            with contextlib.suppress(ToolError):
                await client.call_tool("sql_query", {"sql": "drop table flights"})
        async with server.http_client() as http:
            response = await http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    calls = dict(kind="tool", name="sql_list_tables", outcome="ok")
    assert (
        sample(text, "gateway_calls_total", **calls)
        == sample(before, "gateway_calls_total", **calls) + 1
    )
    assert (
        sample(text, "gateway_errors_total", kind="tool", name="sql_query", error_class="ToolError")
        >= 1
    )
    assert (
        sample(text, "gateway_call_duration_seconds_count", kind="tool", name="sql_list_tables")
        >= 1
    )
    assert "gateway_backend_up{" in text and 'backend="demo"' in text
    assert "gateway_backend_circuit_state{" in text


async def test_admin_status_reports_calls_errors_and_latency_percentiles_per_tool(client):
    await client.call_tool("sql_list_tables", {})
    status = (await client.call_tool("admin_status", {})).structured_content
    numbers = status["calls"]["sql_list_tables"]
    assert numbers["calls"] >= 1 and numbers["errors"] >= 0
    assert 0 < numbers["p50_ms"] <= numbers["p99_ms"]
