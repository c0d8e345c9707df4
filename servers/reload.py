"""Parts of a running gateway that take new settings without a restart.

``admin_reload`` reads the settings again and asks every part to ``check`` them first (nothing
changes yet; a bad value raises ValueError naming it), then to ``apply`` what it checked: a bad
config changes nothing, a good one changes every part. Each part says which settings it applies
while running (``reloads``, dotted paths such as ``"limits"`` or ``"sql.canned_queries"``): any
other changed setting is reported as needing a restart.
"""

from __future__ import annotations

from typing import Any, Protocol

from servers.settings import GatewaySettings


class Reloadable(Protocol):
    reloads: frozenset[str]
    """The settings this part applies while running, as dotted paths."""
    lists: frozenset[str]
    """The lists ("tools", "resources", "prompts") clients are told changed when it applies."""

    def check(self, new: GatewaySettings) -> Any:
        """What applying ``new`` would do (None or empty: nothing); raises ValueError or a
        pydantic ValidationError, changing nothing, when ``new`` cannot be applied."""

    async def apply(self, plan: Any) -> list[str]:
        """Apply a plan ``check`` returned; one line per thing changed (empty: nothing)."""


def needs_restart(
    started: GatewaySettings, new: GatewaySettings, parts: list[Reloadable]
) -> list[str]:
    """The changed settings no part applies while running, by dotted name (``sql.max_rows``)."""
    live = set().union(*(part.reloads for part in parts))
    restart = []
    for name in type(new).model_fields:
        old_value, new_value = getattr(started, name), getattr(new, name)
        if name in live or old_value == new_value:
            continue
        section = type(new_value)
        if any(path.startswith(f"{name}.") for path in live) and hasattr(section, "model_fields"):
            restart += [
                f"{name}.{field}"
                for field in section.model_fields
                if f"{name}.{field}" not in live
                and getattr(new_value, field) != getattr(old_value, field)
            ]
        else:
            restart.append(name)
    return restart
