"""Starting fast and sure, with real processes: the CLI commands load no heavy library, a
served gateway keeps them out until used, start failures are one clean line, `check` names
every problem, the banner, `GET /` and serverInfo say what runs, and `--workers 2` beside CPU
hogs loses no worker."""

import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from fastmcp import Client
from fastmcp.client.transports import StdioTransport

from servers.gateway.startup import project_identity
from servers.settings import PROJECT_ROOT
from tests.conftest import free_port

pytestmark = pytest.mark.slow

HEAVY = ("hamilton", "dask", "matplotlib", "pandas", "pyarrow", "numpy")
# Native libraries of the heavy packages, as they appear in /proc/<pid>/maps once imported.
HEAVY_NATIVE = ("pandas/_libs", "pyarrow/lib", "matplotlib/_", "numpy/_core", "numpy/core")
NAME, VERSION = project_identity()

# Runs gateway.py's main with the given arguments, then reports which heavy modules it loaded.
PROBE = """
import json, runpy, sys
report = sys.argv[1]
sys.argv = ["gateway.py", *sys.argv[2:]]
code = 0
try:
    runpy.run_path("gateway.py", run_name="__main__")
except SystemExit as exit:
    code = exit.code
with open(report, "w") as out:
    json.dump({"code": code, "loaded": [m for m in HEAVY if m in sys.modules]}, out)
"""


def run(
    args: list[str], env: dict[str, str], timeout_s: float = 300
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args],
        cwd=PROJECT_ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


@pytest.fixture
def env(data_dir: Path) -> dict[str, str]:
    return {"GATEWAY_DATA_DIR": str(data_dir)}


@pytest.mark.parametrize(
    "command",
    [["--help"], ["clients"], ["token", "--client", "alice"], ["check"]],
    ids=["help", "clients", "token", "check"],
)
def test_cli_commands_load_no_heavy_library(command, env, tmp_path):
    report = tmp_path / "report.json"
    done = run(["-c", PROBE.replace("HEAVY", repr(HEAVY)), str(report), *command], env)
    assert report.exists(), done.stderr[-2000:]
    outcome = json.loads(report.read_text())
    assert outcome["code"] in (0, None), done.stderr[-2000:]
    assert outcome["loaded"] == []


def test_help_lists_the_subcommands(env):
    done = run(["gateway.py", "--help"], env)
    assert done.returncode == 0
    for sub in ("token", "clients", "check"):
        assert re.search(rf"^\s+{sub}\s+\S", done.stdout, re.MULTILINE), done.stdout


def one_line_failure(done: subprocess.CompletedProcess) -> str:
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("gateway: cannot start: ")
    return lines[0]


