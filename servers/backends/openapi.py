"""REST APIs as backends: an OpenAPI spec (a file or URL) and a base URL become a namespace.

``RestLink`` is a link like the MCP ones (``link.Link``): it builds the API's MCP server with
``FastMCP.from_openapi`` on first use (so an API whose spec URL is down at start-up is retried
later, like any backend) and talks to it in-process. Requests to the API go through one pool of
keep-alive connections with the entry's timeouts and headers (its bearer token among them). GET
routes with path parameters become resource templates; every other route becomes a tool.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
from fastmcp import FastMCP
from fastmcp.client.transports import FastMCPTransport
from fastmcp.client.transports.base import TransportOptions
from fastmcp.server.providers.openapi import MCPType, RouteMap
from mcp import ClientSession
from mcp.client.session import LoggingFnT

from servers.backends.http import SharedConnections
from servers.backends.link import (
    LinkError,
    LinkEvents,
    RelayingSession,
    negotiate,
    static_headers,
)
from servers.settings import BackendConfig

ROUTES = [
    RouteMap(methods=["GET"], pattern=r"\{[^}]+\}", mcp_type=MCPType.RESOURCE_TEMPLATE),
    RouteMap(mcp_type=MCPType.TOOL),
]


class RestLink:
    """A REST API served as an in-process MCP server built from its OpenAPI spec."""

    def __init__(self, config: BackendConfig, events: LinkEvents) -> None:
        """Like the other links; no list changes to tell: a spec does not change."""
        assert config.openapi is not None and config.base_url is not None
        self.restarts = 0
        self._config = config
        self._connections = SharedConnections()
        self._api = httpx2.AsyncClient(
            base_url=config.base_url,
            headers=static_headers(config),
            timeout=httpx2.Timeout(config.timeout_s, connect=config.connect_timeout_s),
            transport=self._connections,
        )
        self._server: FastMCP | None = None

    def status(self) -> dict:
        return {"transport": "openapi", "spec": "loaded" if self._server else "not loaded"}

    async def start(self) -> None:
        """Nothing to start: the spec is read on first use."""

    async def supervise(self) -> None:
        """Nothing to supervise: the first request tells whether the spec loads."""

    async def stop(self) -> None:
        await self._connections.close_connections()

    def forget(self) -> None:
        """Nothing to forget: the API's server, once built, stays valid."""

    async def _load_spec(self) -> dict[str, Any]:
        source = self._config.openapi or ""
        try:
            if source.startswith(("http://", "https://")):
                response = await self._fetch(source)
                response.raise_for_status()
                text = response.text
            else:
                text = await anyio.Path(source).read_text()
            spec = json.loads(text)
        except httpx2.HTTPStatusError as error:
            status = error.response.status_code
            raise LinkError(f"the OpenAPI spec URL answered HTTP {status}") from None
        except json.JSONDecodeError:
            raise LinkError("the OpenAPI spec is not JSON") from None
        except OSError:
            raise LinkError("the OpenAPI spec file could not be read") from None
        if not isinstance(spec, dict) or "paths" not in spec:
            raise LinkError("the OpenAPI spec has no 'paths'")
        return spec

    async def _fetch(self, url: str) -> httpx2.Response:
        """GET the spec; the API's credentials go along only to the API's own origin."""
        spec, api = httpx2.URL(url), httpx2.URL(self._config.base_url or "")
        if (spec.scheme, spec.host, spec.port) == (api.scheme, api.host, api.port):
            return await self._api.get(url)
        async with httpx2.AsyncClient(timeout=self._api.timeout) as stranger:
            return await stranger.get(url)

    async def _api_server(self) -> FastMCP:
        if self._server is None:
            spec = await self._load_spec()
            try:
                self._server = FastMCP.from_openapi(
                    spec,
                    client=self._api,
                    name=Path(self._config.openapi or "api").stem,
                    route_maps=ROUTES,
                    # The API's own error (status and body) is what the caller needs to see.
                    mask_error_details=False,
                )
            except ValueError:
                raise LinkError("the OpenAPI spec is not valid") from None
        return self._server

    @asynccontextmanager
    async def session(self, on_log: LoggingFnT | None) -> AsyncIterator[ClientSession]:
        server = await self._api_server()
        transport = FastMCPTransport(server)
        async with transport.connect_session(
            transport_options=TransportOptions(session_class=RelayingSession),
            read_timeout_seconds=self._config.timeout_s,
            logging_callback=on_log,
        ) as session:
            await negotiate(session)
            yield session
