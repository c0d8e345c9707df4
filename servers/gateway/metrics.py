"""Prometheus metrics at ``/metrics``: calls, errors by class and latency per tool (from the audit
records), and per backend its up/down state, circuit state and counters (from the backends).

With auth configured, ``/metrics`` needs a bearer token with the ``admin`` or ``metrics`` scope;
without, it is open like the rest of a loopback-only gateway.

Every series carries a ``replica`` label (``<host>-<pid>-<random>``, see ``servers.replica``):
each process counts what it served, so a deployment's numbers are the sum over replicas.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from fastmcp import FastMCP
from fastmcp.server.auth import AuthProvider
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import generate_latest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from servers.gateway.audit import UNKNOWN, Audit, CallRecord
from servers.gateway.policy import granted
from servers.health import Health
from servers.replica import process_name

MAX_NAMES = 500
OTHER = "(other)"


class BackendCollector:
    """Reads the backends' numbers at scrape time."""

    def __init__(self, health: Health) -> None:
        self.health = health

    def collect(self):
        families: dict[str, GaugeMetricFamily | CounterMetricFamily] = {}
        for source in self.health.metrics().values():
            for subject, numbers in source.items():
                for key, value in numbers.items():
                    name = f"gateway_backend_{key.removesuffix('_total')}"
                    if name not in families:
                        kind = CounterMetricFamily if key.endswith("_total") else GaugeMetricFamily
                        help_text = (
                            "Circuit of the backend: 0 closed, 1 half open, 2 open"
                            if key == "circuit_state"
                            else f"Backend {key.replace('_', ' ')}"
                        )
                        families[name] = kind(name, help_text, labels=["replica", "backend"])
                    families[name].add_metric([process_name(), subject], value)
        yield from families.values()


class Metrics:
    def __init__(self, health: Health) -> None:
        self.registry = CollectorRegistry()
        self.names: set[str] = set()
        self.replica = process_name()
        labels = ["replica", "kind", "name"]
        self.calls = Counter(
            "gateway_calls", "Calls by component and outcome", [*labels, "outcome"],
            registry=self.registry,
        )  # fmt: skip
        self.errors = Counter(
            "gateway_errors", "Failed or refused calls by error class", [*labels, "error_class"],
            registry=self.registry,
        )  # fmt: skip
        self.latency = Histogram(
            "gateway_call_duration_seconds", "Call latency", labels, registry=self.registry
        )
        self.registry.register(BackendCollector(health))

    def _label(self, record: CallRecord) -> str:
        # Resources by scheme and namespace, so template instances do not grow the label set;
        # and a bounded set of names, so unknown names sent by clients cannot either.
        if not record.known:  # made-up names: one label, never crowding out real ones
            return UNKNOWN
        name = record.name
        if record.kind == "resource":
            parts = urlsplit(name)
            name = f"{parts.scheme}://{parts.netloc}"
        if name not in self.names and len(self.names) >= MAX_NAMES:
            return OTHER
        self.names.add(name)
        return name

    def observe(self, record: CallRecord) -> None:
        name = self._label(record)
        replica = self.replica
        self.calls.labels(replica, record.kind, name, record.outcome).inc()
        if record.outcome != "ok":
            self.errors.labels(replica, record.kind, name, record.error_class or "unknown").inc()
        self.latency.labels(replica, record.kind, name).observe(record.duration_ms / 1000)

    def render(self) -> bytes:
        return generate_latest(self.registry)


def install_metrics(
    gateway: FastMCP, audit: Audit, health: Health, auth: AuthProvider | None
) -> Metrics:
    """Feed metrics from the audit and serve them at /metrics."""
    metrics = Metrics(health)
    audit.listeners.append(metrics.observe)

    @gateway.custom_route("/metrics", methods=["GET"])
    async def scrape(request: Request) -> Response:
        if auth is not None:
            header = request.headers.get("authorization", "")
            scheme, _, token = header.partition(" ")
            accepted = await auth.verify_token(token) if scheme.lower() == "bearer" else None
            if accepted is None:
                return JSONResponse(
                    {"error": "a bearer token with the admin or metrics scope is required"},
                    status_code=401,
                    headers={"WWW-Authenticate": "Bearer"},
                )
            if not (granted(accepted.scopes, "admin") or granted(accepted.scopes, "metrics")):
                return JSONResponse(
                    {"error": "this token lacks the admin or metrics scope"}, status_code=403
                )
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return metrics
