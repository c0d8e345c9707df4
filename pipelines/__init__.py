"""The pipeline registry: every Hamilton dataflow the gateway serves, named explicitly.

A pipeline is one module of plain typed functions (function name = node, parameters =
dependencies, ``_helpers`` hidden, module docstring = description) with an ``Inputs`` pydantic
model for its user inputs. Data comes only through the injected ``db`` cursor. Each entry names
the outputs callers may request and how the pipeline runs (engine, caching, limits); settings
may override the run options per pipeline, an LLM never can. Everything is built and validated
at start-up.

Your own pipelines live in your own folders (``GATEWAY_PIPELINES__PATHS``): each module there is
imported as ``pipelines.<file name>``, so that run workers, task workers and Dask workers import
it by the same name. The folders are added to this package's search path from the settings, and
in child processes from ``FOLDERS_VARIABLE``, which the gateway sets for them.
"""

import json
import os
from dataclasses import dataclass
from types import ModuleType

from servers.settings import EngineName

FOLDERS_VARIABLE = "GATEWAY_PIPELINE_FOLDERS"
# The tables each sample pipeline reads: served only where they exist.
SAMPLE_TABLES = {
    "carrier_delays": ("flights", "airlines"),
    "route_profile": ("flights", "airlines", "airports"),
    "weather_delays": ("flights", "weather"),
}


@dataclass(frozen=True)
class Pipeline:
    """One served pipeline.

    ``engine``: ``local`` runs nodes one after another; ``threads`` runs independent nodes on
    a thread pool (Hamilton's FutureAdapter); ``dask`` runs each node as a Dask task, on a
    local cluster of worker processes or on the scheduler named in settings. ``cache`` turns
    on Hamilton's cache (keyed by the nodes' code and inputs). ``timeout_s`` and
    ``concurrency`` replace the settings' defaults for this pipeline.
    """

    module: ModuleType
    outputs: tuple[str, ...]
    engine: EngineName = "local"
    cache: bool = False
    timeout_s: float | None = None
    concurrency: int | None = None
    tables: tuple[str, ...] = ()


def use_folders(folders: list[str]) -> None:
    """Make modules in folders (and no other folders of earlier settings) importable as
    ``pipelines.<name>``, here and in child processes (run workers, local Dask workers)
    started from now on."""
    __path__[1:] = folders
    os.environ[FOLDERS_VARIABLE] = json.dumps(folders)


def registry() -> dict[str, Pipeline]:
    """The served pipelines by name (imported here, so a broken module fails at start-up)."""
    from pipelines import carrier_delays, route_profile, weather_delays

    modules = (carrier_delays, route_profile, weather_delays)
    return {
        name: Pipeline(m, tuple(m.OUTPUTS), tables=SAMPLE_TABLES[name])
        for m in modules
        for name in [m.__name__.rsplit(".", 1)[-1]]
    }


__path__.extend(f for f in json.loads(os.environ.get(FOLDERS_VARIABLE, "[]")) if f not in __path__)