@contextmanager
def holding_for_writing(database: Path) -> Iterator[None]:
    """Another process with a read-write DuckDB connection to database (it holds the lock)."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); "
            "print('open', flush=True); time.sleep(600)",
            str(database),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "open"
        yield
    finally:
        holder.kill()
        holder.wait()


def test_a_file_that_is_not_duckdb_is_one_clean_line(env, tmp_path):
    junk = tmp_path / "notes.duckdb"
    junk.write_text("these are notes, not a database\n" * 100)
    env["GATEWAY_SQL__DATABASE"] = str(junk)
    line = one_line_failure(run(["gateway.py", "--port", str(free_port())], env))
    assert "not a DuckDB database" in line


@pytest.mark.parametrize("state", ["missing", "locked"])
def test_a_missing_or_locked_database_starts_the_gateway_and_the_banner_says_why(
    env, tmp_path, state
):
    """The file is the user's: a writer may hold it, or create it later (issue 16). The
    gateway serves everything else and says in one line why sql waits."""
    database = tmp_path / "busy.duckdb"
    env["GATEWAY_SQL__DATABASE"] = str(database)
    port, log = free_port(), tmp_path / "gateway.log"
    holding = contextlib.nullcontext()
    if state == "locked":
        subprocess.run(
            [sys.executable, "-c", f"import duckdb; duckdb.connect({str(database)!r}).close()"],
            check=True,
        )
        holding = holding_for_writing(database)
    with holding, gateway_process(["--port", str(port)], env, log) as process:
        deadline = time.monotonic() + 120
        while "database:" not in log.read_text() and time.monotonic() < deadline:
            assert process.poll() is None, log.read_text()[-3000:]
            time.sleep(0.2)
        line = next(x for x in log.read_text().splitlines() if "database:" in x)
        assert "unavailable now" in line and str(tmp_path) not in line
        assert "Traceback" not in log.read_text()


def test_an_unreadable_config_file_is_one_clean_line(env, tmp_path):
    line = one_line_failure(run(["gateway.py", "--config", str(tmp_path)], env))
    assert str(tmp_path) in line


def test_a_port_in_use_is_one_clean_line(env):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = one_line_failure(run(["gateway.py", "--port", str(port)], env))
    assert f"cannot listen on 127.0.0.1:{port}" in line


def test_check_passes_on_the_default_setup_and_masks_secrets(env):
    env["GATEWAY_AUTH__TOKEN"] = "very-secret-token-value-0123456789"
    done = run(["gateway.py", "check"], env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "check: OK" in done.stderr
    assert re.search(r"backend demo: up, [1-9]\d* tools", done.stderr), done.stderr
    effective = json.loads(done.stdout)
    assert effective["auth"]["token"] == "**********"
    assert "very-secret-token-value-0123456789" not in done.stdout + done.stderr


def test_check_names_every_problem_on_its_own_line(env, tmp_path):
    config = tmp_path / "gateway.json"
    config.write_text(
        json.dumps(
            {
                "sql": {"database": str(tmp_path / "missing.duckdb")},
                "mcpServers": {"typo": {"command": "npx-typo-no-such-command", "args": []}},
            }
        )
    )
    done = run(["gateway.py", "check", "--config", str(config)], env)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    problems = [line for line in done.stderr.splitlines() if line.startswith("problem: ")]
    assert any(p.startswith("problem: database: ") and "does not exist" in p for p in problems)
    assert any(p.startswith("problem: backend 'typo': down") for p in problems), done.stderr
    assert "check: 2 problem(s)" in done.stderr


@contextmanager
def gateway_process(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen]:
    with open(log, "w") as sink:
        process = subprocess.Popen(
            [sys.executable, "gateway.py", *args],
            cwd=PROJECT_ROOT,
            env={**os.environ, **env},
            stdout=subprocess.DEVNULL,
            stderr=sink,
        )
        try:
            yield process
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def wait_ready(process: subprocess.Popen, base: str, log: Path, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()[-3000:]
        try:
            if httpx.get(f"{base}/ready", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{base}/ready not ready after {timeout_s} s: {log.read_text()[-3000:]}")


def loaded_native(pid: int) -> list[str]:
    maps = Path(f"/proc/{pid}/maps").read_text()
    return [name for name in HEAVY_NATIVE if name in maps]


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_http_banner_home_page_and_server_info_say_what_runs(env, tmp_path, mode):
    port, log = free_port(), tmp_path / "gateway.log"
    env["GATEWAY_AUTH__TOKEN"] = "banner-token-value-0123456789abcdef"
    base = f"http://127.0.0.1:{port}"
    with gateway_process(["--port", str(port)], env, log) as process:
        wait_ready(process, base, log)
        banner = log.read_text()
        assert f"{NAME} {VERSION}" in banner
        assert f"endpoint:   {base}/mcp" in banner
        assert re.search(r"database:   nycflights13\.duckdb \(\d+ tables", banner), banner
        assert re.search(r"sql_\* \(\d+ tools\), pipelines_\* \(\d+ tools\)", banner), banner
        assert "demo_* (starting)" in banner
        assert "auth:       bearer (static token)" in banner
        assert f"claude mcp add --transport http data-gateway {base}/mcp" in banner
        assert "banner-token-value-0123456789abcdef" not in banner
        home = httpx.get(f"{base}/", timeout=30)
        assert home.status_code == 200 and "text/html" in home.headers["content-type"]
        assert "/mcp" in home.text and "bearer token" in home.text
        assert (
            "banner-token-value-0123456789abcdef" not in home.text
            and str(PROJECT_ROOT) not in home.text
        )
        assert httpx.post(f"{base}/mcp", json={}, timeout=30).status_code == 401
        headers = {"Authorization": "Bearer banner-token-value-0123456789abcdef"}
        async with Client(f"{base}/mcp", auth=headers["Authorization"][7:], mode=mode) as client:
            assert (client.server_info.name, client.server_info.version) == (NAME, VERSION)
            assert any(t.name.startswith("sql_") for t in await client.list_tools())
        # Idle and listed: none of the heavy native libraries is in the process.
        assert loaded_native(process.pid) == []


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_stdio_gateway_lists_every_namespace_without_loading_heavy_libraries(env, mode):
    transport = StdioTransport(
        command=sys.executable,
        args=["gateway.py", "--transport", "stdio"],
        cwd=str(PROJECT_ROOT),
        env={**os.environ, **env},
    )
    async with Client(transport, mode=mode, init_timeout=120) as client:
        assert (client.server_info.name, client.server_info.version) == (NAME, VERSION)
        deadline = time.monotonic() + 90
        while True:  # the demo backend is a cold stdio start beside ours: wait for its tools
            names = {t.name.split("_", 1)[0] for t in await client.list_tools()}
            if {"sql", "pipelines", "demo"} <= names or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert {"sql", "pipelines", "demo"} <= names
        described = await client.call_tool("pipelines_describe_pipeline", {"name": "route_profile"})
        assert "flowchart" in described.structured_content["mermaid"]
        pid = [p for p in _children(os.getpid()) if _is_gateway(p)]
        assert len(pid) == 1
        assert loaded_native(pid[0]) == []


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def _is_gateway(pid: int) -> bool:
    try:
        return b"gateway.py" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


@contextmanager
def cpu_hogs(count: int) -> Iterator[None]:
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        yield
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()


def test_two_workers_beside_cpu_hogs_are_never_killed_for_being_slow(env, tmp_path):
    port, log = free_port(), tmp_path / "workers.log"
    base = f"http://127.0.0.1:{port}"
    config = tmp_path / "no-backends.json"
    config.write_text('{"mcpServers": {}}')  # the workers alone; no demo backend per worker
    args = ["--port", str(port), "--workers", "2", "--config", str(config)]
    with cpu_hogs(2), gateway_process(args, env, log) as process:
        wait_ready(process, base, log, timeout_s=240)
        # Keep the load on a while: a worker the supervisor gave up on would be replaced now.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert httpx.get(f"{base}/ready", timeout=30).status_code == 200
            time.sleep(1)
        text = log.read_text()
    assert text.count("Started server process") == 2, text[-3000:]
    assert not re.search(r"died|not ready in time|failed to start", text), text[-3000:]
