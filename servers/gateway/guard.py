"""One authentication and scope layer in front of every HTTP route of the gateway (auth on).

    route                      needs
    /, /health, /.well-known/* nothing (the home page says how to connect, nothing secret)
    /ready                     nothing for the overall state; a token with ``admin`` for details
    /metrics                   a token with ``admin`` or ``metrics``
    /sql/results/<id>.<ext>    a token with ``sql``, of the principal that made the result
    /mcp                       a token (checked by fastmcp; here: sessions and throttling)
    anything else              a token

Around that: a client address that fails authentication ``auth.failures_per_minute`` times in
a minute gets 429 (without its token being looked at) until the minute is over, except for a
token that was accepted recently; every 401 carries a short JSON body saying how to
authenticate; a principal may open ``limits.sessions_per_minute`` protocol sessions a minute and
hold ``limits.max_sessions`` at once.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field

from fastmcp.server.auth import AccessToken, AuthProvider
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from servers.gateway.limits import TokenBucket
from servers.gateway.owners import DOWNLOAD_PREFIX, ResultOwners, unknown_result
from servers.gateway.policy import granted
from servers.settings import GatewaySettings

PUBLIC = ("/health", "/.well-known/")
MAX_ADDRESSES = 10_000
ACCEPTED_TTL_S = 600.0
HOW_TO_AUTHENTICATE = (
    "Send 'Authorization: Bearer <token>'. A token comes from the gateway's operator "
    "(`gateway.py token --client NAME`) or, for OAuth clients, from the authorization server "
    "named by the WWW-Authenticate header's resource_metadata."
)


def _json(status: int, body: dict, headers: list[tuple[bytes, bytes]] = ()) -> list[Message]:
    data = json.dumps(body).encode()
    start = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    return [
        {"type": "http.response.start", "status": status, "headers": start + list(headers)},
        {"type": "http.response.body", "body": data},
    ]


async def _answer(send: Send, status: int, body: dict, headers=()) -> None:
    for message in _json(status, body, headers):
        await send(message)


def _header(scope: Scope, name: bytes) -> bytes | None:
    return next((v for k, v in scope.get("headers") or [] if k.lower() == name), None)


def _bearer(scope: Scope) -> str | None:
    value = (_header(scope, b"authorization") or b"").decode("latin-1")
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass
class FailedAuth:
    """Failed authentications per client address in the last minute, and tokens accepted
    lately (they pass even while their address is throttled)."""

    per_minute: int
    failures: OrderedDict[str, deque[float]] = field(default_factory=OrderedDict)
    accepted: OrderedDict[str, float] = field(default_factory=OrderedDict)

    def retry_after(self, address: str) -> float:
        """Seconds until address may try again; 0 when it may now."""
        times = self.failures.get(address)
        now = time.monotonic()
        while times and times[0] < now - 60:
            times.popleft()
        if not times or len(times) < self.per_minute:
            return 0.0
        return max(1.0, times[0] + 60 - now)

    def failed(self, address: str) -> None:
        self.failures.setdefault(address, deque()).append(time.monotonic())
        self.failures.move_to_end(address)
        while len(self.failures) > MAX_ADDRESSES:
            self.failures.popitem(last=False)

    def remember(self, token: str) -> None:
        self.accepted[_digest(token)] = time.monotonic() + ACCEPTED_TTL_S
        self.accepted.move_to_end(_digest(token))
        while len(self.accepted) > MAX_ADDRESSES:
            self.accepted.popitem(last=False)

    def known(self, token: str | None) -> bool:
        return token is not None and self.accepted.get(_digest(token), 0) > time.monotonic()


@dataclass
class Sessions:
    """Open protocol sessions per principal (by the session ids the server hands out)."""

    max_sessions: int
    per_minute: float
    idle_s: float
    by_id: dict[str, tuple[str, float]] = field(default_factory=dict)
    by_principal: dict[str, set[str]] = field(default_factory=dict)
    buckets: dict[str, TokenBucket] = field(default_factory=dict)

    def refusal(self, principal: str) -> str | None:
        """Why principal may not open a session now, or None (and the attempt is counted)."""
        now = time.monotonic()
        held = self.by_principal.get(principal, set())
        for sid in [s for s in held if self.by_id[s][1] < now - self.idle_s]:
            self.close(sid)
        if len(self.by_principal.get(principal, ())) >= self.max_sessions:
            return (
                f"Too many open sessions for client {principal!r}: at most "
                f"{self.max_sessions}. Reuse a session or end one (HTTP DELETE) first."
            )
        bucket = self.buckets.setdefault(
            principal, TokenBucket(self.per_minute / 60, max(1.0, self.per_minute))
        )
        wait = bucket.take()
        if wait:
            return (
                f"Too many new sessions for client {principal!r}: at most "
                f"{self.per_minute:g} a minute. Retry in {wait:.0f} s, or reuse a session."
            )
        return None

    def opened(self, sid: str, principal: str) -> None:
        self.by_id[sid] = (principal, time.monotonic())
        self.by_principal.setdefault(principal, set()).add(sid)

    def used(self, sid: str) -> None:
        if sid in self.by_id:
            self.by_id[sid] = (self.by_id[sid][0], time.monotonic())

    def close(self, sid: str) -> None:
        principal, _ = self.by_id.pop(sid, (None, 0))
        if principal is not None:
            self.by_principal.get(principal, set()).discard(sid)


class HttpGuard:
    """ASGI middleware, outermost: see the module docstring."""

    def __init__(
        self,
        app: ASGIApp,
        auth: AuthProvider,
        settings: GatewaySettings,
        owners: ResultOwners,
        mcp_path: str = "/mcp",
    ) -> None:
        self.app, self.auth, self.owners, self.mcp_path = app, auth, owners, mcp_path
        self.max_body = settings.limits.max_body_bytes
        self.failed = FailedAuth(settings.auth.failures_per_minute)
        limits = settings.limits
        self.sessions = Sessions(
            limits.max_sessions, limits.sessions_per_minute, limits.session_idle_s
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if path == "/" or path.startswith(PUBLIC):
            await self.app(scope, receive, send)
            return
        address = (scope.get("client") or ("unknown", 0))[0]
        token = _bearer(scope)
        wait = self.failed.retry_after(address)
        if wait and not self.failed.known(token):
            refusal = f"too many failed authentications from this address; retry in {wait:.0f} s"
            await _answer(send, 429, {"error": refusal}, [(b"retry-after", b"%d" % wait)])
            return
        send = self._watching(send, address, token)
        if path == self.mcp_path or path.startswith(self.mcp_path + "/"):
            await self._mcp(scope, receive, send, token)
        elif path == "/ready":
            await self._ready(scope, receive, send, await self._verify(token))
        else:
            accepted = await self._verify(token)
            if accepted is None:
                await self._unauthorized(send)
                return
            needed = self._needed(path)
            if needed and not any(granted(accepted.scopes, s) for s in needed):
                await _answer(
                    send, 403, {"error": f"this token lacks the scope {' or '.join(needed)}"}
                )
                return
            if path.startswith(DOWNLOAD_PREFIX):
                result_id = path[len(DOWNLOAD_PREFIX) :].rpartition(".")[0]
                if not self.owners.may_read(result_id, accepted.client_id):
                    await _answer(send, 404, {"error": unknown_result(result_id)})
                    return
            await self.app(scope, receive, send)

    @staticmethod
    def _needed(path: str) -> list[str]:
        if path == "/metrics":
            return ["admin", "metrics"]
        if path.startswith(DOWNLOAD_PREFIX):
            return ["sql"]
        return []

    async def _verify(self, token: str | None) -> AccessToken | None:
        if token is None:
            return None
        try:
            accepted = await self.auth.verify_token(token)
        except Exception:  # a failing source is a refusal
            accepted = None
        if accepted is not None:
            self.failed.remember(token)
        return accepted

    def _watching(self, send: Send, address: str, token: str | None) -> Send:
        """Count 401s against the address and give them a JSON body saying what to do;
        remember tokens that were accepted."""
        replaced = False

        async def watched(message: Message) -> None:
            nonlocal replaced
            if message["type"] == "http.response.start":
                if message["status"] == 401:
                    self.failed.failed(address)
                    replaced = True
                    challenge = [
                        (k, v) for k, v in message.get("headers", []) if k == b"www-authenticate"
                    ] or [(b"www-authenticate", b"Bearer")]
                    await _answer(send, 401, self._why(token), challenge)
                    return
                if token is not None and message["status"] < 400:
                    self.failed.remember(token)
            if not replaced:
                await send(message)

        return watched

    @staticmethod
    def _why(token: str | None) -> dict:
        error = "invalid_token" if token else "unauthorized"
        what = "The token was not accepted." if token else "Authentication is required."
        return {"error": error, "error_description": f"{what} {HOW_TO_AUTHENTICATE}"}

    async def _unauthorized(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": 401, "headers": []})

    async def _ready(self, scope: Scope, receive: Receive, send: Send, accepted) -> None:
        """Details for admins; the overall state alone for everyone else."""
        if accepted is not None and granted(accepted.scopes, "admin"):
            await self.app(scope, receive, send)
            return
        messages: list[Message] = []

        async def keep(message: Message) -> None:
            messages.append(message)

        await self.app(scope, receive, keep)
        start = next(m for m in messages if m["type"] == "http.response.start")
        body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
        try:
            status = json.loads(body).get("status", "unknown")
        except (ValueError, AttributeError):
            status = "unknown"
        await _answer(send, start["status"], {"status": status})

    async def _mcp(self, scope: Scope, receive: Receive, send: Send, token: str | None) -> None:
        """Sessions: cap and rate of new ones per principal; follow their ids."""
        sid = (_header(scope, b"mcp-session-id") or b"").decode("latin-1") or None
        if sid is not None:
            self.sessions.used(sid)
            await self.app(scope, receive, self._following(send, sid, scope["method"]))
            return
        if scope["method"] != "POST" or token is None:
            await self.app(scope, receive, send)
            return
        body, receive = await self._buffered(receive)
        principal = None
        if body is not None and b'"initialize"' in body and _is_initialize(body):
            accepted = await self._verify(token)
            if accepted is not None:
                principal = accepted.client_id
                refusal = self.sessions.refusal(principal)
                if refusal:
                    await _answer(send, 429, _rpc_error(body, refusal), [(b"retry-after", b"60")])
                    return
        await self.app(scope, receive, self._opening(send, principal))

    async def _buffered(self, receive: Receive) -> tuple[bytes | None, Receive]:
        """Read the body (up to the body limit) and a receive that replays it."""
        chunks: list[Message] = []
        size = 0
        while True:
            message = await receive()
            chunks.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > self.max_body or not message.get("more_body"):
                break
        complete = size <= self.max_body and chunks[-1]["type"] == "http.request"
        body = b"".join(m.get("body", b"") for m in chunks) if complete else None

        async def replay() -> Message:
            return chunks.pop(0) if chunks else await receive()

        return body, replay

    def _opening(self, send: Send, principal: str | None) -> Send:
        async def opening(message: Message) -> None:
            if principal and message["type"] == "http.response.start":
                sid = dict(message.get("headers") or []).get(b"mcp-session-id")
                if sid and message["status"] < 400:
                    self.sessions.opened(sid.decode("latin-1"), principal)
            await send(message)

        return opening

    def _following(self, send: Send, sid: str, method: str) -> Send:
        async def following(message: Message) -> None:
            if message["type"] == "http.response.start":
                gone = message["status"] == 404 or (method == "DELETE" and message["status"] < 300)
                if gone:
                    self.sessions.close(sid)
            await send(message)

        return following


def _is_initialize(body: bytes) -> bool:
    try:
        data = json.loads(body)
    except ValueError:
        return False
    items = data if isinstance(data, list) else [data]
    return any(isinstance(item, dict) and item.get("method") == "initialize" for item in items)


def _rpc_error(body: bytes, message: str) -> dict:
    try:
        request_id = json.loads(body).get("id")
    except (ValueError, AttributeError):
        request_id = None
    return {"jsonrpc": "2.0", "id": request_id, "error": {"code": -32000, "message": message}}
