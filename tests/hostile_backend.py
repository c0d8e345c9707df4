"""Hostile MCP backends over HTTP, written by hand (no MCP library) so they can say anything:

- ``bad-uris``: a handshake-era server whose resource list holds URIs that are not
  ``scheme://...`` (``urn:example:report``, ``mailto:a@b.c``, ``""``) beside a good one;
- ``redirect``: every request answered 307 to somewhere else;
- ``garbage``: every request answered 200 with an HTML page;
- ``error500``: every request answered HTTP 500;
- ``unauthorised``: every request answered HTTP 401 (a wrong or missing token);
- ``huge-catalog``: its tools/list answer is 64 MiB, streamed.

GET /health answers ok in every mode (so the test knows it is serving).
"""

from __future__ import annotations

import json

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

BAD_URIS = ["urn:example:report", "mailto:a@b.c", ""]
GOOD_URI = "test://fine"
HUGE_CATALOG_MIB = 64


def _answer(request_id, result: dict) -> JSONResponse:
    return JSONResponse({"jsonrpc": "2.0", "id": request_id, "result": result})


def _huge_tools(request_id) -> StreamingResponse:
    """A tools/list answer of HUGE_CATALOG_MIB MiB, produced as it is sent (small memory)."""
    chunk = "y" * (1024 * 1024)

    def body():
        head = {"jsonrpc": "2.0", "id": request_id, "result": {"tools": [{"name": "t"}]}}
        yield json.dumps(head)[: -len('"}]}}')].encode() + b'", "inputSchema": {}, "description": "'

        for _ in range(HUGE_CATALOG_MIB):
            yield chunk.encode()
        yield b'"}]}}'

    return StreamingResponse(body(), media_type="application/json")


def _mcp(mode: str):
    async def handle(request: Request) -> Response:
        if request.method != "POST":
            return Response(status_code=405)
        if mode == "redirect":
            return Response(status_code=307, headers={"location": "http://127.0.0.1:9/elsewhere"})
        if mode == "garbage":
            return Response("<html><body>Welcome to nginx!</body></html>", media_type="text/html")
        if mode == "error500":
            return PlainTextResponse("Internal Server Error", status_code=500)
        if mode == "unauthorised":
            return PlainTextResponse("Unauthorized", status_code=401)
        message = await request.json()
        method, request_id = message.get("method"), message.get("id")
        if request_id is None:
            return Response(status_code=202)  # a notification
        if method == "initialize":
            capabilities = {"tools": {}, "resources": {}}
            return _answer(
                request_id,
                {
                    "protocolVersion": "2025-11-25",
                    "capabilities": capabilities,
                    "serverInfo": {"name": f"hostile-{mode}", "version": "1"},
                },
            )
        if method == "tools/list":
            if mode == "huge-catalog":
                return _huge_tools(request_id)
            tool = {"name": "echo", "inputSchema": {"type": "object"}, "description": "echo"}
            return _answer(request_id, {"tools": [tool]})
        if method == "resources/list":
            uris = [*BAD_URIS, GOOD_URI] if mode == "bad-uris" else [GOOD_URI]
            return _answer(
                request_id,
                {"resources": [{"uri": uri, "name": f"r{i}"} for i, uri in enumerate(uris)]},
            )
        if method == "resources/templates/list":
            return _answer(request_id, {"resourceTemplates": []})
        if method == "resources/read":
            uri = message["params"]["uri"]
            return _answer(request_id, {"contents": [{"uri": uri, "text": f"read {uri}"}]})
        if method == "tools/call":
            text = json.dumps(message["params"].get("arguments", {}))
            return _answer(request_id, {"content": [{"type": "text", "text": text}]})
        if method == "ping":
            return _answer(request_id, {})
        error = {"code": -32601, "message": "Method not found"}
        return JSONResponse({"jsonrpc": "2.0", "id": request_id, "error": error})

    return handle


async def health(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


def serve(mode: str, port: int) -> None:
    routes = [
        Route("/mcp", _mcp(mode), methods=["POST", "GET", "DELETE"]),
        Route("/health", health),
    ]
    uvicorn.run(Starlette(routes=routes), host="127.0.0.1", port=port, log_level="warning")
