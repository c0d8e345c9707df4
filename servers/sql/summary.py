"""Summaries of truncated results written by the client's own LLM (MCP sampling).

On 2025-11-25 sessions the server asks the client directly (server-initiated sampling). On the
2026-07-28 protocol there is no back-channel: the tool returns an input-required result carrying
the sampling request, the client answers it, and the tool runs again with the answer. A client
without sampling support gets the result with a note saying why there is no summary.
"""

import json
from typing import TypeVar

from fastmcp import Context
from mcp.types import (
    ClientCapabilities,
    CreateMessageRequest,
    CreateMessageRequestParams,
    InputRequiredResult,
    SamplingCapability,
    SamplingMessage,
    TextContent,
)

from servers.conventions import stateless_era
from servers.results import Rows

R = TypeVar("R", bound=Rows)
SUMMARY_KEY = "summary"
MAX_SAMPLE_BYTES = 20_000
MAX_TOKENS = 400
SUMMARY_NOTE = "Summary written by the client's model."


def supports_sampling(ctx: Context) -> bool:
    try:
        return ctx.session.check_client_capability(
            ClientCapabilities(sampling=SamplingCapability())
        )
    except RuntimeError:  # no session (a direct, in-process call)
        return False


def answered_summary(ctx: Context) -> str | None:
    """The summary the client sent back in this round, if this is the answering round."""
    responses = ctx.input_responses or {}
    answer = responses.get(SUMMARY_KEY)
    content = getattr(answer, "content", None)
    return getattr(content, "text", None)


def sampling_request(sql: str, result: Rows) -> CreateMessageRequest:
    return CreateMessageRequest(
        method="sampling/createMessage",
        params=CreateMessageRequestParams(
            messages=[
                SamplingMessage(
                    role="user", content=TextContent(type="text", text=_prompt(sql, result))
                )
            ],
            system_prompt="You summarise SQL query results for a data analyst, briefly, exactly.",
            max_tokens=MAX_TOKENS,
        ),
    )


async def with_summary(ctx: Context, sql: str, result: R) -> R | InputRequiredResult:
    """result with a summary (or a note why there is none), or the request the client answers.

    On 2026-07-28 the tool runs twice: the first round returns the sampling request, the second
    finds the client's answer in ``ctx.input_responses``.
    """
    answered = answered_summary(ctx)
    if answered is not None:
        return result.model_copy(update={"summary": answered, "summary_note": SUMMARY_NOTE})
    if not supports_sampling(ctx):
        note = (
            "No summary: this client does not support sampling. Read the rows shown, or page "
            "through the result."
        )
        return result.model_copy(update={"summary_note": note})
    request = sampling_request(sql, result)
    if stateless_era(ctx.request_context.protocol_version):
        return InputRequiredResult(
            result_type="input_required", input_requests={SUMMARY_KEY: request}
        )
    reply = await ctx.session.create_message(
        request.params.messages,
        max_tokens=request.params.max_tokens,
        system_prompt=request.params.system_prompt,
        related_request_id=ctx.request_id,
    )
    summary = getattr(reply.content, "text", None)
    return result.model_copy(update={"summary": summary, "summary_note": SUMMARY_NOTE})


def _prompt(sql: str, result: Rows) -> str:
    rows: list = []
    size = 0
    for row in result.rows:
        size += len(json.dumps(row, default=str))
        if size > MAX_SAMPLE_BYTES:
            break
        rows.append(row)
    columns = ", ".join(f"{c.name} ({c.type})" for c in result.columns)
    cut = (
        f" The result was cut at {result.row_count} rows ({result.truncated_reason})."
        if result.truncated
        else ""
    )
    return (
        f"Summarise in at most five sentences what this query result shows.{cut}\n\n"
        f"SQL: {sql}\nColumns: {columns}\n"
        f"First {len(rows)} rows (JSON):\n{json.dumps(rows, default=str)}"
    )
