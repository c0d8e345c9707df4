"""A tiny real REST API with an OpenAPI spec, for the OpenAPI-backend tests.

    python -m tests.rest_api --port 8124       # requires "Authorization: Bearer $REST_API_TOKEN"

GET /openapi.json is its spec; GET /airports/{code} reads an airport; POST /distance computes a
(fake) distance; GET /health answers without a token.
"""

from __future__ import annotations

import argparse
import os

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

AIRPORTS = {"JFK": "John F Kennedy Intl", "LAX": "Los Angeles Intl"}

SPEC = {
    "openapi": "3.0.3",
    "info": {"title": "Airports", "version": "1.0"},
    "paths": {
        "/airports/{code}": {
            "get": {
                "operationId": "get_airport",
                "summary": "One airport by its FAA code.",
                "parameters": [
                    {"name": "code", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "responses": {"200": {"description": "The airport."}},
            }
        },
        "/distance": {
            "post": {
                "operationId": "distance",
                "summary": "Distance between two airports, in miles.",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "properties": {
                                    "origin": {"type": "string"},
                                    "dest": {"type": "string"},
                                },
                                "required": ["origin", "dest"],
                            }
                        }
                    },
                },
                "responses": {
                    "200": {
                        "description": "The distance.",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "properties": {"miles": {"type": "integer"}},
                                }
                            }
                        },
                    }
                },
            }
        },
    },
}


def _authorised(request: Request) -> bool:
    return request.headers.get("authorization") == f"Bearer {os.environ['REST_API_TOKEN']}"


async def spec(request: Request) -> JSONResponse:
    return JSONResponse(SPEC)


async def airport(request: Request) -> JSONResponse:
    if not _authorised(request):
        return JSONResponse({"error": "unauthorised"}, status_code=401)
    code = request.path_params["code"]
    if code not in AIRPORTS:
        return JSONResponse({"error": "no such airport"}, status_code=404)
    return JSONResponse({"code": code, "name": AIRPORTS[code]})


async def distance(request: Request) -> JSONResponse:
    if not _authorised(request):
        return JSONResponse({"error": "unauthorised"}, status_code=401)
    body = await request.json()
    return JSONResponse({"miles": 2475 if {body["origin"], body["dest"]} == {"JFK", "LAX"} else 0})


async def health(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


app = Starlette(
    routes=[
        Route("/openapi.json", spec),
        Route("/airports/{code}", airport),
        Route("/distance", distance, methods=["POST"]),
        Route("/health", health),
    ]
)

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    uvicorn.run(app, host="127.0.0.1", port=parser.parse_args().port, log_level="warning")
