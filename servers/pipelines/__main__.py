"""Run the pipelines server alone: ``uv run python -m servers.pipelines`` (stdio) or with
``--transport http --port N``."""

from servers.pipelines.server import create_server
from servers.standalone import run_alone

run_alone(create_server)
