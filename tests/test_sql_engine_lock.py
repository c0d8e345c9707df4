"""The engine itself refuses to change its configuration, whatever statement reaches it: these
run below the statement gate (which refuses SET first), so removing the engine's
lock_configuration makes them fail."""

import pytest

from servers.settings import GatewaySettings
from servers.sql.engine import Engine, QueryFailed
from servers.sql.gate import RefusedStatement

CHANGES = [
    "SET memory_limit = '100GB'",
    "SET threads = 64",
    "SET enable_external_access = true",
    "SET lock_configuration = false",
    "SET max_execution_time = 0",
    "SET GLOBAL allowed_directories = ['/']",
    "RESET memory_limit",
    "PRAGMA threads = 64",
]


@pytest.fixture(scope="module")
def engine(data_dir):
    engine = Engine.open(GatewaySettings.load(data_dir=data_dir, mcpServers={}))
    yield engine
    engine.close()


@pytest.mark.parametrize("statement", CHANGES)
async def test_a_configuration_change_is_refused_by_the_engine_without_the_gate(engine, statement):
    before = await engine.run(lambda c: c.execute("SELECT current_setting('threads')").fetchone())
    with pytest.raises(QueryFailed, match="(?i)configuration"):
        await engine.run(lambda c: c.execute(statement).fetchall())
    after = await engine.run(lambda c: c.execute("SELECT current_setting('threads')").fetchone())
    assert after == before


async def test_reading_a_file_outside_the_allowed_directories_is_refused_by_the_engine(engine):
    with pytest.raises(RefusedStatement, match="directories the server allows"):
        await engine.run(lambda c: c.execute("SELECT * FROM read_text('/etc/passwd')").fetchall())
