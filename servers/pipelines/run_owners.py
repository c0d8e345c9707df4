"""Who started each background run, so an admin can act on any client's run.

Background runs are kept per caller (fastmcp's task scope: the principal and its subject), so
``get_run`` and ``cancel_run`` of one client never find another's. ``admin_cancel_run`` looks
up the run's owner here and acts in that owner's scope, nothing more.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager

from fastmcp.server.auth import AccessToken
from fastmcp.server.dependencies import get_access_token, get_http_request
from mcp.server.auth.middleware.auth_context import auth_context_var
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser

MAX_RUNS = 10_000
ANONYMOUS = None


class RunOwners:
    """Run id to the access token that started it (None: a local caller), bounded."""

    def __init__(self, max_runs: int = MAX_RUNS) -> None:
        self.max_runs = max_runs
        self._owners: OrderedDict[str, AccessToken | None] = OrderedDict()

    def started(self, run_id: str) -> None:
        """Record the current caller as the owner of run_id."""
        self._owners[run_id] = get_access_token()
        while len(self._owners) > self.max_runs:
            self._owners.popitem(last=False)

    def known(self, run_id: str) -> bool:
        return run_id in self._owners

    @contextmanager
    def acting_as_owner(self, run_id: str) -> Iterator[None]:
        """Within this block the caller is the run's owner (for the task handlers' scope)."""
        owner = self._owners.get(run_id, ANONYMOUS)
        user = AuthenticatedUser(owner) if owner is not None else None
        try:
            request = get_http_request()
        except RuntimeError:
            request = None
        saved = request.scope.get("user") if request is not None else None
        if request is not None:
            request.scope["user"] = user
        reset = auth_context_var.set(user)
        try:
            yield
        finally:
            auth_context_var.reset(reset)
            if request is not None:
                request.scope["user"] = saved
