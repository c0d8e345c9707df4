"""Result shaping shared by the sql and pipelines servers: JSON-safe values, row and byte caps.

Every value is turned into plain JSON deterministically: integers (HUGEINT included) are numbers
within JavaScript's safe range (±2^53) and strings beyond it, DECIMALs with a fraction are exact
strings (no silent precision loss), dates and times ISO 8601 (with
the offset when there is a time zone), intervals ISO 8601 durations, UUIDs strings, BLOBs base64,
NaN and infinities the strings "NaN", "Infinity" and "-Infinity", LISTs and STRUCTs JSON arrays
and objects, and MAPs arrays of [key, value] pairs (keys need not be strings).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import math
import uuid
from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, Field

_SAFE_INT = 2**53


class Column(BaseModel):
    name: str
    type: str = Field(description="DuckDB type of the column.")


class Rows(BaseModel):
    """A table-shaped result, capped."""

    columns: list[Column]
    rows: list[list[Any]] = Field(description="Row values in column order, JSON-safe.")
    row_count: int = Field(description="Rows returned here.")
    truncated: bool = Field(description="True when a cap cut the result short.")
    truncated_reason: Literal["rows", "bytes", "tokens"] | None = None
    hint: str | None = Field(None, description="What to do when the result was cut.")


def relation_columns(relation: Any) -> list[Column]:
    """The columns of a DuckDB relation, with their DuckDB types."""
    return [
        Column(name=name, type=str(kind))
        for name, kind in zip(relation.columns, relation.types, strict=True)
    ]


def json_value(value: Any) -> Any:
    """A JSON-safe, deterministic rendering of one DuckDB/pandas value."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return value if -_SAFE_INT < value < _SAFE_INT else str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return value
    if isinstance(value, Decimal):
        # HUGEINT and integral DECIMALs within the safe range are numbers; others exact strings.
        if value == value.to_integral_value() and -_SAFE_INT < value < _SAFE_INT:
            return int(value)
        return str(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return iso_duration(0, value.days, value.seconds + value.microseconds / 1e6)
    if hasattr(value, "months") and hasattr(value, "nanoseconds"):  # Arrow month_day_nano
        return iso_duration(value.months, value.days, value.nanoseconds / 1e9)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, dict):
        return {str(json_value(k)): json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_value(v) for v in value]
    if hasattr(value, "item"):  # numpy scalars
        return json_value(value.item())
    if hasattr(value, "isoformat"):  # pandas Timestamp and friends
        return value.isoformat()
    return str(value)


def iso_duration(months: int, days: int, seconds: float) -> str:
    """An ISO 8601 duration such as P1M2DT3.5S; each part keeps its own sign, zero is PT0S."""
    years, months = divmod(months, 12) if months >= 0 else (0, months)
    date = "".join(f"{n}{unit}" for n, unit in ((years, "Y"), (months, "M"), (days, "D")) if n)
    time_part = f"T{seconds:.9f}".rstrip("0").rstrip(".") + "S" if seconds else ""
    return "P" + (date + time_part or "T0S")


def _encoded(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, default=str).encode()


BYTES_PER_TOKEN = 4  # the estimate of tokens used throughout: bytes of JSON / 4


def estimated_tokens(value: Any) -> int:
    """Tokens a model would read for value as compact JSON, estimated as bytes / 4."""
    return -(-len(_encoded(value)) // BYTES_PER_TOKEN)


def cap_rows(
    columns: Sequence[Column],
    rows: Iterable[Sequence[Any]],
    max_rows: int,
    max_bytes: int,
    max_tokens: int | None = None,
) -> Rows:
    """Take rows until max_rows, max_bytes of serialised JSON, or max_tokens estimated tokens
    (bytes / 4) of it; say which cap cut them.

    ``rows`` may hold more than max_rows (callers fetch max_rows + 1 to learn whether there is
    more); it is consumed lazily.
    """
    kept: list[list[Any]] = []
    reason: Literal["rows", "bytes", "tokens"] | None = None
    size_cap, size_reason = max_bytes, "bytes"
    if max_tokens is not None and max_tokens * BYTES_PER_TOKEN < max_bytes:
        size_cap, size_reason = max_tokens * BYTES_PER_TOKEN, "tokens"
    for row in rows:
        if len(kept) == max_rows:
            reason = "rows"
            break
        kept.append([json_value(v) for v in row])
    # The page's size counts each row's JSON plus one byte. Encoding the whole page at once is
    # never smaller than that (", " between rows), so when it fits, every row does: the common
    # case costs one encoding instead of one per row. Otherwise find the row that passes the cap.
    if len(_encoded(kept)) > size_cap:
        size = 2
        for index, values in enumerate(kept):
            size += len(_encoded(values)) + 1
            if size > size_cap:
                del kept[index:]
                reason = size_reason
                break
    hint = None
    if reason == "rows":
        hint = (
            f"Only the first {max_rows} rows are shown. Aggregate (GROUP BY, COUNT, AVG), "
            "filter with WHERE, or add ORDER BY ... LIMIT to see the rows that matter."
        )
    elif reason == "bytes":
        hint = (
            f"The result passed {max_bytes} bytes after {len(kept)} rows. Select fewer or "
            "narrower columns, or aggregate."
        )
    elif reason == "tokens":
        hint = (
            f"Only the first {len(kept)} rows are shown (about {max_tokens} tokens). Select "
            "fewer columns, aggregate (GROUP BY), or filter with WHERE."
        )
    return Rows(
        columns=list(columns),
        rows=kept,
        row_count=len(kept),
        truncated=reason is not None,
        truncated_reason=reason,
        hint=hint,
    )


def markdown_table(result: Rows) -> str:
    """The rows as a GitHub-flavoured markdown table, with a line saying when they were cut."""
    if not result.columns:
        return "(no columns)"
    header = "| " + " | ".join(c.name for c in result.columns) + " |"
    rule = "|" + "|".join("---" for _ in result.columns) + "|"
    lines = [header, rule]
    for row in result.rows:
        cells = [_cell(v) for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    if result.truncated:
        lines.append(f"\n_{result.row_count} rows shown; truncated by {result.truncated_reason}._")
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "NULL"
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text.replace("|", "\\|").replace("\n", " ")
