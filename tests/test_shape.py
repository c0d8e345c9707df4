"""The shape of the code: small modules, short functions.

No module under servers/ (nor gateway.py) passes MAX_MODULE_LINES, and no function passes
MAX_FUNCTION_LINES, except the long factories named in LONG_FUNCTIONS at their length today.
Those entries may only shrink: when you shorten one, lower its entry to the new length (or drop
it once it fits); a change that lengthens it must split it instead.
"""

import ast
from collections.abc import Iterator
from pathlib import Path

from servers.settings import PROJECT_ROOT

MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 150
# "path:qualified name" -> lines today (decorators excluded, docstring and body included).
LONG_FUNCTIONS = {
    "servers/sql/server.py:build_server": 207,
}


def modules() -> list[Path]:
    return [*sorted((PROJECT_ROOT / "servers").rglob("*.py")), PROJECT_ROOT / "gateway.py"]


def function_lengths(source: str) -> Iterator[tuple[str, int]]:
    """(qualified name, lines) of every function and method in source, nested ones included."""

    def walk(node: ast.AST, prefix: str) -> Iterator[tuple[str, int]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                name = f"{prefix}{child.name}"
                yield name, child.end_lineno - child.lineno + 1
                yield from walk(child, f"{name}.")
            elif isinstance(child, ast.ClassDef):
                yield from walk(child, f"{prefix}{child.name}.")
            else:
                yield from walk(child, prefix)

    yield from walk(ast.parse(source), "")


def long_functions() -> dict[str, int]:
    found = {}
    for path in modules():
        where = path.relative_to(PROJECT_ROOT).as_posix()
        for name, lines in function_lengths(path.read_text()):
            if lines > MAX_FUNCTION_LINES:
                found[f"{where}:{name}"] = lines
    return found


def test_no_module_passes_the_line_limit():
    too_long = {
        path.relative_to(PROJECT_ROOT).as_posix(): lines
        for path in modules()
        if (lines := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert not too_long, f"split these modules (over {MAX_MODULE_LINES} lines): {too_long}"


def test_no_function_passes_the_line_limit_but_the_named_factories():
    found = long_functions()
    new = {name: lines for name, lines in found.items() if name not in LONG_FUNCTIONS}
    assert not new, f"split these functions (over {MAX_FUNCTION_LINES} lines): {new}"
    grown = {n: found[n] for n in LONG_FUNCTIONS if found.get(n, 0) > LONG_FUNCTIONS[n]}
    assert not grown, f"these long functions grew past their entry; split them: {grown}"


def test_the_named_exceptions_are_current_so_they_can_only_shrink():
    found = long_functions()
    stale = {
        name: found.get(name) for name, lines in LONG_FUNCTIONS.items() if found.get(name) != lines
    }
    assert not stale, (
        f"update LONG_FUNCTIONS to the lengths now (None: drop the entry, it fits): {stale}"
    )


def test_lengths_are_measured_for_nested_functions_and_methods():
    body = "\n".join(f"        x{i} = {i}" for i in range(200))
    source = f"def factory():\n    class Tool:\n      def run(self):\n{body}\n    return Tool\n"
    lengths = dict(function_lengths(source))
    assert lengths["factory.Tool.run"] == 201
    assert lengths["factory"] == 204
