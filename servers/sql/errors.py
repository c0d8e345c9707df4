"""Database failures as a client reads them: every refusal or failure of a database call
becomes one actionable ToolError, worded the same for every sql tool."""

from fastmcp.exceptions import ToolError

from servers.sql.engine import QueryFailed, QueryTimeout
from servers.sql.gate import RefusedStatement
from servers.sql.hints import teach


async def guarded(awaitable, sql: str | None = None):
    """Await a database call, turning every refusal or failure into an actionable ToolError;
    with the statement, a slip from another SQL dialect gets the DuckDB way (hints.teach)."""
    try:
        return await awaitable
    except RefusedStatement as exc:
        raise ToolError(teach(str(exc), sql) if sql else str(exc)) from None
    except QueryTimeout as exc:
        raise ToolError(
            f"{exc} Narrow it with WHERE, aggregate, or add LIMIT; check its plan with sql_explain."
        ) from None
    except QueryFailed as exc:
        raise ToolError(teach(str(exc), sql) if sql else str(exc)) from None
