"""FastMCP servers that look a tool up in their providers one after another.

fastmcp's AggregateProvider (the base of every FastMCP server) asks all its providers for a tool
at once, in a fresh task group with one task per provider, and does so for every `tools/call`,
at the gateway and again in the mounted server. Every provider here answers a name that is not
its own without waiting (a namespace is a prefix check; the backends provider routes by owner),
so asking them in turn gives the same answer without the tasks. That saves ~0.3 ms of a ~1.4 ms
call through the gateway, in memory, in either protocol era (`python -m bench.bench_lookup`: an
A/B in one process, the two lookups alternating round by round; 2 cores, load average 7-11).

And what a client gets when a name it gives names nothing: the closest real names (an unknown
tool or resource), and -32602 with a one-line log for a template parameter that names nothing.
"""

import difflib
import json
import logging
from collections.abc import Callable, Iterable, Sequence

from fastmcp import FastMCP
from fastmcp.exceptions import DisabledError, NotFoundError, ToolError, ValidationError
from fastmcp.server.middleware import CallNext, Middleware, MiddlewareContext
from fastmcp.server.providers.aggregate import AggregateProvider
from fastmcp.tools import Tool
from fastmcp.utilities.versions import VersionSpec
from pydantic import ValidationError as PydanticValidationError


class SequentialLookup(AggregateProvider):
    async def _get_tool(self, name: str, version: VersionSpec | None = None) -> Tool | None:
        results: list[Tool | None | BaseException] = []
        for provider in self.providers:
            try:
                results.append(await provider.get_tool(name, version))
            except Exception as exc:  # logged and skipped, as the aggregate does
                results.append(exc)
        return self._get_highest_version_result(results, f"get_tool({name!r})")


class Server(FastMCP, SequentialLookup):
    """FastMCP with SequentialLookup's tool lookup: the gateway and every sub-server (a mounted
    server looks its tools up in its own providers, too). FastMCP's own _get_tool, which adds
    the component auth check, reaches it through super()."""


class NotFoundHere(ValidationError):
    """A name a client gave (a template parameter, a handle) that names nothing here. Answers
    -32602 (invalid params) with the message, and is an expected failure: fastmcp logs it at
    DEBUG, the audit log records it on one line, no traceback."""

    def __init__(self, message: str) -> None:
        super().__init__(message, log_level=logging.DEBUG)


def closest(name: str, known: Iterable[str], n: int = 3) -> list[str]:
    """The known names closest to name: those ending in it (a sub-server's own name for a
    namespaced tool, ``read_result`` for ``sql_read_result``) first, then near spellings."""
    known = sorted(set(known))
    bare = name.split("://")[-1].strip("/")
    suffixed = [k for k in known if k.endswith(("_" + bare, "/" + bare)) and k != name]
    near = difflib.get_close_matches(name, known, n=n, cutoff=0.6)
    return list(dict.fromkeys(suffixed + near))[:n]


def unknown_message(kind: str, name: str, known: Iterable[str]) -> str:
    """ "Unknown tool 'read_result'. Did you mean sql_read_result?" (or where to look)."""
    found = closest(name, known)
    if found:
        return f"Unknown {kind} {name!r}. Did you mean {' or '.join(found)}?"
    where = {"tool": "tools/list", "resource": "resources/list and resources/templates/list"}
    return f"Unknown {kind} {name!r}. The {kind}s this server offers: {where.get(kind, 'list')}."


def _type_of(schema: dict) -> str:
    if "enum" in schema:
        return "|".join(json.dumps(v) for v in schema["enum"])
    if "anyOf" in schema:
        return "|".join(_type_of(s) for s in schema["anyOf"] if s != {"type": "null"})
    kind = schema.get("type", "any")
    if kind == "array":
        return f"list of {_type_of(schema.get('items', {}))}"
    return schema.get("format", kind) if kind == "string" else kind


def expected_arguments(schema: dict) -> str:
    """`sql (string, required), max_rows (integer), ...` from a tool's input schema."""
    required = set(schema.get("required", []))
    parts = [
        f"{name} ({_type_of(spec)}{', required' if name in required else ''})"
        for name, spec in schema.get("properties", {}).items()
    ]
    return ", ".join(parts) or "none"


def argument_message(tool: str, error: PydanticValidationError, schema: dict) -> str:
    """One line: what was wrong with which argument, and the arguments the tool expects (no
    library text or URLs)."""
    problems = []
    for entry in error.errors(include_url=False):
        where = ".".join(str(part) for part in entry["loc"]) or "arguments"
        if entry["type"] == "missing_argument" or entry["type"] == "missing":
            problems.append(f"{where} is missing")
        elif entry["type"] == "unexpected_keyword_argument":
            problems.append(f"{where} is not an argument")
        else:
            problems.append(f"{where}: {entry['msg']}")
    return (
        f"Invalid arguments for {tool}: {'; '.join(problems)}. "
        f"Expected: {expected_arguments(schema)}."
    )


class Suggestions(Middleware):
    """An unknown tool or resource gets the closest real names in its error. ``callable``
    filters the listed tools to those this client may call (its scopes; unlisted namespaces
    included, since they are callable by name)."""

    def __init__(self, callable: Callable[[Sequence[Tool]], Sequence[Tool]] = list) -> None:
        self.callable = callable

    async def on_call_tool(self, context: MiddlewareContext, call_next: CallNext):
        try:
            return await call_next(context)
        except ValidationError as exc:  # the arguments do not fit the tool's schema
            cause = exc.__cause__
            if not isinstance(cause, PydanticValidationError):
                raise
            server = context.fastmcp_context.fastmcp
            tool = await server.get_tool(context.message.name)
            schema = tool.parameters if tool is not None else {}
            raise ToolError(argument_message(context.message.name, cause, schema)) from None
        except (NotFoundError, DisabledError):
            server = context.fastmcp_context.fastmcp
            tools = self.callable(await server.list_tools(run_middleware=False))
            names = [tool.name for tool in tools]
            raise ToolError(unknown_message("tool", context.message.name, names)) from None

    async def on_read_resource(self, context: MiddlewareContext, call_next: CallNext):
        try:
            return await call_next(context)
        except (NotFoundError, DisabledError):
            server = context.fastmcp_context.fastmcp
            uris = [str(r.uri) for r in await server.list_resources(run_middleware=False)]
            templates = await server.list_resource_templates(run_middleware=False)
            uris += [t.uri_template for t in templates]
            uri = str(context.message.uri)
            raise NotFoundHere(unknown_message("resource", uri, uris)) from None
