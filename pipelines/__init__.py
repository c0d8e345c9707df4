"""The pipeline registry: every Hamilton dataflow the gateway serves, named explicitly.

A pipeline is one module of plain typed functions (function name = node, parameters =
dependencies, ``_helpers`` hidden, module docstring = description) with an ``Inputs`` pydantic
model for its user inputs. Data comes only through the injected ``db`` cursor. Each entry names
the outputs callers may request and how the pipeline runs (engine, caching, limits); settings
may override the run options per pipeline, an LLM never can. Everything is built and validated
at start-up.
"""

from dataclasses import dataclass
from types import ModuleType

from servers.settings import EngineName


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


def registry() -> dict[str, Pipeline]:
    """The served pipelines by name (imported here, so a broken module fails at start-up)."""
    from pipelines import carrier_delays, route_profile, weather_delays

    modules = (carrier_delays, route_profile, weather_delays)
    return {m.__name__.rsplit(".", 1)[-1]: Pipeline(m, tuple(m.OUTPUTS)) for m in modules}
