"""What tools/list costs a model: lean schemas, and tools listed only to those who need them.

A model reads every listed tool's name, description and input schema before the user has asked
anything, so the listing is kept lean without changing what a call accepts:

- optional parameters are listed as their type alone (``{"type": "integer"}``), not as
  ``anyOf: [{...}, {"type": "null"}]`` with ``default: null``; a null is still accepted;
  generated titles ("title": "Min Flights") are not listed;
- ``additionalProperties: false`` is not listed (a call with an unknown argument is still
  refused, and the refusal names the expected arguments);
- an output schema that says nothing (any object) is not sent, and the others go without their
  descriptions, titles and defaults (a client validates with them; a model does not read them);
- the tools of ``tool_search.unlisted_namespaces`` (default: admin) are left out of the listing
  unless the client's token names that namespace's scope itself; they stay callable by name
  (the scope policy still decides who may call them);
- tools that exist to show an MCP app (``_meta.ui``, e.g. sql_chart_view) are listed only to
  clients that declare the MCP Apps extension; for others they add nothing sql_chart lacks.

Only listing changes: a call finds the tool as registered, with its own schemas.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from fastmcp.apps.config import UI_EXTENSION_ID
from fastmcp.server.dependencies import get_context
from fastmcp.server.middleware import CallNext, Middleware, MiddlewareContext
from fastmcp.server.transforms import Transform
from fastmcp.tools import Tool

from servers.gateway.policy import Scopes, client_scopes, granted

_NULL = {"type": "null"}
_NAMED = ("properties", "$defs", "definitions")  # maps whose keys are names, not keywords
_ANNOTATIONS = ("description", "title", "default")  # keywords that validate nothing


def compact_schema(schema: Any, named: bool = False) -> Any:
    """The schema with optional-or-null properties listed as their type alone, and without
    generated titles (recursively; a property called "title" stays)."""
    if isinstance(schema, list):
        return [compact_schema(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    if named:
        return {name: compact_schema(sub) for name, sub in schema.items()}
    compacted = {
        key: compact_schema(value, named=key in _NAMED)
        for key, value in schema.items()
        if key != "title"
    }
    branches = compacted.get("anyOf")
    if (
        isinstance(branches, list)
        and len(branches) == 2
        and _NULL in branches
        and "default" in compacted
        and compacted["default"] is None
    ):
        [kept] = [branch for branch in branches if branch != _NULL]
        del compacted["anyOf"], compacted["default"]
        compacted = {**kept, **compacted}
    return compacted


def undescribed(schema: Any, named: bool = False) -> Any:
    """The schema without the keywords that validate nothing: descriptions, titles, defaults
    (a property called "title" stays)."""
    if isinstance(schema, list):
        return [undescribed(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    if named:
        return {name: undescribed(sub) for name, sub in schema.items()}
    return {
        key: undescribed(value, named=key in _NAMED)
        for key, value in schema.items()
        if key not in _ANNOTATIONS
    }


def says_nothing(schema: dict | None) -> bool:
    """An output schema that any object satisfies."""
    return (
        schema is not None
        and set(schema) <= {"type", "additionalProperties"}
        and schema.get("additionalProperties", True) is True
    )


def lean(tool: Tool) -> Tool:
    """The tool as listed (see the module)."""
    parameters = compact_schema(tool.parameters)
    if parameters.get("additionalProperties") is False:
        parameters = {k: v for k, v in parameters.items() if k != "additionalProperties"}
    output = None if says_nothing(tool.output_schema) else undescribed(tool.output_schema)
    return tool.model_copy(update={"parameters": parameters, "output_schema": output})


class LeanListing(Transform):
    """tools/list with compact input schemas and lean output schemas."""

    async def list_tools(self, tools: Sequence[Tool]) -> Sequence[Tool]:
        return [lean(tool) for tool in tools]


def shows_an_app(tool: Tool) -> bool:
    return isinstance(tool.meta, dict) and isinstance(tool.meta.get("ui"), dict)


def _client_renders_apps() -> bool:
    try:
        return get_context().client_supports_extension(UI_EXTENSION_ID)
    except RuntimeError:  # outside a request
        return False


def client_filter(scopes: Scopes, unlisted: Sequence[str]) -> Callable[..., list]:
    """The tools the calling client is shown: those its scopes allow, minus the unlisted
    namespaces' (unless its token names their scope itself) and app tools it cannot show."""
    unlisted = [ns for ns in unlisted if ns in scopes.by_namespace]

    def shown(tools: Sequence[Tool], *, check_scopes: bool = True) -> list:
        _, held = client_scopes()
        explicit = set(held or ())
        apps = None
        kept = []
        for tool in tools:
            namespace = scopes.namespace_of_name(tool.name)
            needed = scopes.required(namespace, tool.tags or ())
            if check_scopes and held is not None and not all(granted(held, s) for s in needed):
                continue
            if namespace in unlisted and scopes.by_namespace[namespace] not in explicit:
                continue
            if shows_an_app(tool):
                apps = _client_renders_apps() if apps is None else apps
                if not apps:
                    continue
            kept.append(tool)
        return kept

    return shown


class ClientListing(Middleware):
    """Leaves out of tools/list what this client is not shown (see the module); the scope
    policy filters by scope."""

    def __init__(self, scopes: Scopes, unlisted: Sequence[str]) -> None:
        self.shown = client_filter(scopes, unlisted)

    async def on_list_tools(self, context: MiddlewareContext, call_next: CallNext):
        return self.shown(await call_next(context), check_scopes=False)
