"""A backend process speaking newline-delimited JSON-RPC on its stdin and stdout, bounded.

``spawn`` starts the process in a session (process group) of its own, reads its output one line
at a time and never holds more than ``max_line_bytes`` of one line: a longer message is skipped
unread, and when its request id can be seen at its start, that request is answered with an
``ANSWER_TOO_LARGE`` error at once. The last lines the process wrote to stderr are kept (and
passed on to the gateway's stderr), so that when it exits, ``Child.exit_reason`` says how:
"exited with code 1: <its last stderr line>", "killed by signal 9". A command that does not
exist is a ``LinkError`` "command not found: <name>".
"""

from __future__ import annotations

import re
import sys
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import anyio.abc
import anyio.to_thread
import mcp_types
from mcp import StdioServerParameters
from mcp.os.posix.utilities import terminate_posix_process_tree
from mcp.shared.message import SessionMessage

from servers.backends import launch
from servers.backends.link import ANSWER_TOO_LARGE, LinkError

STDERR_LINE_CHARS = 300  # the part of a stderr line kept for a reason
EXIT_GRACE_S = 2.0  # for the process to exit by itself once its stdin is closed
REASON_WAIT_S = 10.0  # for the exit code and last stderr lines of a process whose output ended
# The id of an answer, as it opens: {"jsonrpc": "2.0", "id": ... (never an "id" deeper inside).
_REQUEST_ID = re.compile(
    rb'\s*\{\s*(?:"jsonrpc"\s*:\s*"2\.0"\s*,\s*)?"id"\s*:\s*("(?:[^"\\]|\\.){0,200}"|-?\d{1,20})'
)


@dataclass
class Child:
    """A running backend process and the message streams of its session."""

    process: anyio.abc.Process
    read: anyio.abc.ObjectReceiveStream
    write: anyio.abc.ObjectSendStream
    output_ended: anyio.Event = field(default_factory=anyio.Event)
    stderr_ended: anyio.Event = field(default_factory=anyio.Event)
    stderr_tail: deque[str] = field(default_factory=lambda: deque(maxlen=5))
    dropped: int = 0  # messages skipped for being too long

    async def exit_reason(self) -> str:
        """How the process ended (waits a little for its exit code and its last stderr lines
        once its output ended)."""
        with anyio.move_on_after(REASON_WAIT_S):
            await self.process.wait()
            await self.stderr_ended.wait()
        code = self.process.returncode
        last = self.stderr_tail[-1] if self.stderr_tail else ""
        if code is None:
            return "closed its output without exiting"
        if code < 0:
            return f"killed by signal {-code}"
        return f"exited with code {code}" + (f": {last}" if last else "")


def _safe_name(command: str) -> str:
    """The command as a client may see it: its file name, never a host path."""
    return Path(command).name or command


async def _open(params: StdioServerParameters) -> anyio.abc.Process:
    early = launch.take(params.command, params.args, params.env, params.cwd)
    if early is not None:
        return early
    if params.cwd is not None and not Path(params.cwd).is_dir():
        raise LinkError("its working directory ('cwd') does not exist")
    try:
        return await launch.start(params.command, params.args, params.env, params.cwd)
    except FileNotFoundError:
        raise LinkError(f"command not found: {_safe_name(params.command)}") from None
    except PermissionError:
        raise LinkError(f"command not executable: {_safe_name(params.command)}") from None
    except OSError as error:
        raise LinkError(
            f"command could not be started: {_safe_name(params.command)} ({error.strerror})"
        ) from None


def _parse(line: bytes) -> SessionMessage | Exception:
    try:
        return SessionMessage(mcp_types.jsonrpc_message_adapter.validate_json(line, by_name=False))
    except ValueError as error:
        return error


