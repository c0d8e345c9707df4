"""Every declared pipeline built and validated in a subprocess while the server serves, so the
serving process imports neither Hamilton nor pandas for it (``python -m
servers.pipelines.validation`` reads the plans on stdin and prints each pipeline's description
or problem). A broken pipeline is withdrawn, its calls refused with the reason."""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import importlib
import importlib.util
import json
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipelines import Pipeline
from servers.pipelines.registry import LoadedPipeline, PipelineError, describe, load_pipeline
from servers.settings import PROJECT_ROOT

log = logging.getLogger("gateway.pipelines")


class Validation:
    """Every declared pipeline built and validated in a subprocess, started now, answering
    later. A broken pipeline is withdrawn from ``loaded`` (the dict the server lists and runs
    from) and its problem kept in ``problems``; a valid one gets its description cached.
    ``wait`` blocks until the answer (bounded); runs wait for it before starting."""

    def __init__(self, loaded: dict[str, LoadedPipeline], nice: int = 0) -> None:
        self.loaded = loaded
        self.problems: dict[str, str] = {}
        self.done = threading.Event()
        self._plans = {name: plan_of(p.spec) for name, p in loaded.items()}
        self._nice = nice
        threading.Thread(target=self._run, name="pipeline-validation", daemon=True).start()

    def wait(self, timeout_s: float) -> bool:
        """True once every pipeline has been validated (within timeout_s)."""
        return self.done.wait(timeout_s)

    def _run(self) -> None:
        key = _key(self._plans)
        try:
            verdicts = _verdicts.get(key) or validate_in_subprocess(self._plans, self._nice)
            _verdicts[key] = verdicts
        except PipelineError as exc:
            if _exiting.is_set():  # this process is ending: nothing to withdraw or report
                return
            verdicts = {name: str(exc) for name in self._plans}
        for name, verdict in verdicts.items():
            if isinstance(verdict, str):
                self.problems[name] = verdict
                self.loaded.pop(name, None)
                log.error("pipeline withdrawn: %s", verdict)
            elif name in self.loaded:
                self.loaded[name].facts["describe"] = verdict
        self.done.set()


# Verdicts already given in this process, by plans and module files: a process that builds
# several servers over the same pipelines (the tests, a reload) validates them once.
_verdicts: dict[str, dict[str, Any]] = {}


def _key(plans: Mapping[str, Mapping[str, Any]]) -> str:
    files = []
    for plan in plans.values():
        try:
            spec = importlib.util.find_spec(plan["module"])
        except (ImportError, ValueError):
            spec = None
        origin = Path(spec.origin) if spec and spec.origin else None
        files.append((str(origin), origin.stat().st_mtime_ns if origin and origin.exists() else 0))
    return json.dumps([plans, files], sort_keys=True, default=str)


def validate_in_background(loaded: dict[str, LoadedPipeline], nice: int = 0) -> Validation:
    """Start validating ``loaded`` in a subprocess at niceness ``nice``; see Validation."""
    return Validation(loaded, nice)


def plan_of(spec: Pipeline) -> dict[str, Any]:
    return {
        "module": spec.module.__name__,
        "outputs": list(spec.outputs),
        "engine": spec.engine,
        "cache": spec.cache,
    }


def validate_in_subprocess(
    plans: Mapping[str, Mapping[str, Any]], nice: int = 0, timeout_s: float = 600
) -> dict[str, Any]:
    """Each pipeline's description, or its problem as a string, from a fresh interpreter
    (``python -m servers.pipelines.validation``) that builds and validates every one; the
    serving process imports neither Hamilton nor pandas for it. The subprocess never outlives
    this process. PipelineError if the subprocess itself fails."""
    process = subprocess.Popen(
        [sys.executable, "-m", "servers.pipelines.validation", str(nice)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=PROJECT_ROOT,
        env={**os.environ, "PYTHONPATH": _python_path()},
        preexec_fn=_die_with_parent,
    )
    _validators.add(process)
    try:
        out, err = process.communicate(json.dumps(dict(plans)), timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise PipelineError(f"pipeline validation did not finish within {timeout_s:g} s") from None
    finally:
        _validators.discard(process)
    if process.returncode != 0:
        last = (err.strip().splitlines() or ["no output"])[-1]
        raise PipelineError(f"pipeline validation failed (exit {process.returncode}): {last}")
    return json.loads(out)


_validators: set[subprocess.Popen] = set()
_exiting = threading.Event()


@atexit.register
def _stop_validators() -> None:
    _exiting.set()
    for process in list(_validators):
        process.kill()


def _die_with_parent() -> None:
    # Linux: the validator is killed when the process that started it dies, however it dies.
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _python_path() -> str:
    # The subprocess imports the pipeline modules by name, as this process found them.
    return os.pathsep.join([p for p in sys.path if p] + [str(PROJECT_ROOT)])


def _validate_plans(plans: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    verdicts: dict[str, Any] = {}
    for name, plan in plans.items():
        try:
            module = importlib.import_module(plan["module"])
            spec = Pipeline(module, tuple(plan["outputs"]), plan["engine"], plan["cache"])
            verdicts[name] = describe(load_pipeline(name, spec))
        except PipelineError as exc:
            verdicts[name] = str(exc)
        except Exception as exc:  # an import error in the module, say
            where = f"pipeline {name!r} (module {plan['module']})"
            verdicts[name] = f"{where} does not load: {type(exc).__name__}: {exc}"
    return verdicts


if __name__ == "__main__":
    if hasattr(os, "nice") and len(sys.argv) > 1 and int(sys.argv[1]) > 0:
        os.nice(int(sys.argv[1]))
    logging.getLogger("hamilton").setLevel(logging.CRITICAL)
    print(json.dumps(_validate_plans(json.loads(sys.stdin.read())), default=str))
