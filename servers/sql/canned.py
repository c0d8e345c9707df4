"""Canned queries: named, parameterised queries from the settings, each a tool of its own.

A canned query's parameters become the tool's typed input schema; values are validated against
it and bound as prepared-statement parameters (``$name`` in the SQL), never interpolated. The SQL
itself passes the same gate as ad-hoc queries, checked at start-up.
"""

import asyncio
import datetime as dt
import re
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated, Any, Literal

import duckdb
from fastmcp import FastMCP
from fastmcp.exceptions import ToolError
from fastmcp.tools import Tool, ToolResult
from mcp.types import ToolAnnotations
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from servers.conventions import describe_errors
from servers.settings import CannedParameter, CannedQuery, SqlSettings
from servers.sql.gate import RefusedStatement, check_statement
from servers.sql.query import current_context

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,47}$")
_TYPES = {"string": str, "integer": int, "number": float, "boolean": bool, "date": dt.date}

Answer = Callable[..., Awaitable[ToolResult]]


def tool_names(server: FastMCP) -> frozenset[str]:
    """The names of the tools registered on server so far.

    fastmcp lists tools only through a coroutine; it runs here on an event loop of its own in a
    short-lived thread, so that a server built inside a running loop can call this too. Called
    once per server, at start-up.
    """
    with ThreadPoolExecutor(max_workers=1) as thread:
        tools = thread.submit(asyncio.run, server.local_provider.list_tools()).result()
    return frozenset(tool.name for tool in tools)


def check_canned_queries(
    cursor: duckdb.DuckDBPyConnection, canned: dict[str, CannedQuery], reserved: frozenset[str]
) -> None:
    """Refuse, naming it, a canned query with a bad name, the name of one of the server's own
    tools (``reserved``), or SQL the gate would refuse."""
    for name, query in canned.items():
        if not _NAME.match(name) or name in reserved:
            raise ValueError(
                f"canned query {name!r}: names are lower-case letters, digits and '_' (starting "
                f"with a letter, at most 48) and not one of {sorted(reserved)}"
            )
        try:
            check_statement(cursor, query.sql)
        except RefusedStatement as exc:
            raise ValueError(f"canned query {name!r}: {exc}") from None


def parameters_model(name: str, query: CannedQuery) -> type[BaseModel]:
    """A pydantic model of the query's parameters: types, defaults, bounds, allowed values."""
    fields: dict[str, Any] = {
        parameter: (_annotation(spec), _field(spec)) for parameter, spec in query.parameters.items()
    }
    return create_model(f"{name}_parameters", __config__=ConfigDict(extra="forbid"), **fields)


def _annotation(spec: CannedParameter) -> Any:
    if spec.enum:
        return Literal[tuple(spec.enum)]
    kind = _TYPES[spec.type]
    if spec.type == "string":
        return Annotated[kind, Field(max_length=spec.max_length, pattern=spec.pattern)]
    if spec.type in ("integer", "number"):
        return Annotated[kind, Field(ge=spec.minimum, le=spec.maximum)]
    return kind


def _field(spec: CannedParameter) -> Any:
    default = ... if spec.required else spec.default
    return Field(default, description=spec.description or None)


class CannedQueryTool(Tool):
    """One canned query as a tool; arguments are validated, then bound as parameters."""

    query: Annotated[CannedQuery, Field(exclude=True)]
    model: Annotated[Any, Field(exclude=True)]
    limits: Annotated[SqlSettings, Field(exclude=True)]
    answer: Annotated[Any, Field(exclude=True)]

    @classmethod
    def build(
        cls,
        name: str,
        query: CannedQuery,
        limits: SqlSettings,
        annotations: ToolAnnotations,
        answer: Answer,
    ) -> "CannedQueryTool":
        model = parameters_model(name, query)
        schema = model.model_json_schema()
        schema.pop("title", None)
        return cls(
            name=name,
            title=query.title,
            description=(
                f"{query.description} Returns rows like sql_query "
                f"(≤ {query.max_rows or limits.max_rows})."
            ),
            parameters=schema,
            annotations=annotations,
            query=query,
            model=model,
            limits=limits,
            answer=answer,
        )

    async def run(self, arguments: dict[str, Any]) -> ToolResult:
        try:
            values = self.model.model_validate(arguments).model_dump()
        except ValidationError as exc:
            problems = describe_errors(exc, "arguments")
            raise ToolError(f"Invalid arguments for {self.name}: {problems}.") from None
        rows = min(self.query.max_rows or self.limits.max_rows, self.limits.max_rows)
        timeout = min(
            self.query.timeout_s or self.limits.query_timeout_s, self.limits.query_timeout_s
        )
        return await self.answer(self.query.sql, values, rows, timeout, "json", current_context())
