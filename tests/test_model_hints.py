"""Errors that teach: SQL slips from other dialects get one line with the DuckDB way, and wrong
tool arguments get one line naming the expected arguments, through the gateway in both eras."""

import pytest
from fastmcp.exceptions import ToolError

# (slip as a model writes it, a fragment the hint must contain)
SLIPS = [
    ("SELECT TOP 5 carrier FROM airlines", "LIMIT n"),
    ("SELECT TOP 10 PERCENT carrier FROM airlines", "LIMIT n"),
    ("SELECT DATEPART(year, time_hour) FROM flights LIMIT 1", "date_part('year', d)"),
    ("SELECT DATEDIFF(day, time_hour, time_hour) FROM flights LIMIT 1", "date_diff('day'"),
    ("SELECT DATEADD(day, 1, time_hour) FROM flights LIMIT 1", "INTERVAL 3 DAY"),
    ("SELECT DATETRUNC(month, time_hour) FROM flights LIMIT 1", "date_trunc('month', d)"),
    ("SELECT DATENAME(month, time_hour) FROM flights LIMIT 1", "monthname(d)"),
    ("SELECT EOMONTH(time_hour) FROM flights LIMIT 1", "last_day(d)"),
    ("SELECT GETDATE()", "current_timestamp"),
    ("SELECT ISNULL(dep_delay, 0) FROM flights LIMIT 1", "coalesce(x, fallback)"),
    ("SELECT CHARINDEX('a', name) FROM airlines", "strpos(string, substring)"),
    ("SELECT CONVERT(INT, dep_delay) FROM flights LIMIT 1", "CAST(x AS INTEGER)"),
    ("SELECT IIF(dep_delay > 0, 1, 0) FROM flights LIMIT 1", "CASE WHEN"),
    ("SELECT ISNUMERIC(tailnum) FROM flights LIMIT 1", "try_cast"),
    ("SELECT FORMAT(time_hour, 'yyyy-MM') FROM flights LIMIT 1", "strftime(d, '%Y-%m')"),
    ("SELECT [carrier name] FROM airlines", 'double quotes: "a name"'),
    ("SELECT * FROM airlines a CROSS APPLY (SELECT 1) b", "LATERAL"),
    ("SELECT * FROM airlines WITH (NOLOCK)", "Remove WITH (NOLOCK)"),
    ("SELECT * FROM airlines WHERE carrier = @c", "no @variables"),
    ("SELECT carrier + ' ' + name FROM airlines", "||"),
    ("SELECT carrier FROM airlines LIMIT 2, 3", "LIMIT count OFFSET skip"),
    ("SELECT DATE_FORMAT(time_hour, '%Y-%m') FROM flights LIMIT 1", "strftime"),
    ("SELECT STR_TO_DATE('2013-01-01', '%Y-%m-%d')", "strptime"),
    ("SELECT CURDATE()", "current_date"),
    ("SELECT SUBSTRING_INDEX(name, ' ', 1) FROM airlines", "split_part"),
    ("SELECT carrier FROM airlines WHERE name REGEXP 'Air'", "regexp_matches"),
    ("SELECT UNIX_TIMESTAMP(time_hour) FROM flights LIMIT 1", "epoch(ts)"),
    ("SELECT FROM_UNIXTIME(0)", "to_timestamp(seconds)"),
    ("SELECT DATE_SUB(time_hour, INTERVAL 1 DAY) FROM flights LIMIT 1", "d - INTERVAL 1 DAY"),
    ("SELECT NVL(dep_delay, 0) FROM flights LIMIT 1", "coalesce"),
    ("SELECT NVL2(dep_delay, 1, 0) FROM flights LIMIT 1", "IS NOT NULL THEN"),
    ("SELECT SYSDATE FROM flights LIMIT 1", "current_date"),
    ("SELECT carrier FROM airlines WHERE ROWNUM <= 5", "row_number()"),
    ("SELECT 1 FROM DUAL", "needs no FROM"),
    ("SELECT TO_CHAR(time_hour, 'YYYY-MM') FROM flights LIMIT 1", "strftime"),
    ("SELECT TO_DATE('2013-01-01', 'YYYY-MM-DD')", "CAST(s AS DATE)"),
    ("SELECT TO_NUMBER('12')", "CAST(s AS DOUBLE)"),
    ("SELECT DECODE(carrier, 'AA', 1, 0) FROM airlines", "CASE x WHEN"),
    ("SELECT TRUNC(time_hour) FROM flights LIMIT 1", "date_trunc('day', d)"),
    ("SELECT ADD_MONTHS(time_hour, 1) FROM flights LIMIT 1", "INTERVAL 1 MONTH"),
    ("SELECT MONTHS_BETWEEN(time_hour, time_hour) FROM flights LIMIT 1", "date_diff('month'"),
    ("SELECT carrier FROM airlines MINUS SELECT carrier FROM flights", "EXCEPT"),
    ('SELECT * FROM airlines WHERE carrier = "AA"', "single quotes: 'AA'"),
    ("SELECT CURRENT_TIMESTAMP()", "no parentheses"),
]


async def failure(client, sql: str) -> str:
    with pytest.raises(ToolError) as raised:
        await client.call_tool("sql_query", {"sql": sql})
    return str(raised.value)


async def test_each_dialect_slip_gets_one_line_with_the_duckdb_way(client):
    missed = {}
    for sql, hint in SLIPS:
        message = await failure(client, sql)
        *_, last = message.splitlines()
        if not (last.startswith("DuckDB way: ") and hint in last):
            missed[sql] = message
        elif "Candidate functions" in message or len(message) >= 600:
            missed[sql] = f"too long: {message}"
    assert not missed


def test_the_battery_has_at_least_25_slips():
    assert len(SLIPS) >= 25


async def test_an_error_that_is_no_slip_gets_no_hint_and_keeps_duckdbs_own_suggestion(client):
    message = await failure(client, "SELECT carier FROM airlines")
    assert "DuckDB way" not in message and "carrier" in message


async def test_a_slip_inside_a_string_literal_gets_no_hint(client):
    message = await failure(client, "SELECT 'SELECT TOP 5 NVL(x)' AS s FROM nowhere")
    assert "DuckDB way" not in message


async def test_explain_and_chart_teach_the_same_way(client):
    for tool in ("sql_explain", "sql_chart"):
        with pytest.raises(ToolError, match="DuckDB way: .*LIMIT n"):
            await client.call_tool(tool, {"sql": "SELECT TOP 5 carrier FROM airlines"})


@pytest.mark.parametrize(
    ("tool", "arguments", "said"),
    [
        ("sql_query", {"query": "SELECT 1"}, "sql is missing; query is not an argument"),
        ("sql_describe_table", {"table": 5}, "table: Input should be a valid string"),
        ("sql_read_result", {"id": "x"}, "result_id is missing"),
        ("pipelines_get_run", {}, "run_id is missing"),
    ],
)
async def test_wrong_arguments_name_the_expected_ones_in_one_line(client, tool, arguments, said):
    with pytest.raises(ToolError) as raised:
        await client.call_tool(tool, arguments)
    message = str(raised.value)
    assert said in message and "Expected: " in message
    assert "\n" not in message and "http" not in message and "pydantic" not in message


async def test_expected_arguments_show_types_and_which_are_required(client):
    with pytest.raises(ToolError) as raised:
        await client.call_tool("sql_query", {})
    assert 'sql (string, required), max_rows (integer), format ("json"|"markdown")' in str(
        raised.value
    )
