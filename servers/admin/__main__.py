"""Run the admin server alone: ``uv run python -m servers.admin`` (stdio) or with
``--transport http --port N``."""

from servers.admin.server import create_server
from servers.standalone import run_alone

run_alone(create_server)
