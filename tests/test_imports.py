"""Every module imports on its own, first, in a fresh interpreter state: no import cycle hides
behind the order in which the gateway happens to import things."""

import subprocess
import sys

from servers.settings import PROJECT_ROOT

CHECK = """
import importlib, pkgutil, sys
import servers
names = ["gateway"] + sorted(
    m.name
    for m in pkgutil.walk_packages(servers.__path__, "servers.")
    if not m.name.endswith("__main__")
)
for name in names:
    for loaded in [m for m in sys.modules if m == "gateway" or m.startswith("servers.")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except ImportError as exc:
        print(f"{name}: {exc}")
"""


def test_every_module_imports_first_without_a_cycle():
    done = subprocess.run(
        [sys.executable, "-c", CHECK], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout == ""
