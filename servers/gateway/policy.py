"""What each client may see and call: scopes keyed on the namespace of every component.

A tool or prompt ``sql_query`` belongs to namespace ``sql``, a resource ``sql://sql/tables`` too
(the namespace is the URI's host). Namespace ``sql`` needs scope ``sql``, ``pipelines`` and
``admin`` their own names, a remote backend ``demo`` needs ``backend:demo``; ``backend:*`` grants
every backend and ``*`` everything. Components with a tag listed in ``auth.tag_scopes`` need that
scope as well. A component outside every namespace (the gateway's own) needs none. Listing hides
what a client may not use, and calling, reading or getting it is refused the same way. Without
an access token (stdio, in-memory, unauthenticated loopback HTTP) every scope is granted.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import ClassVar
from urllib.parse import urlsplit

from fastmcp.exceptions import PromptError, ResourceError, ToolError
from fastmcp.server.dependencies import get_access_token
from fastmcp.server.middleware import CallNext, Middleware, MiddlewareContext

from servers.gateway.tool_search import CALL_TOOL
from servers.settings import LOCAL_NAMESPACES, GatewaySettings


class Scopes:
    """The namespaces of the gateway and the scope each needs."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.by_namespace = {name: name for name in LOCAL_NAMESPACES}
        for key, config in settings.backends.items():
            if config.enabled:
                self.by_namespace[key] = f"backend:{key}"
        # Longest first, so a backend "sql-archive" is never taken for "sql".
        self.namespaces = sorted(self.by_namespace, key=len, reverse=True)
        self.tag_scopes = dict(settings.auth.tag_scopes)

    def namespace_of_name(self, name: str) -> str | None:
        return next((ns for ns in self.namespaces if name.startswith(f"{ns}_")), None)

    def namespace_of_uri(self, uri: str) -> str | None:
        host = urlsplit(str(uri)).netloc
        if host in self.by_namespace:
            return host
        # Templates keep their braces, which urlsplit tolerates; fall back on the name rule.
        return None

    def required(self, namespace: str | None, tags: Iterable[str] = ()) -> list[str]:
        needed = [self.by_namespace[namespace]] if namespace else []
        return needed + [self.tag_scopes[tag] for tag in tags if tag in self.tag_scopes]

    # Namespaces follow the backends (applied by their own part, after this one, so the policy
    # knows a new namespace before its tools are offered).
    reloads: ClassVar[frozenset[str]] = frozenset({"auth.tag_scopes"})
    lists: ClassVar[frozenset[str]] = frozenset()

    def check(self, new: GatewaySettings) -> Scopes | None:
        fresh = Scopes(new)
        same = (fresh.by_namespace, fresh.tag_scopes) == (self.by_namespace, self.tag_scopes)
        return None if same else fresh

    async def apply(self, fresh: Scopes) -> list[str]:
        tags_changed = fresh.tag_scopes != self.tag_scopes
        self.by_namespace, self.namespaces = fresh.by_namespace, fresh.namespaces
        self.tag_scopes = fresh.tag_scopes
        return ["tag scopes"] if tags_changed else []


def granted(scopes: Iterable[str] | None, needed: str) -> bool:
    """Whether a client holding scopes (None: no token, every scope) may use needed."""
    if scopes is None:
        return True
    held = set(scopes)
    if "*" in held or needed in held:
        return True
    return needed.startswith("backend:") and "backend:*" in held


def client_scopes() -> tuple[str, list[str] | None]:
    """The calling client's name and scopes; (\"local\", None) without an access token."""
    token = get_access_token()
    if token is None:
        return "local", None
    return token.client_id, list(token.scopes)


class ScopePolicy(Middleware):
    def __init__(self, scopes: Scopes) -> None:
        self.scopes = scopes

    def _missing(self, namespace: str | None, tags: Iterable[str]) -> str | None:
        _, held = client_scopes()
        return next(
            (s for s in self.scopes.required(namespace, tags) if not granted(held, s)), None
        )

    def _visible(self, components: Sequence, namespace_of) -> list:
        _, held = client_scopes()
        if held is None:
            return list(components)
        return [
            c
            for c in components
            if all(granted(held, s) for s in self.scopes.required(namespace_of(c), c.tags or ()))
        ]

    async def on_list_tools(self, context: MiddlewareContext, call_next: CallNext):
        tools = await call_next(context)
        return self._visible(tools, lambda t: self.scopes.namespace_of_name(t.name))

    async def on_list_prompts(self, context: MiddlewareContext, call_next: CallNext):
        prompts = await call_next(context)
        return self._visible(prompts, lambda p: self.scopes.namespace_of_name(p.name))

    async def on_list_resources(self, context: MiddlewareContext, call_next: CallNext):
        resources = await call_next(context)
        return self._visible(resources, lambda r: self.scopes.namespace_of_uri(str(r.uri)))

    async def on_list_resource_templates(self, context: MiddlewareContext, call_next: CallNext):
        templates = await call_next(context)
        return self._visible(templates, lambda t: self.scopes.namespace_of_uri(t.uri_template))

    async def _tags(self, context: MiddlewareContext, getter: str, key: str) -> set[str]:
        """Tags of the component being used; looked up only when tags map to scopes."""
        if not self.scopes.tag_scopes or context.fastmcp_context is None:
            return set()
        try:
            component = await getattr(context.fastmcp_context.fastmcp, getter)(key)
        except Exception:  # unknown: the call itself will say so
            return set()
        return set(getattr(component, "tags", None) or ())

    async def on_call_tool(self, context: MiddlewareContext, call_next: CallNext):
        names = [context.message.name]
        if context.message.name == CALL_TOOL:  # the search transform's proxy names the real tool
            inner = (context.message.arguments or {}).get("name")
            if isinstance(inner, str):
                names.append(inner)
        for name in names:
            tags = await self._tags(context, "get_tool", name)
            missing = self._missing(self.scopes.namespace_of_name(name), tags)
            if missing:
                raise ToolError(
                    f"Unknown tool {name!r} for this client: it needs scope {missing!r}, "
                    "which your token does not grant."
                )
        return await call_next(context)

    async def on_read_resource(self, context: MiddlewareContext, call_next: CallNext):
        uri = str(context.message.uri)
        tags = await self._tags(context, "get_resource", uri)
        missing = self._missing(self.scopes.namespace_of_uri(uri), tags)
        if missing:
            raise ResourceError(
                f"Unknown resource {uri!r} for this client: it needs scope {missing!r}, "
                "which your token does not grant."
            )
        return await call_next(context)

    async def on_get_prompt(self, context: MiddlewareContext, call_next: CallNext):
        name = context.message.name
        tags = await self._tags(context, "get_prompt", name)
        missing = self._missing(self.scopes.namespace_of_name(name), tags)
        if missing:
            raise PromptError(
                f"Unknown prompt {name!r} for this client: it needs scope {missing!r}, "
                "which your token does not grant."
            )
        return await call_next(context)
