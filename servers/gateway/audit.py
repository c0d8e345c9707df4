"""The audit log: every tool call, resource read and prompt get, who made it and how it ended.

Each call becomes one JSON line (time, client, kind, name, argument summary, duration, outcome,
error class, the replica that served it) in a rotating file, and stays in memory for
``admin_recent_calls`` and the per-tool counts and latencies of ``admin_status``. Argument
summaries are cut to a configured length and secrets are redacted: values under keys that look
secret (password, token, secret, authorization, api key, cookie, credential) and every secret
value of the settings (backend headers, bearer tokens, passwords in URLs, the environment token).
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import statistics
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from logging.handlers import RotatingFileHandler
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import anyio
from fastmcp.exceptions import FastMCPError, PromptError, ResourceError, ToolError
from fastmcp.server.middleware import CallNext, Middleware, MiddlewareContext
from pydantic import BaseModel, SecretStr

from servers.gateway.policy import client_scopes
from servers.replica import process_name
from servers.settings import GatewaySettings

SECRET_KEY = re.compile(r"pass|token|secret|authori[sz]ation|api[-_]?key|cookie|credential", re.I)
REDACTED = "***"
MIN_SECRET_CHARS = 6
MAX_NAMES = 1000  # names counted apart (a backstop: made-up names all count as UNKNOWN)
UNKNOWN = "(unknown)"
errors_log = logging.getLogger("gateway.errors")


def _url_secrets(url: str) -> list[str]:
    parts = urlsplit(url)
    found = [parts.password] if parts.password else []
    return found + [value for key, value in parse_qsl(parts.query) if SECRET_KEY.search(key)]


def settings_secrets(settings: GatewaySettings) -> set[str]:
    """Every secret value the settings hold, to be blanked wherever it appears."""
    found: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, SecretStr):
            secret = value.get_secret_value()
            found.extend(_url_secrets(secret) if "://" in secret else [secret])
        elif isinstance(value, BaseModel):
            for name in type(value).model_fields:
                walk(getattr(value, name))
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list | tuple):
            for item in value:
                walk(item)

    walk(settings)
    for config in settings.backends.values():
        for url in (config.url, config.base_url):
            found += _url_secrets(url) if url else []
        found += [value for key, value in config.env.items() if SECRET_KEY.search(key)]
        if config.bearer_token_env:
            found.append(os.environ.get(config.bearer_token_env, ""))
    return {secret for secret in found if secret and len(secret) >= MIN_SECRET_CHARS}


class Redactor:
    def __init__(self, secrets: set[str]) -> None:
        # Longest first, so a secret containing another is blanked whole.
        self.secrets = sorted(secrets, key=len, reverse=True)

    def text(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        return text

    def value(self, value: Any) -> Any:
        if isinstance(value, dict):
            return {
                str(k): REDACTED if SECRET_KEY.search(str(k)) else self.value(v)
                for k, v in value.items()
            }
        if isinstance(value, list | tuple):
            return [self.value(v) for v in value]
        if isinstance(value, str):
            return self.text(value)
        return value

    def summary(self, arguments: Any, limit: int) -> str:
        text = self.text(json.dumps(self.value(arguments), default=str, ensure_ascii=True))
        if len(text) > limit:
            text = f"{text[:limit]}... ({len(text)} chars)"
        return text


@dataclass
class CallRecord:
    time: str
    client: str
    kind: str
    name: str
    arguments: str
    duration_ms: float
    outcome: str
    error_class: str | None = None
    correlation_id: str | None = None
    known: bool = True  # False: no such tool, resource or prompt (a made-up name)
    replica: str = field(default_factory=process_name)  # the process that served it


class Audit:
    """The log file, the recent calls and the per-tool numbers since start."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings.audit
        self.redactor = Redactor(settings_secrets(settings))
        self.recent: deque[CallRecord] = deque(maxlen=self.settings.recent)
        self.started = time.time()
        self.counts: dict[str, dict[str, int]] = {}
        self.durations: dict[str, deque[float]] = {}
        self.listeners: list[Callable[[CallRecord], None]] = []
        path = self.settings.file or settings.data_dir / "audit.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        self.handler = RotatingFileHandler(
            path,
            maxBytes=self.settings.max_bytes,
            backupCount=self.settings.backup_count,
            encoding="utf-8",
            delay=True,
        )
        self.handler.setFormatter(logging.Formatter("%(message)s"))
        self.logger = logging.getLogger(f"gateway.audit.{id(self)}")
        self.logger.propagate = False
        self.logger.setLevel(logging.INFO)
        self.logger.addHandler(self.handler)

    def record(self, record: CallRecord) -> None:
        self.recent.append(record)
        self.logger.info(json.dumps(asdict(record), ensure_ascii=True))
        name = record.name if record.known else UNKNOWN
        if name not in self.counts and len(self.counts) >= MAX_NAMES:
            name = "(other)"
        counts = self.counts.setdefault(name, {"calls": 0, "errors": 0})
        counts["calls"] += 1
        counts["errors"] += record.outcome != "ok"
        self.durations.setdefault(name, deque(maxlen=10_000)).append(record.duration_ms)
        for listener in self.listeners:
            listener(record)

    def recent_calls(
        self,
        limit: int = 50,
        tool: str | None = None,
        client: str | None = None,
        errors_only: bool = False,
    ) -> list[dict]:
        """Newest first, filtered."""
        found = []
        for record in reversed(self.recent):
            if tool is not None and record.name != tool:
                continue
            if client is not None and record.client != client:
                continue
            if errors_only and record.outcome == "ok":
                continue
            found.append(asdict(record))
            if len(found) >= limit:
                break
        return found

    def per_tool(self) -> dict[str, dict]:
        """Calls, errors and p50/p99 latency (ms) per component since start."""
        report = {}
        for name, counts in sorted(self.counts.items()):
            durations = sorted(self.durations[name])
            report[name] = {
                **counts,
                "p50_ms": round(_quantile(durations, 0.50), 2),
                "p99_ms": round(_quantile(durations, 0.99), 2),
            }
        return report