def _too_large(head: bytes, limit: int) -> SessionMessage | None:
    """An error answer for the request whose over-long answer began with ``head``."""
    match = _REQUEST_ID.match(head)
    if match is None:
        return None
    raw = match.group(1).decode(errors="replace")
    request_id = raw[1:-1] if raw.startswith('"') else int(raw)
    error = mcp_types.ErrorData(
        code=ANSWER_TOO_LARGE,
        message=f"the answer is larger than {limit} bytes, the gateway's limit; it was dropped",
    )
    return SessionMessage(mcp_types.JSONRPCError(jsonrpc="2.0", id=request_id, error=error))


async def _read_lines(child: Child, sink: anyio.abc.ObjectSendStream, limit: int) -> None:
    """Deliver the process's output lines as messages; skip (and answer) over-long ones."""
    assert child.process.stdout is not None
    pending, head = bytearray(), None  # head: the start of a line being skipped
    async with sink:
        with suppress(anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
            async for chunk in child.process.stdout:
                while chunk:
                    cut = chunk.find(b"\n")
                    part, chunk = (chunk, b"") if cut < 0 else (chunk[:cut], chunk[cut + 1 :])
                    if head is None:
                        pending += part
                        if len(pending) > limit:
                            head = bytes(pending[:512])
                            pending.clear()
                    if cut < 0:
                        break
                    if head is not None:
                        child.dropped += 1
                        answer, head = _too_large(head, limit), None
                        if answer is not None:
                            await sink.send(answer)
                    elif pending.strip():
                        await sink.send(_parse(bytes(pending)))
                    pending.clear()
    child.output_ended.set()


async def _read_stderr(child: Child) -> None:
    """Keep the last stderr lines (cut) and pass everything on to the gateway's stderr."""
    assert child.process.stderr is not None
    pending = b""
    with suppress(anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
        async for chunk in child.process.stderr:
            # In a thread: a full stderr pipe must block this reader, never the event loop.
            await anyio.to_thread.run_sync(_pass_on, chunk.decode(errors="replace"))
            *lines, pending = (pending + chunk).split(b"\n")
            pending = pending[-4096:]
            for line in lines:
                text = line.decode(errors="replace").strip()
                if text:
                    child.stderr_tail.append(text[:STDERR_LINE_CHARS])
    text = pending.decode(errors="replace").strip()
    if text:
        child.stderr_tail.append(text[:STDERR_LINE_CHARS])
    child.stderr_ended.set()


def _pass_on(text: str) -> None:
    sys.stderr.write(text)
    sys.stderr.flush()


async def _write_messages(child: Child, source: anyio.abc.ObjectReceiveStream) -> None:
    assert child.process.stdin is not None
    with suppress(anyio.ClosedResourceError, anyio.BrokenResourceError, OSError):
        async with source:
            async for message in source:
                data = message.message.model_dump_json(by_alias=True, exclude_unset=True)
                await child.process.stdin.send((data + "\n").encode())


async def _stop(process: anyio.abc.Process) -> None:
    """Close stdin, let the process exit by itself for a moment, then kill its whole group."""
    assert process.stdin is not None
    with suppress(Exception):
        await process.stdin.aclose()
    with anyio.move_on_after(EXIT_GRACE_S):
        await process.wait()
    if process.returncode is None:
        with suppress(ProcessLookupError, OSError):
            await terminate_posix_process_tree(process, EXIT_GRACE_S)  # type: ignore[arg-type]
    with suppress(Exception):
        await process.aclose()


@asynccontextmanager
async def spawn(params: StdioServerParameters, max_line_bytes: int) -> AsyncIterator[Child]:
    """Start the process; yield it with its session streams; stop its process group after."""
    process = await _open(params)
    to_session, read = anyio.create_memory_object_stream[SessionMessage | Exception](0)
    write, to_process = anyio.create_memory_object_stream[SessionMessage](0)
    child = Child(process, read, write)
    async with anyio.create_task_group() as group:
        group.start_soon(_read_lines, child, to_session, max_line_bytes)
        group.start_soon(_read_stderr, child)
        group.start_soon(_write_messages, child, to_process)
        try:
            yield child
        finally:
            with anyio.CancelScope(shield=True):
                await _stop(process)
                for stream in (read, write, to_session, to_process):
                    await stream.aclose()
            group.cancel_scope.cancel()
