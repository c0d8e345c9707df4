"""Heavy libraries (pandas, pyarrow, matplotlib, Hamilton) imported when first used, not when a
module that mentions them is imported: `gateway.py --help` and an idle gateway never pay for
them. ``pa = lazy_module("pyarrow")`` reads like ``import pyarrow as pa``; the first attribute
lookup imports the module (once; Python caches it in sys.modules)."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any


class LazyModule:
    """Stands in for a module until an attribute is read, then imports the module.
    Leaves sys.modules alone until then, so ``"pandas" in sys.modules`` stays honest."""

    def __init__(self, name: str) -> None:
        self._name = name

    def _module(self) -> ModuleType:
        return importlib.import_module(self._name)

    def __getattr__(self, attribute: str) -> Any:
        return getattr(self._module(), attribute)

    def __repr__(self) -> str:
        return f"<lazy module {self._name!r}>"


def lazy_module(name: str) -> Any:
    """A stand-in for ``import name``: the module loads on first attribute access."""
    return LazyModule(name)