def _quantile(sorted_values: list[float], q: float) -> float:
    if len(sorted_values) == 1:
        return sorted_values[0]
    return statistics.quantiles(sorted_values, n=100, method="inclusive")[round(q * 100) - 1]


def masked_cause(exc: BaseException) -> BaseException | None:
    """The unexpected exception behind an error fastmcp masked (mask_error_details), if any."""
    cause = exc.__cause__
    if (
        isinstance(exc, ToolError | ResourceError | PromptError)
        and str(exc).startswith("Error ")
        and cause is not None
        and not isinstance(cause, FastMCPError)
    ):
        return cause
    return None


def one_line(text: str) -> str:
    """Text for a log line: control characters (newlines, escapes) shown as escapes."""
    return json.dumps(text, ensure_ascii=True)[1:-1]


async def _exists(context: MiddlewareContext, kind: str, name: str) -> bool:
    """Whether the gateway has a tool, resource (or template matching it) or prompt of that
    name, whoever may use it; asked only after a failed call, so made-up names (which clients
    can send without end) fold into one label in the counts and metrics."""
    server = context.fastmcp_context.fastmcp if context.fastmcp_context else None
    if server is None:
        return True
    try:
        if kind == "tool":
            return await server.get_tool(name) is not None
        if kind == "prompt":
            return await server.get_prompt(name) is not None
        if await server.get_resource(name) is not None:
            return True
        templates = await server.list_resource_templates(run_middleware=False)
        return any(t.matches(name) is not None for t in templates)
    except Exception:  # not found, or a lookup that failed: a name the gateway does not have
        return False


class AuditMiddleware(Middleware):
    """Records every call, read and get, whatever its outcome (refusals included). An
    unexpected error reaches the client as a message with a correlation id; its details go only
    to the server log (logger ``gateway.errors``), on one line, under the same id."""

    def __init__(self, audit: Audit) -> None:
        self.audit = audit

    async def _audited(self, kind: str, name: str, arguments: Any, context, call_next):
        client, _ = client_scopes()
        started = time.perf_counter()
        outcome, error_class, correlation, known = "ok", None, None, True
        try:
            result = await call_next(context)
            if getattr(result, "is_error", False):
                outcome, error_class = "error", "ToolResultError"
            return result
        except BaseException as exc:
            outcome, error_class = "error", type(exc).__name__
            cause = masked_cause(exc)
            if cause is None:
                raise
            correlation = secrets.token_hex(6)
            error_class = type(cause).__name__
            details = "".join(traceback.format_exception(cause))
            errors_log.error(
                "correlation_id=%s %s=%s error=%s",
                correlation,
                kind,
                one_line(self.audit.redactor.text(name)),
                one_line(self.audit.redactor.text(details)),
            )
            raise type(exc)(
                f"Internal error in {kind} {name!r} (correlation id {correlation}); the "
                "details are in the server log. Retry, or report the id to the operator."
            ) from None
        finally:
            if outcome != "ok":
                with anyio.CancelScope(shield=True):  # a cancelled call is recorded too
                    known = await _exists(context, kind, name)
            self.audit.record(
                CallRecord(
                    time=datetime.now(UTC).isoformat(timespec="milliseconds"),
                    client=client,
                    kind=kind,
                    name=self.audit.redactor.text(name),
                    arguments=self.audit.redactor.summary(
                        arguments, self.audit.settings.argument_chars
                    ),
                    duration_ms=round((time.perf_counter() - started) * 1000, 3),
                    outcome=outcome,
                    error_class=error_class,
                    correlation_id=correlation,
                    known=known,
                )
            )

    async def on_call_tool(self, context: MiddlewareContext, call_next: CallNext):
        message = context.message
        return await self._audited(
            "tool", message.name, message.arguments or {}, context, call_next
        )

    async def on_read_resource(self, context: MiddlewareContext, call_next: CallNext):
        uri = str(context.message.uri)
        return await self._audited("resource", uri, {}, context, call_next)

    async def on_get_prompt(self, context: MiddlewareContext, call_next: CallNext):
        message = context.message
        return await self._audited(
            "prompt", message.name, message.arguments or {}, context, call_next
        )
