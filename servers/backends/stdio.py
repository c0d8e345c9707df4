"""Stdio backends: one supervised subprocess per backend, shared by every caller.

The process is started when the backend starts (with the gateway), gets its own start-up budget
(``start_timeout_s``) to answer, and is restarted with a doubling backoff whenever it exits,
until the gateway stops (which stops its process group). Its life is told to the backend as it
happens: up once it answered, down with the reason ("command not found: x", "exited with code
1: <last stderr line>", "no answer within the 30 s start-up budget") when it ends. All callers
share its one session, which multiplexes concurrent requests; log messages reach the caller
when only one request is in flight, the gateway's log otherwise.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Literal

import anyio
import mcp_types
from mcp import ClientSession, StdioServerParameters
from mcp.client.session import LoggingFnT

from servers.backends.link import LinkError, LinkEvents, RelayingSession, negotiate, notice_handler
from servers.backends.process import Child, spawn
from servers.settings import BackendConfig

logger = logging.getLogger("gateway.backends")

Phase = Literal["stopped", "starting", "running", "down"]


class StdioLink:
    """A backend run as a subprocess over stdio, supervised: one shared session, restarted with
    a doubling backoff after it exits, its process group stopped with the gateway."""

    def __init__(self, config: BackendConfig, events: LinkEvents, max_line_bytes: int) -> None:
        assert config.command is not None
        self._config = config
        self._events = events
        self._max_line_bytes = max_line_bytes
        self._params = StdioServerParameters(
            command=config.command,
            args=list(config.args),
            env=dict(config.env) or None,
            cwd=config.cwd,
        )
        self._on_message = notice_handler(events.list_changed)
        self._listeners: list[LoggingFnT] = []
        self._session: ClientSession | None = None
        self._changed = anyio.Event()
        self._phase: Phase = "stopped"
        self._phase_since = time.monotonic()
        self._era = "unknown"
        self.restarts = 0
        self.last_exit: str | None = None
        self.next_start_at: float | None = None

    def status(self) -> dict:
        running = self._session is not None
        status: dict = {"transport": "stdio", "protocol": self._era, "running": running}
        status["restarts"] = self.restarts
        if self.last_exit:
            status["last_exit"] = self.last_exit
        if self._phase == "down" and self.next_start_at is not None:
            status["restart_in_s"] = round(max(0.0, self.next_start_at - time.monotonic()), 2)
        return status

    def forget(self) -> None:
        """Nothing to forget: the supervisor notices a dead process by itself."""

    async def start(self) -> None:
        self._enter("starting")

    async def stop(self) -> None:
        self._session = None
        self._enter("stopped")

    def _enter(self, phase: Phase) -> None:
        self._phase, self._phase_since = phase, time.monotonic()
        changed, self._changed = self._changed, anyio.Event()
        changed.set()

    async def supervise(self) -> None:
        """Run the process until the gateway stops, restarting it when it exits. Cancelling
        this stops the process group."""
        backoff = self._config.restart_backoff_s
        while True:
            started = time.monotonic()
            self._enter("starting")
            reason = await self._serve_once()
            self._session = None
            self.last_exit = reason
            self.next_start_at = time.monotonic() + backoff
            self._enter("down")
            await self._events.link_down(reason)  # which logs it
            if time.monotonic() - started > self._config.restart_backoff_max_s:
                backoff = self._config.restart_backoff_s  # it ran a good while: start over
            await anyio.sleep(max(0.0, self.next_start_at - time.monotonic()))
            self.restarts += 1
            backoff = min(backoff * 2, self._config.restart_backoff_max_s)

    async def _serve_once(self) -> str:
        """Start the process, agree on an era within the start-up budget, serve until its
        output ends; return why it ended."""
        try:
            async with spawn(self._params, self._max_line_bytes) as child:
                return await self._serve(child)
        except LinkError as error:
            return str(error)
        except Exception as error:  # a broken pipe or a failed start: restart all the same
            logger.warning("stdio backend %s failed: %r", self._params.command, error)
            return f"stopped unexpectedly ({type(error).__name__})"

    async def _serve(self, child: Child) -> str:
        budget = self._config.start_timeout_s
        async with RelayingSession(
            child.read,
            child.write,
            read_timeout_seconds=self._config.timeout_s,
            logging_callback=self._route_log,
            message_handler=self._on_message,
            log_level="debug",
        ) as session:
            try:
                with anyio.fail_after(budget):
                    discovered = await negotiate(session)
            except TimeoutError:
                return f"no answer within the {budget:g} s start-up budget"
            except Exception:
                if child.output_ended.is_set() or child.process.returncode is not None:
                    return await child.exit_reason()
                return "answered the start-up handshake with something that is not MCP"
            self._era = "2026-07-28" if discovered else "2025-11-25 (handshake)"
            self._session = session
            self._enter("running")
            await self._events.link_up()
            await child.output_ended.wait()
            self._session = None
        return await child.exit_reason()

    @asynccontextmanager
    async def session(self, on_log: LoggingFnT | None) -> AsyncIterator[ClientSession]:
        """The shared session, once the process runs (waiting while it is starting, within
        what is left of its start-up budget)."""
        budget = self._config.start_timeout_s
        while self._session is None:
            if self._phase == "stopped":
                raise LinkError("the gateway is not running")
            if self._phase == "down":  # the status shows when it restarts
                raise LinkError(self.last_exit or "the process stopped")
            left = self._phase_since + budget - time.monotonic()
            with anyio.move_on_after(max(0.0, left)) as waited:
                await self._changed.wait()
            if waited.cancelled_caught:
                raise LinkError(f"no answer within the {budget:g} s start-up budget")
        session = self._session
        listener = on_log or _ignore_log
        self._listeners.append(listener)
        try:
            yield session
        finally:
            self._listeners.remove(listener)

    async def _route_log(self, params: mcp_types.LoggingMessageNotificationParams) -> None:
        if len(self._listeners) == 1:
            await self._listeners[0](params)
        else:
            logger.info("stdio backend log (%s): %s", params.level, params.data)


async def _ignore_log(params: mcp_types.LoggingMessageNotificationParams) -> None:
    return None
