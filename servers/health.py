"""Health of the service: named checks for each mount and backend, run together with a deadline.

Local mounts decide readiness; a backend, or a service the gateway uses (the background-run
queue, a Dask scheduler), that is down makes the service "degraded", not unready, because every
other namespace still works.
"""

from __future__ import annotations

import time
import tomllib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import anyio

from servers.replica import process_name
from servers.settings import PROJECT_ROOT, GatewaySettings

Check = Callable[[], Awaitable[dict]]
MetricsSource = Callable[[], dict[str, dict[str, float]]]
Kind = Literal["mount", "backend", "service"]


def project_version() -> str:
    with open(PROJECT_ROOT / "pyproject.toml", "rb") as file:
        return tomllib.load(file)["project"]["version"]


@dataclass
class Health:
    """Checks by name; each returns a dict with at least ``status``: "up" or "down" (a backend
    may also be "starting", or "disabled" in the config)."""

    timeout_s: float = 2.0
    started: float = field(default_factory=time.time)
    checks: dict[str, tuple[Kind, Check]] = field(default_factory=dict)
    metric_sources: dict[str, MetricsSource] = field(default_factory=dict)

    def add(self, name: str, kind: Kind, check: Check) -> None:
        self.checks[name] = (kind, check)

    reloads: ClassVar[frozenset[str]] = frozenset({"ready_timeout_s"})
    lists: ClassVar[frozenset[str]] = frozenset()

    def check(self, new: GatewaySettings) -> float | None:
        return None if new.ready_timeout_s == self.timeout_s else new.ready_timeout_s

    async def apply(self, timeout_s: float) -> list[str]:
        self.timeout_s = timeout_s
        return ["ready_timeout_s"]

    def add_metrics(self, name: str, source: MetricsSource) -> None:
        """Register numbers for a metrics exporter: ``source()`` gives {subject: {metric: value}},
        e.g. ``{"demo": {"up": 1.0, "circuit_state": 0.0, ...}}`` for the backends."""
        self.metric_sources[name] = source

    def metrics(self) -> dict[str, dict[str, dict[str, float]]]:
        """Every registered source's numbers, read now, without waiting for anything."""
        return {name: source() for name, source in self.metric_sources.items()}

    async def report(self) -> dict:
        """Run every check at once, each bounded by timeout_s; summarise readiness."""
        results: dict[str, dict] = {}

        async def run(name: str, check: Check) -> None:
            try:
                with anyio.fail_after(self.timeout_s):
                    results[name] = await check()
            except TimeoutError:
                results[name] = {"status": "down", "error": f"no answer in {self.timeout_s:g} s"}
            except Exception as exc:  # a failing check reports down, it never breaks the report
                results[name] = {"status": "down", "error": type(exc).__name__}

        async with anyio.create_task_group() as group:
            for name, (_, check) in self.checks.items():
                group.start_soon(run, name, check)
        by_kind = {
            kind: {name: results[name] for name, (k, _) in self.checks.items() if k == kind}
            for kind in ("mount", "backend", "service")
        }
        mounts_up = all(r["status"] == "up" for r in by_kind["mount"].values())
        backends_up = all(  # a backend disabled in the config is not waited for
            r["status"] in ("up", "disabled")
            for kind in ("backend", "service")
            for r in by_kind[kind].values()
        )
        status = "ready" if mounts_up and backends_up else "degraded" if mounts_up else "unready"
        return {
            "status": status,
            "version": project_version(),
            "uptime_s": round(time.time() - self.started, 1),
            "replica": process_name(),  # this process only: each replica reports itself
            "mounts": by_kind["mount"],
            "backends": by_kind["backend"],
            **({"services": by_kind["service"]} if by_kind["service"] else {}),
        }
