"""Run the sql server alone: ``uv run python -m servers.sql`` (stdio) or with
``--transport http --port N``."""

from servers.sql.server import create_server
from servers.standalone import run_alone

run_alone(create_server)
