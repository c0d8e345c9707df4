"""Which replica answers: /ready, admin_status and every /metrics series name the process that
describes itself, unique across containers (host, process id and a random part)."""

import os
import socket

from fastmcp.utilities.tests import asgi_server


async def test_ready_status_and_metrics_name_the_replica_that_answers(gateway):
    async with asgi_server(gateway) as server:
        async with server.client(mode="auto") as client:
            await client.call_tool("sql_list_tables", {})
            status = (await client.call_tool("admin_status", {})).structured_content
        async with server.http_client() as http:
            ready = (await http.get("/ready")).json()
            metrics = (await http.get("/metrics")).text
    replica = ready["replica"]
    host, pid, _ = replica.split("-")
    assert host == socket.gethostname().replace("-", "_") and int(pid) == os.getpid()
    assert status["replica"] == replica
    series = [line for line in metrics.splitlines() if line.startswith("gateway_calls_total{")]
    assert series and all(f'replica="{replica}"' in line for line in series)
    backend = [line for line in metrics.splitlines() if line.startswith("gateway_backend_up{")]
    assert backend and all(f'replica="{replica}"' in line for line in backend)
