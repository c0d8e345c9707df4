"""Runtime controls of the admin server: hide or show a component, reload the configuration,
cancel a pipeline run, refresh the cached backend catalogs.

Destructive actions ask for confirmation in the way the client supports: an elicitation on
2025-11-25 sessions (``ctx.elicit``), an input-required result on 2026-07-28 (the guard pattern),
and for clients that can do neither, an explicit ``confirm=true`` argument.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated

import anyio
from fastmcp import Context, FastMCP
from fastmcp.exceptions import ToolError
from mcp.types import (
    ElicitRequest,
    ElicitRequestFormParams,
    InputRequiredResult,
    PromptListChangedNotification,
    ResourceListChangedNotification,
    ToolAnnotations,
    ToolListChangedNotification,
)
from pydantic import ValidationError

from servers.admin.shared import Following, Spot, Visibility, changes_for
from servers.backends.provider import BackendsProvider
from servers.conventions import describe_errors, stateless_era
from servers.pipelines.server import PipelinesControl
from servers.reload import Reloadable, needs_restart
from servers.settings import GatewaySettings
from servers.sql.server import SqlControl

CONFIRM_KEY = "confirm"
HOST_PATH = re.compile(r"(?<=\s)/[^\s:'\"]+")  # file names in error messages, not for clients
NOTIFICATIONS = {
    "tools": ToolListChangedNotification,
    "resources": ResourceListChangedNotification,
    "prompts": PromptListChangedNotification,
}


async def confirmation(ctx: Context, question: str, confirm: bool) -> InputRequiredResult | None:
    """None when the action may go ahead; an input-required result to return (2026-07-28) when
    the client must be asked first. Raises ToolError when the answer is no or cannot be had."""
    if confirm:
        return None
    capabilities = ctx.session.client_capabilities if ctx.request_context else None
    if capabilities is None or capabilities.elicitation is None:
        raise ToolError(f"{question} This needs confirmation: call again with confirm=true.")
    version = ctx.request_context.protocol_version if ctx.request_context else None
    if stateless_era(version):
        responses = ctx.input_responses
        if responses is None or CONFIRM_KEY not in responses:
            schema = {
                "type": "object",
                "properties": {"confirm": {"type": "boolean", "title": "Go ahead?"}},
                "required": ["confirm"],
            }
            return InputRequiredResult(
                result_type="input_required",
                input_requests={
                    CONFIRM_KEY: ElicitRequest(
                        method="elicitation/create",
                        params=ElicitRequestFormParams(message=question, requested_schema=schema),
                    )
                },
            )
        answer = responses[CONFIRM_KEY]
        accepted = getattr(answer, "action", None) == "accept" and bool(
            (getattr(answer, "content", None) or {}).get("confirm")
        )
    else:
        answer = await ctx.elicit(question, response_type=bool)
        accepted = answer.action == "accept" and bool(answer.data)
    if not accepted:
        raise ToolError(f"{question} Not confirmed: nothing was changed.")
    return None


@dataclass
class Runtime:
    """Where settings come from, and the parts of the running gateway that take new ones, in
    the order they apply (see ``servers.reload``)."""

    settings: GatewaySettings
    load: Callable[[], GatewaySettings]
    parts: list[Reloadable]
    started: GatewaySettings = field(init=False)
    _lock: anyio.Lock = field(init=False, default_factory=anyio.Lock)

    def __post_init__(self) -> None:
        self.started = self.settings

    async def reload(self) -> tuple[dict, set[str]]:
        """Read the settings again, check them with every part, then apply every part's
        change: a bad config changes nothing. Returns the answer and the kinds of lists that
        changed."""
        async with self._lock:
            try:
                new = self.load()
                plans = [(part, part.check(new)) for part in self.parts]
            except ValidationError as exc:
                reasons = describe_errors(exc, "config")
                raise ToolError(f"Config not reloaded, the old one stays: {reasons}") from None
            except ValueError as exc:
                reason = HOST_PATH.sub("<path>", str(exc))
                raise ToolError(f"Config not reloaded, the old one stays: {reason}") from None
            applied, kinds = [], set()
            for part, plan in plans:
                if plan is not None and (lines := await part.apply(plan)):
                    applied += lines
                    kinds |= part.lists
            self.settings = new
            restart = needs_restart(self.started, new, self.parts)
            return {"applied": applied, "needs_restart": restart}, kinds


def install_admin_controls(
    admin: FastMCP,
    gateway: FastMCP,
    backends: BackendsProvider,
    runtime: Runtime,
    sql: SqlControl,
    pipelines: PipelinesControl,
) -> None:
    """Add set_enabled, reload, cancel_run and clear_caches to the admin server, acting on the
    whole gateway (``sql`` and ``pipelines``: whose caches clear_caches deletes)."""
    visibility = Visibility(gateway)

    async def reload_here() -> set[str]:
        return (await runtime.reload())[1]

    changes = changes_for(runtime.settings, visibility, reload_here, backends.notifier.announce)
    gateway.add_provider(Following(changes))  # follows the other processes' changes, if any

    async def find(component: str) -> Spot | None:
        if "://" in component:
            resource = await gateway.get_resource(component)
            if resource is not None and str(resource.uri) == component:
                return Spot("resources", resource.key)
            for template in await gateway.list_resource_templates(run_middleware=False):
                if template.uri_template == component:
                    return Spot("resources", template.key)
            return None
        tool = await gateway.get_tool(component)
        if tool is not None:
            return Spot("tools", tool.key)
        prompt = await gateway.get_prompt(component)
        return Spot("prompts", prompt.key) if prompt is not None else None

    async def tell(kinds: set[str], ctx: Context) -> None:
        await backends.notifier.announce(kinds)
        for kind in sorted(kinds):
            await ctx.send_notification(NOTIFICATIONS[kind]())

    @admin.tool(annotations=ToolAnnotations(destructiveHint=True, openWorldHint=False))
    async def set_enabled(
        component: Annotated[str, "Tool or prompt name, resource URI or template"],
        enabled: bool,
        confirm: Annotated[bool, "Skip the question"] = False,
        ctx: Context = None,  # type: ignore[assignment]
    ) -> dict | InputRequiredResult:
        """Hide a tool, resource or prompt from every client (not listed, not callable), or
        show it again; with Redis on every replica, else in this process only (`deployment`
        says which). Asks for confirmation."""
        if component.startswith(("admin_", "admin://")):
            raise ToolError("Admin components cannot be hidden: that would lock the admin out.")
        if enabled:
            spot = visibility.show(component)
            if spot is None:
                hidden = sorted(visibility.hidden) or "none"
                raise ToolError(f"{component!r} is not hidden; hidden now: {hidden}.")
            reach = await changes.shown(component)
        else:
            spot = visibility.hidden.get(component) or await find(component)
            if spot is None:
                raise ToolError(
                    f"No tool, prompt, resource or template {component!r} is offered now. "
                    "Names are as clients see them, e.g. 'sql_query' or 'sql://sql/tables'."
                )
            ask = await confirmation(
                ctx, f"Hide {component!r} from every client of the gateway?", confirm
            )
            if ask is not None:
                return ask
            visibility.hide(component, spot)  # again when hidden already: sent again
            reach = await changes.hidden(component, spot)
        await tell({spot.kind}, ctx)
        hidden = sorted(visibility.hidden)
        return {"component": component, "enabled": enabled, "hidden": hidden, "deployment": reach}

    @admin.tool(annotations=ToolAnnotations(destructiveHint=True, openWorldHint=False))
    async def reload(
        confirm: Annotated[bool, "Skip the question"] = False,
        ctx: Context = None,  # type: ignore[assignment]
    ) -> dict | InputRequiredResult:
        """Apply the configuration again without a restart (tokens, scopes, limits, canned
        queries, backends); returns what was applied, what needs a restart, and whether the
        other replicas reload too (`deployment`). An invalid config is refused whole. Asks for
        confirmation."""
        ask = await confirmation(ctx, "Reload the gateway's configuration?", confirm)
        if ask is not None:
            return ask
        answer, kinds = await runtime.reload()
        if kinds:
            await tell(kinds, ctx)
        return {**answer, "deployment": await changes.reloaded()}

    @admin.tool(annotations=ToolAnnotations(destructiveHint=True, openWorldHint=False))
    async def cancel_run(
        run_id: Annotated[str, "From pipelines_start_run"],
        confirm: Annotated[bool, "Skip the question"] = False,
        ctx: Context = None,  # type: ignore[assignment]
    ) -> dict | InputRequiredResult:
        """Stop any client's background pipeline run; returns its status. Asks for
        confirmation."""
        ask = await confirmation(ctx, f"Cancel pipeline run {run_id!r}?", confirm)
        if ask is not None:
            return ask
        # Admin scope alone suffices, and the run is found whoever started it.
        if pipelines is None:
            raise ToolError("This gateway runs no pipelines.")
        return await pipelines.cancel_any(run_id)

    @admin.tool(annotations=ToolAnnotations(destructiveHint=True, openWorldHint=True))
    async def clear_caches(
        confirm: Annotated[bool, "Skip the question"] = False,
        ctx: Context = None,  # type: ignore[assignment]
    ) -> dict | InputRequiredResult:
        """Refetch backend catalogs, drop stored sql results and pipeline caches; returns what
        was cleared. Asks for confirmation."""
        ask = await confirmation(
            ctx,
            "Clear every cache (backend catalogs, stored sql results, pipeline caches)?",
            confirm,
        )
        if ask is not None:
            return ask
        states = {}
        for name, backend in list(backends.backends.items()):
            with anyio.move_on_after(backend.total_timeout_s):
                await backend.refresh()
            states[name] = backend.catalog_state() if backend.catalog else "none"
        cleared: dict = {"backends": states}
        cleared["sql_results_dropped"] = sql.clear_results()
        cleared["pipeline_caches"] = await pipelines.clear_caches()
        return cleared
