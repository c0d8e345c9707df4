"""The pipeline registry: every Hamilton dataflow the gateway serves, named explicitly.

A pipeline is one module of plain typed functions (function name = node, parameters =
dependencies, ``_helpers`` hidden, module docstring = description) with an ``Inputs`` pydantic
model for its user inputs. Data comes only through the injected ``db`` cursor. Each entry names
the outputs callers may request; everything is built and validated at start-up.
"""

from dataclasses import dataclass
from types import ModuleType


@dataclass(frozen=True)
class Pipeline:
    module: ModuleType
    outputs: tuple[str, ...]


def registry() -> dict[str, Pipeline]:
    """The served pipelines by name (imported here, so a broken module fails at start-up)."""
    from pipelines import carrier_delays, route_profile, weather_delays

    modules = (carrier_delays, route_profile, weather_delays)
    return {m.__name__.rsplit(".", 1)[-1]: Pipeline(m, tuple(m.OUTPUTS)) for m in modules}
