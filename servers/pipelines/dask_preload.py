"""A Dask preload that lets a scheduler and its workers import the gateway's pipelines.

Hamilton sends each node to Dask as a reference to its function (``pipelines.carrier_delays``,
or ``pipelines.<file>`` for a module of your own folders): the scheduler unpickles the task
graph and the workers run it, so both must import the project's ``pipelines`` and ``servers``
packages and your ``GATEWAY_PIPELINES__PATHS`` folders. Start them with this file as their
preload, from the gateway's virtual environment, with the gateway's settings (the same
``GATEWAY_*`` environment, or ``GATEWAY_CONFIG`` naming its JSON config file)::

    /app/.venv/bin/dask scheduler --preload /app/servers/pipelines/dask_preload.py
    /app/.venv/bin/dask worker tcp://dask-scheduler:8786 \\
        --preload /app/servers/pipelines/dask_preload.py

Any working directory does. Dask imports a preload given as a file from that file (the
scheduler) or from a copy in the worker's scratch folder (a worker), so the project is found
beside this file or, for the copy, as the parent of the environment's folder (``.venv``). A
project or a folder that cannot be found stops the process with a line saying why.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

_HERE = Path("servers") / "pipelines" / "dask_preload.py"


def project_root() -> Path:
    """The checkout or image this preload belongs to (the folder holding ``servers/``)."""
    candidates = [Path(__file__).resolve().parents[2], Path(sys.prefix).resolve().parent]
    for root in candidates:
        if (root / _HERE).is_file() and (root / "pipelines" / "__init__.py").is_file():
            return root
    raise ImportError(
        "the gateway's project is not beside this preload nor above the Python environment "
        f"({sys.prefix}); start Dask with the gateway's own environment, e.g. "
        "<project>/.venv/bin/dask worker ... --preload <project>/servers/pipelines/dask_preload.py"
    )


def load_pipelines() -> list[str]:
    """Put the project on sys.path and the configured pipeline folders on the ``pipelines``
    package's search path, as the gateway does; return those folders."""
    root = str(project_root())
    if root not in sys.path:
        sys.path.insert(0, root)
    import pipelines
    from servers.settings import GatewaySettings

    config = os.environ.get("GATEWAY_CONFIG")
    settings = GatewaySettings.load(Path(config) if config else None)
    # Resolved as the gateway resolves them (servers.pipelines.registry.folder_pipelines).
    folders = [str(Path(folder).expanduser().resolve()) for folder in settings.pipelines.paths]
    missing = [folder for folder in folders if not Path(folder).is_dir()]
    if missing:
        raise ImportError(f"settings pipelines.paths names {missing[0]}, which is not a folder")
    pipelines.use_folders(folders)
    return folders


FOLDERS = load_pipelines()


def dask_setup(service) -> None:
    """Dask's preload hook: the work is done on import; say what was loaded."""
    import logging

    where = ", ".join(FOLDERS) or "none"
    logging.getLogger("distributed.preloading").info(
        "gateway pipelines importable for %s (your folders: %s)", type(service).__name__, where
    )
