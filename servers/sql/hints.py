"""Dialect hints: when a statement fails on a habit from another SQL dialect, one more line says
the DuckDB way.

Models trained on T-SQL, MySQL, Oracle, Snowflake or BigQuery write `SELECT TOP 5`, `DATEPART(year,
d)`, `LIMIT 10, 20` or `WHERE carrier = "AA"`; DuckDB answers with a bare parser error, a
signature dump or a misleading "did you mean". ``teach`` keeps DuckDB's first line, drops the
candidate-signature dump when a hint explains the slip better, and adds the hint. Rules match the
statement with its string literals blanked out, so text inside quotes never triggers one; they
only run on a statement that already failed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_LITERAL = re.compile(r"'(?:[^']|'')*'")


@dataclass(frozen=True)
class Rule:
    pattern: re.Pattern[str]  # in the statement, string literals blanked
    hint: str
    error: re.Pattern[str]  # in DuckDB's message: the slip is what failed


def _rule(pattern: str, error: str, hint: str) -> Rule:
    flags = re.IGNORECASE | re.DOTALL
    return Rule(re.compile(pattern, flags), hint, re.compile(error, flags))


def _fn(names: str, hint: str) -> Rule:
    """A function of another dialect, when DuckDB's error names it (names: a|b)."""
    return _rule(rf"\b(?:{names})\s*\(", rf"\b(?:{names})\b", hint)


SYNTAX = r"syntax error"

RULES: tuple[Rule, ...] = (
    # T-SQL
    _rule(r"\bselect\s+(?:distinct\s+)?top\s*\(?\s*\d+", SYNTAX,
          "DuckDB has no TOP: end the query with ORDER BY ... LIMIT n."),
    _fn("datepart", "Quote the part: date_part('year', d) or extract(year FROM d)."),
    _fn("datediff", "Quote the part: date_diff('day', start, end), or end - start."),
    _fn("dateadd", "Add an interval: d + INTERVAL 3 DAY."),
    _fn("datetrunc", "Use date_trunc('month', d), the part quoted."),
    _fn("datename", "Use monthname(d) or dayname(d), or strftime(d, '%B')."),
    _fn("eomonth", "Use last_day(d)."),
    _fn("getdate|getutcdate|sysdatetime", "Use current_timestamp or current_date (the sample "
        "data is from 2013)."),
    _fn("isnull", "Use coalesce(x, fallback); `x IS NULL` tests for NULL."),
    _fn("charindex", "Use strpos(string, substring) or position(sub IN string)."),
    _fn("convert", "Use CAST(x AS INTEGER) or x::INTEGER."),
    _fn("iif", "Use CASE WHEN cond THEN a ELSE b END, or if(cond, a, b)."),
    _fn("isnumeric", "Use try_cast(x AS DOUBLE) IS NOT NULL."),
    _fn("format", "Dates: strftime(d, '%Y-%m'); numbers: printf('%.2f', x)."),
    _fn("string_split", "Use unnest(string_split(s, ',')) in the SELECT list."),
    _fn("scope_identity", "The database is read-only: there is no identity to read."),
    _rule(r"\[[^\]\[]*\]", SYNTAX,
          'Square brackets make lists in DuckDB; quote names with double quotes: "a name".'),
    _rule(r"\b(?:cross|outer)\s+apply\b", SYNTAX,
          "Use a LATERAL join: FROM t, LATERAL (SELECT ...)."),
    _rule(r"\bwith\s*\(\s*nolock\s*\)", SYNTAX,
          "Remove WITH (NOLOCK): the database is read-only and reads never block."),
    _rule(r"@\w+", r"Referenced column|syntax error|parameter",
          "DuckDB has no @variables: write the value into the query."),
    _rule(r"'\s*\+|\+\s*'", r"\+\(", "Concatenate strings with || or concat(a, b)."),
    # MySQL
    _rule(r"\blimit\s+\d+\s*,\s*\d+", SYNTAX,
          "Write LIMIT count OFFSET skip (MySQL's LIMIT skip, count)."),
    _fn("date_format", "Use strftime(d, '%Y-%m') (the same % codes)."),
    _fn("str_to_date", "Use strptime(s, '%Y-%m-%d') (the same % codes)."),
    _fn("curdate", "Use current_date."),
    _fn("substring_index", "Use split_part(s, ' ', 1)."),
    _rule(r"\b(?:regexp|rlike)\b", SYNTAX, "Use regexp_matches(s, 'pattern')."),
    _fn("unix_timestamp", "Use epoch(ts)."),
    _fn("from_unixtime", "Use to_timestamp(seconds)."),
    _fn("date_sub", "Subtract an interval: d - INTERVAL 1 DAY (DuckDB's date_sub counts parts "
        "between two dates)."),
    # Oracle
    _fn("nvl", "Use coalesce(x, fallback)."),
    _fn("nvl2", "Use CASE WHEN x IS NOT NULL THEN a ELSE b END."),
    _rule(r"\b(?:sysdate|systimestamp)\b", r"sysdate|systimestamp",
          "Use current_date or current_timestamp."),
    _rule(r"\brownum\b", r"rownum", "Use LIMIT n, or row_number() OVER (ORDER BY ...)."),
    _rule(r"\bfrom\s+dual\b", r"\bdual\b", "DuckDB needs no FROM: SELECT 1 + 1."),
    _fn("to_char", "Use strftime(d, '%Y-%m') (%Y year, %m month, %d day)."),
    _fn("to_date", "Use strptime(s, '%Y-%m-%d')::DATE, or CAST(s AS DATE) for ISO dates."),
    _fn("to_number", "Use CAST(s AS DOUBLE) or try_cast."),
    _fn("decode", "Use CASE x WHEN a THEN b ... ELSE c END."),
    _rule(r"\btrunc\s*\(", r"trunc\((?:TIMESTAMP|DATE)", "Dates: date_trunc('day', d)."),
    _fn("add_months", "Add an interval: d + INTERVAL 1 MONTH."),
    _fn("months_between", "Use date_diff('month', start, end)."),
    _rule(r"\bminus\b", SYNTAX, "Use EXCEPT."),
    # Any dialect
    _fn("current_timestamp|current_date", "current_timestamp and current_date take no "
        "parentheses."),
)  # fmt: skip

# A double-quoted word DuckDB took for a column: most often a string literal in another dialect.
_QUOTED = re.compile(r'"([^"]+)"')
_MISSING_COLUMN = re.compile(r'Referenced column "([^"]+)" not found')
_CANDIDATES = re.compile(r"\n\s*Candidate functions:.*", re.DOTALL)


def hints(sql: str, message: str) -> list[str]:
    """The hints for a statement that failed with message (at most two)."""
    bare = _LITERAL.sub("''", sql)
    found = [
        rule.hint for rule in RULES if rule.pattern.search(bare) and rule.error.search(message)
    ]
    missing = _MISSING_COLUMN.search(message)
    if missing and missing.group(1) in _QUOTED.findall(bare):
        found.insert(
            0,
            f"Double quotes name columns; write the string literal in single quotes: "
            f"'{missing.group(1)}'.",
        )
    return list(dict.fromkeys(found))[:2]


def teach(message: str, sql: str) -> str:
    """DuckDB's message with the DuckDB way added (one line a hint), signature dumps cut."""
    found = hints(sql, message)
    if not found:
        return message
    return _CANDIDATES.sub("", message).rstrip() + "\nDuckDB way: " + " ".join(found)
