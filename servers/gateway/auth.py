"""Who is calling: bearer tokens over HTTP, from a file of hashed tokens, the environment, or JWTs.

A tokens file holds one JSON object a line, ``{"client": "alice", "scopes": ["sql"],
"sha256": "<hex digest of the token>"}``; the token itself is never stored. ``uv run gateway.py
token --client alice --scopes sql,pipelines`` makes a token and prints its line. Every configured
source is tried in turn and the first that accepts the token wins. stdio has no HTTP auth: a
local process is trusted with every scope.

Every accepted token names a principal by its source and subject, used as the client name for
rate buckets, the audit log and run ownership: ``token:<client>`` (a static token),
``jwt:<sub>`` (a JWT of its own subject) or ``oauth:<client_id>:<sub>`` (a JWT issued to an OAuth
client for a user). A JWT whose ``sub`` is a tokens-file client's name is ``jwt:alice``, never
``token:alice``. A JWT must carry ``exp``; ``nbf`` and ``iat`` in the future (beyond a small
leeway) are refused.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from fastmcp.server.auth import AccessToken, AuthProvider, RemoteAuthProvider, TokenVerifier
from fastmcp.server.auth.providers.jwt import JWTVerifier
from pydantic import AnyHttpUrl

from servers.settings import AuthSettings, GatewaySettings

TOKEN_PREFIX = "gw_"


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token(client: str, scopes: list[str]) -> tuple[str, str]:
    """A fresh random token and the tokens-file line that accepts it."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    entry = {"client": client, "scopes": scopes, "sha256": token_digest(token)}
    return token, json.dumps(entry)


@dataclass(frozen=True)
class TokenEntry:
    client: str
    scopes: tuple[str, ...]


