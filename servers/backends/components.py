"""The gateway's view of backend components: fastmcp tools, resources, templates and prompts
built from backend catalogs, under gateway names, that forward to their backend when used.

``build_index`` turns every backend's offered catalog into one name-checked index: allow/deny
lists applied, names made valid and unique (``backend_names``), reserved names avoided. Each
component is built and validated on its own: one that cannot be offered (a resource whose URI
is not ``scheme://...``, a malformed schema) is dropped and reported, never its siblings.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import mcp_types
from fastmcp.exceptions import ToolError
from fastmcp.prompts import Prompt, PromptResult
from fastmcp.prompts.base import PromptArgument
from fastmcp.resources import Resource, ResourceResult, ResourceTemplate
from fastmcp.tools import Tool, ToolResult
from fastmcp.utilities.components import get_fastmcp_metadata
from fastmcp.utilities.tasks import TaskConfig
from mcp.shared.inbound import find_invalid_x_mcp_header, x_mcp_header_map

from servers.backends.catalog import Catalog
from servers.backends.names import assign_names, backend_uri, namespaced_uri, tool_allowed

NO_TASKS = TaskConfig(mode="forbidden")  # a proxied request runs in the foreground

ParamHeaders = dict[tuple[str, ...], str]
"""A tool's SEP-2243 ``x-mcp-header`` annotations: argument path -> Mcp-Param-* header token."""


class BackendCaller(Protocol):
    """What a component needs from its backend."""

    name: str

    async def call_tool(
        self, name: str, arguments: dict[str, Any], param_headers: ParamHeaders
    ) -> ToolResult: ...

    async def read_resource(self, uri: str) -> ResourceResult: ...

    async def get_prompt(self, name: str, arguments: dict[str, Any] | None) -> PromptResult: ...

    def unavailable_message(self) -> str: ...


def _tags(meta: dict[str, Any] | None) -> set[str]:
    return set(get_fastmcp_metadata(meta).get("tags", []))


class BackendTool(Tool):
    """A backend's tool, listed under its gateway name; a call goes to the backend."""

    task_config: TaskConfig = NO_TASKS
    _backend: BackendCaller | None = None
    _remote_name: str = ""
    _param_headers: ParamHeaders = {}

    @classmethod
    def of(cls, backend: BackendCaller, tool: mcp_types.Tool, name: str) -> BackendTool:
        made = cls(
            name=name,
            title=tool.title,
            description=tool.description,
            parameters=tool.input_schema,
            annotations=tool.annotations,
            output_schema=tool.output_schema,
            icons=tool.icons,
            meta=tool.meta,
            tags=_tags(tool.meta),
            execution=tool.execution,
        )
        made._backend, made._remote_name = backend, tool.name
        if find_invalid_x_mcp_header(tool.input_schema) is None:
            made._param_headers = x_mcp_header_map(tool.input_schema)
        return made

    async def run(self, arguments: dict[str, Any], context: Any = None) -> ToolResult:
        assert self._backend is not None
        return await self._backend.call_tool(self._remote_name, arguments, self._param_headers)


class UnavailableTool(Tool):
    """Stands for any tool of a backend that has no catalog to offer: says why it is missing."""

    task_config: TaskConfig = NO_TASKS
    _backend: BackendCaller | None = None

    @classmethod
    def of(cls, backend: BackendCaller, name: str) -> UnavailableTool:
        made = cls(name=name, parameters={"type": "object"})
        made._backend = backend
        return made

    async def run(self, arguments: dict[str, Any], context: Any = None) -> ToolResult:
        assert self._backend is not None
        raise ToolError(self._backend.unavailable_message())


class BackendResource(Resource):
    """A backend's resource under a namespaced URI; reading it reads the backend's."""

    task_config: TaskConfig = NO_TASKS
    _backend: BackendCaller | None = None
    _remote_uri: str = ""

    @classmethod
    def of(cls, backend: BackendCaller, resource: mcp_types.Resource) -> BackendResource:
        made = cls(
            uri=namespaced_uri(backend.name, _checked_uri(str(resource.uri), "URI")),
            name=resource.name,
            title=resource.title,
            description=resource.description,
            mime_type=resource.mime_type or "text/plain",
            icons=resource.icons,
            annotations=resource.annotations,
            meta=resource.meta,
            tags=_tags(resource.meta),
        )
        made._backend, made._remote_uri = backend, str(resource.uri)
        return made

    async def read(self) -> ResourceResult:
        assert self._backend is not None
        return await self._backend.read_resource(self._remote_uri)


class BackendTemplate(ResourceTemplate):
    """A backend's resource template under a namespaced URI template."""

    task_config: TaskConfig = NO_TASKS
    _backend: BackendCaller | None = None

    @classmethod
    def of(cls, backend: BackendCaller, template: mcp_types.ResourceTemplate) -> BackendTemplate:
        made = cls(
            uri_template=namespaced_uri(
                backend.name, _checked_uri(template.uri_template, "URI template")
            ),
            name=template.name,
            title=template.title,
            description=template.description,
            mime_type=template.mime_type or "text/plain",
            icons=template.icons,
            annotations=template.annotations,
            parameters={},
            meta=template.meta,
            tags=_tags(template.meta),
        )
        made._backend = backend
        return made

    async def _read(self, uri: str, params: dict[str, Any]) -> ResourceResult:
        assert self._backend is not None
        remote = backend_uri(self._backend.name, uri)
        assert remote is not None  # the server matched this template, so it is ours
        return await self._backend.read_resource(remote)