def read_tokens_file(path: Path) -> dict[str, TokenEntry]:
    """The entries of a tokens file by digest; a bad line is an error naming its line number."""
    try:
        lines = Path(path).read_text().splitlines()
    except FileNotFoundError:
        raise ValueError(f"tokens file {path} does not exist") from None
    entries: dict[str, TokenEntry] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            data = json.loads(line)
            client, scopes, digest = data["client"], data["scopes"], data["sha256"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise ValueError(
                f"tokens file {path}, line {number}: expected a JSON object with "
                '"client", "scopes" and "sha256"'
            ) from None
        valid_digest = isinstance(digest, str) and len(digest) == 64
        if not valid_digest or not all(isinstance(s, str) for s in scopes):
            raise ValueError(
                f"tokens file {path}, line {number}: sha256 must be 64 hex digits and "
                "scopes a list of strings"
            )
        entries[digest.lower()] = TokenEntry(str(client), tuple(scopes))
    return entries


class HashedTokenVerifier(TokenVerifier):
    """Static bearer tokens known only by their SHA-256 digests; replaceable at runtime."""

    def __init__(self, entries: dict[str, TokenEntry]) -> None:
        super().__init__()
        self.entries = entries

    async def verify_token(self, token: str) -> AccessToken | None:
        entry = self.entries.get(token_digest(token))
        if entry is None:
            return None
        return AccessToken(
            token=token,
            client_id=f"token:{entry.client}",
            scopes=list(entry.scopes),
            expires_at=None,
            claims={"sub": entry.client},
        )


class FirstAccepting(TokenVerifier):
    """Tries each verifier in order; the first that accepts the token wins. Unlike fastmcp's
    MultiAuth it keeps the client name as the verifier gave it."""

    def __init__(self, verifiers: list[TokenVerifier]) -> None:
        super().__init__()
        self.verifiers = verifiers

    async def verify_token(self, token: str) -> AccessToken | None:
        for verifier in self.verifiers:
            try:
                accepted = await verifier.verify_token(token)
            except Exception:  # a failing source is a refusal, never a crash of the request
                accepted = None
            if accepted is not None:
                return accepted
        return None


class ClaimCheckedJWT(JWTVerifier):
    """fastmcp's JWT verification, plus: ``exp`` is required, ``nbf`` and ``iat`` may not be in
    the future beyond ``leeway_s``, a subject is required, and the client name is the
    principal (``jwt:<sub>`` or ``oauth:<client_id>:<sub>``)."""

    def __init__(self, *, leeway_s: float, **kwargs) -> None:
        super().__init__(**kwargs)
        self.leeway_s = leeway_s

    async def load_access_token(self, token: str) -> AccessToken | None:
        accepted = await super().load_access_token(token)
        if accepted is None:
            return None
        claims = accepted.claims or {}
        principal = jwt_principal(claims, time.time(), self.leeway_s)
        if principal is None:
            return None
        return accepted.model_copy(update={"client_id": principal})


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def jwt_principal(claims: dict, now: float, leeway_s: float) -> str | None:
    """The principal a verified JWT's claims name, or None when its times or subject are bad."""
    exp, nbf, iat = claims.get("exp"), claims.get("nbf"), claims.get("iat")
    if not _number(exp) or exp < now:
        return None
    for claim in (nbf, iat):
        if claim is not None and (not _number(claim) or claim > now + leeway_s):
            return None
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject:
        return None
    client = claims.get("client_id") or claims.get("azp")
    if isinstance(client, str) and client and client != subject:
        return f"oauth:{client}:{subject}"
    return f"jwt:{subject}"


def static_entries(settings: AuthSettings) -> dict[str, TokenEntry]:
    """Tokens from the tokens file and the environment token, by digest. ValueError when the
    environment token is shorter than ``min_token_chars`` (guessable, and too short to redact)."""
    entries = read_tokens_file(settings.tokens_file) if settings.tokens_file else {}
    if settings.token is not None:
        secret = settings.token.get_secret_value()
        if len(secret) < settings.min_token_chars:
            raise ValueError(
                f"GATEWAY_AUTH__TOKEN is {len(secret)} characters long; at least "
                f"{settings.min_token_chars} are required (GATEWAY_AUTH__MIN_TOKEN_CHARS). Make "
                "one with `uv run gateway.py token --client NAME`."
            )
        entries[token_digest(secret)] = TokenEntry(
            settings.token_client, tuple(settings.token_scopes)
        )
    return entries


def build_verifiers(settings: AuthSettings) -> list[TokenVerifier]:
    """The static tokens first, then the JWT verifier; ValueError on a bad tokens file."""
    verifiers: list[TokenVerifier] = [HashedTokenVerifier(static_entries(settings))]
    if settings.jwt_public_key or settings.jwt_jwks_url:
        verifiers.append(
            ClaimCheckedJWT(
                leeway_s=settings.jwt_leeway_s,
                public_key=settings.jwt_public_key,
                jwks_uri=settings.jwt_jwks_url,
                issuer=settings.jwt_issuer,
                audience=settings.jwt_audience,
                algorithm=settings.jwt_algorithm,
            )
        )
    return verifiers


@dataclass
class GatewayAuth:
    """The auth provider given to fastmcp, and the verifiers behind it, replaceable at runtime."""

    provider: AuthProvider
    verifier: FirstAccepting

    # The token sources a running gateway can take on; turning auth on or off and the
    # protected-resource metadata are fixed when the HTTP app is built.
    reloads: ClassVar[frozenset[str]] = frozenset(
        f"auth.{name}"
        for name in (
            "tokens_file", "token", "token_client", "token_scopes", "jwt_public_key",
            "jwt_jwks_url", "jwt_issuer", "jwt_audience", "jwt_algorithm",
        )
    )  # fmt: skip
    lists: ClassVar[frozenset[str]] = frozenset()

    def check(self, new: GatewaySettings) -> list[TokenVerifier]:
        """The verifiers of new's token sources; raises ValueError if they are bad."""
        if not new.auth.configured:
            raise ValueError("auth.*: no token source is left; turning auth off needs a restart")
        return build_verifiers(new.auth)

    async def apply(self, verifiers: list[TokenVerifier]) -> list[str]:
        self.verifier.verifiers = verifiers
        return [f"auth ({len(verifiers[0].entries)} static tokens)"]


def build_auth(settings: AuthSettings) -> GatewayAuth | None:
    """The provider for the configured sources, or None when no auth is configured."""
    if not settings.configured:
        return None
    verifier = FirstAccepting(build_verifiers(settings))
    provider: AuthProvider = verifier
    if settings.base_url and settings.jwt_issuer and len(verifier.verifiers) > 1:
        # RFC 9728 metadata, so OAuth clients learn where to get a token.
        provider = RemoteAuthProvider(
            token_verifier=verifier,
            authorization_servers=[AnyHttpUrl(settings.jwt_issuer)],
            base_url=settings.base_url,
            resource_name="gateway",
        )
    return GatewayAuth(provider, verifier)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def insecure_bind_refusal(host: str, auth_configured: bool, insecure: bool) -> str | None:
    """Why the gateway will not listen on host, or None when it may."""
    if auth_configured or insecure or is_loopback(host):
        return None
    return (
        f"refusing to listen on {host} without authentication: anyone who can reach it could "
        "call every tool. Configure auth (GATEWAY_AUTH__TOKENS_FILE, GATEWAY_AUTH__TOKEN or "
        "GATEWAY_AUTH__JWT_*), listen on 127.0.0.1, or pass --insecure if a proxy in front "
        "authenticates."
    )