class BackendPrompt(Prompt):
    """A backend's prompt under its gateway name; rendering asks the backend."""

    task_config: TaskConfig = NO_TASKS
    _backend: BackendCaller | None = None
    _remote_name: str = ""

    @classmethod
    def of(cls, backend: BackendCaller, prompt: mcp_types.Prompt, name: str) -> BackendPrompt:
        made = cls(
            name=name,
            title=prompt.title,
            description=prompt.description,
            arguments=[
                PromptArgument(
                    name=argument.name,
                    description=argument.description,
                    required=argument.required or False,
                )
                for argument in prompt.arguments or []
            ],
            icons=prompt.icons,
            meta=prompt.meta,
            tags=_tags(prompt.meta),
        )
        made._backend, made._remote_name = backend, prompt.name
        return made

    async def render(self, arguments: dict[str, Any] | None = None) -> PromptResult:
        assert self._backend is not None
        return await self._backend.get_prompt(self._remote_name, arguments)


@dataclass
class Index:
    """Every offered backend component by gateway name (or URI)."""

    tools: dict[str, BackendTool] = field(default_factory=dict)
    resources: dict[str, BackendResource] = field(default_factory=dict)
    templates: list[BackendTemplate] = field(default_factory=list)
    prompts: dict[str, BackendPrompt] = field(default_factory=dict)
    renamed: dict[str, dict[str, str]] = field(default_factory=dict)
    """Per backend: {gateway name: backend name} for every name that had to be shortened."""
    withheld: dict[str, list[str]] = field(default_factory=dict)
    """Per backend: tools its allow/deny lists keep from clients."""
    dropped: dict[str, list[str]] = field(default_factory=dict)
    """Per backend: components that could not be offered, each with the reason."""

    def drop(self, backend: str, what: str, reason: str) -> None:
        self.dropped.setdefault(backend, []).append(f"{what}: {reason}")


_SCHEME_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_SHOWN_CHARS = 80  # of a dropped component's name in a status report


def _built(index: Index, backend: str, what: str, make: Callable[..., Any], *args: Any) -> Any:
    """``make(*args)``, or None with the component reported as dropped when it cannot be
    built."""
    try:
        return make(*args)
    except (ValueError, TypeError) as error:  # pydantic's ValidationError is a ValueError
        reason = type(error).__name__ if not isinstance(error, _Refused) else str(error)
        index.drop(backend, what[:_SHOWN_CHARS], reason)
        return None


class _Refused(ValueError):
    """A component the gateway will not offer; the message says why."""


def _checked_uri(uri: str, kind: str) -> str:
    if not _SCHEME_URI.match(uri):
        raise _Refused(f"its {kind} is not of the form scheme://...")
    return uri


def build_index(
    offers: Sequence[tuple[BackendCaller, Catalog, list[str], list[str]]], reserved: set[str]
) -> Index:
    """One index over (backend, catalog, allow list, deny list) in config order.

    The first claimant of a name keeps it; ``reserved`` names (the gateway's own) are never
    given to a backend component.
    """
    index = Index()
    tool_names, prompt_names = set(reserved), set(reserved)
    for backend, catalog, allow, deny in offers:
        tools = [t for t in catalog.tools if tool_allowed(t.name, allow, deny)]
        withheld = sorted({t.name for t in catalog.tools} - {t.name for t in tools})
        if withheld:
            index.withheld[backend.name] = withheld
        names = assign_names(backend.name, [t.name for t in tools], tool_names)
        for tool in tools:
            name = names[tool.name]
            made = _built(
                index,
                backend.name,
                f"tool {tool.name!r}",
                BackendTool.of,
                backend,
                tool,
                name,
            )
            if made is not None:
                index.tools[name] = made
        prompts = assign_names(backend.name, [p.name for p in catalog.prompts], prompt_names)
        for prompt in catalog.prompts:
            name = prompts[prompt.name]
            made = _built(
                index,
                backend.name,
                f"prompt {prompt.name!r}",
                BackendPrompt.of,
                backend,
                prompt,
                name,
            )
            if made is not None:
                index.prompts[name] = made
        renamed = {
            gateway: original
            for assigned in (names, prompts)
            for original, gateway in assigned.items()
            if gateway != f"{backend.name}_{original}"
        }
        if renamed:
            index.renamed[backend.name] = renamed
        for resource in catalog.resources:
            made = _built(
                index,
                backend.name,
                f"resource {str(resource.uri)!r}",
                BackendResource.of,
                backend,
                resource,
            )
            if made is not None:
                index.resources[str(made.uri)] = made
        for template in catalog.templates:
            made = _built(
                index,
                backend.name,
                f"template {template.uri_template!r}",
                BackendTemplate.of,
                backend,
                template,
            )
            if made is not None:
                index.templates.append(made)
    return index
