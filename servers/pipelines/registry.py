"""Pure functions over the pipeline registry: declare each Hamilton dataflow at start-up (with
the settings' per-pipeline overrides), build and validate it, publish its input schema, describe
it, check a caller's inputs and outputs, and shape its results. Runs happen in
servers/pipelines/worker.py.

Hamilton and pandas stay out of the serving process: at start-up ``declare_registry`` checks
what needs neither (engines, overrides, the ``Inputs`` models, outputs named), and
``validate_in_background`` builds and validates every pipeline in a niced subprocess
(``python -m servers.pipelines.registry``) while the server already serves. A pipeline that
fails there is withdrawn (its calls refused with the reason, logged at ERROR) before any of its
runs starts. ``load_registry`` does everything in-process, as that subprocess and
``gateway.py check`` do.

A pipeline module is plain typed functions (Hamilton style) plus an ``Inputs`` pydantic model
naming its user inputs; the data comes through the injected external input ``db``, a hardened
read-only DuckDB cursor. Nothing here knows about MCP.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import logging
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from types import ModuleType
from typing import Annotated, Any

import duckdb
from pydantic import BaseModel, Field, ValidationError

import pipelines as package
from pipelines import SAMPLE_TABLES, Pipeline, registry
from servers.conventions import describe_errors
from servers.lazy import lazy_module
from servers.results import Column, Rows, cap_rows, json_value
from servers.sample_data import SAMPLE_FILE
from servers.settings import ENGINES, GatewaySettings, PipelineOverride

# Hamilton (and through it pandas and dask) loads where a driver is built: in the validation
# subprocess and the run workers, or here on a describe before validation has answered.
driver = lazy_module("hamilton.driver")
log = logging.getLogger("gateway.pipelines")
_MODULE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")

# The arguments of every tool that names a pipeline, its inputs and its outputs.
PipelineName = Annotated[str, Field(description="From pipelines_list_pipelines.")]
PipelineInputs = Annotated[dict[str, Any] | None, Field(description="By name; omitted: defaults.")]
PipelineOutputs = Annotated[list[str] | None, Field(description="Default: all.")]

INJECTED = {"db": duckdb.DuckDBPyConnection}


class PipelineError(ValueError):
    """A pipeline is broken (at start-up) or a call to one is wrong; the message says how."""


@dataclass(frozen=True)
class LoadedPipeline:
    name: str
    spec: Pipeline
    inputs: type[BaseModel]
    # describe()'s answer, filled in by the validation subprocess (then no driver is built here).
    facts: dict[str, Any] = dataclasses.field(default_factory=dict, compare=False, repr=False)

    @cached_property
    def driver(self) -> Any:
        """The Hamilton driver, built on first use (validation checked that it builds)."""
        return driver.Builder().with_modules(self.spec.module).build()

    @property
    def module(self) -> ModuleType:
        return self.spec.module

    @property
    def description(self) -> str:
        return (self.module.__doc__ or self.name).strip()


def served_registry(settings: GatewaySettings, tables: set[str] | None) -> dict[str, Pipeline]:
    """The pipelines to serve: the sample ones that apply (all with the sample database, named
    or by default; none with your own; or those named in ``pipelines.sample_pipelines``), then
    every module of the ``pipelines.paths`` folders. One that declares tables missing from
    ``tables`` (the served data's names; None: unknown now) is left out, with a log line naming
    what is missing."""
    wanted = settings.pipelines.sample_pipelines
    if wanted is None:
        database = settings.sql.database
        with_sample = database is None or Path(database).name == SAMPLE_FILE
        wanted = list(SAMPLE_TABLES) if with_sample else []
    unknown = sorted(set(wanted) - set(SAMPLE_TABLES))
    if unknown:
        raise PipelineError(
            f"settings pipelines.sample_pipelines names {unknown}; the samples are "
            f"{', '.join(SAMPLE_TABLES)}"
        )
    samples = registry() if wanted else {}
    chosen = {name: samples[name] for name in wanted}
    for name, spec in folder_pipelines(settings.pipelines.paths).items():
        if name in chosen:
            raise PipelineError(
                f"pipeline {name!r} of {spec.module.__file__} has the name of a sample pipeline; "
                "rename its file"
            )
        chosen[name] = spec
    if tables is None:
        return chosen
    for name, spec in list(chosen.items()):
        missing = [t for t in spec.tables if t not in tables]
        if missing:
            log.warning(
                "pipeline %s left out: the served data has no table %s", name, ", ".join(missing)
            )
            del chosen[name]
    return chosen


def folder_pipelines(folders: list[Path]) -> dict[str, Pipeline]:
    """Every pipeline module (``*.py`` not starting with ``_``) of folders, imported as
    ``pipelines.<file name>``; PipelineError names a folder or module that is not usable."""
    resolved = []
    for folder in folders:
        path = Path(folder).expanduser().resolve()
        if not path.is_dir():
            raise PipelineError(f"settings pipelines.paths names {folder}, which is not a folder")
        resolved.append(path)
    package.use_folders([str(path) for path in resolved])
    found: dict[str, Pipeline] = {}
    for path in resolved:
        for file in sorted(path.glob("*.py")):
            if file.name.startswith("_"):
                continue
            spec = _folder_pipeline(file)
            if spec.module.__name__.rsplit(".", 1)[-1] in found:
                raise PipelineError(f"two pipeline modules are named {file.stem!r}; rename one")
            found[file.stem] = spec
    return found


def _folder_pipeline(file: Path) -> Pipeline:
    where = f"pipeline module {file}"
    if not _MODULE_NAME.match(file.stem):
        raise PipelineError(f"{where}: a file name is a letter, then letters, digits or _")
    if (Path(package.__file__).parent / file.name).exists():
        raise PipelineError(f"{where} has the name of a sample module; rename its file")
    # Imported from this very file (a module of that name from other settings is replaced);
    # other processes import it by name through the package's search path.
    name = f"pipelines.{file.stem}"
    spec = importlib.util.spec_from_file_location(name, file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise PipelineError(f"{where} does not import: {type(exc).__name__}: {exc}") from None
    outputs = getattr(module, "OUTPUTS", None)
    if not outputs:
        raise PipelineError(f"{where} has no OUTPUTS (the nodes callers may request)")
    return Pipeline(module, tuple(outputs), tables=tuple(getattr(module, "TABLES", ())))


def load_registry(
    registry: Mapping[str, Pipeline], overrides: Mapping[str, PipelineOverride] | None = None
) -> dict[str, LoadedPipeline]:
    """Build and validate every pipeline, with the settings' run options applied; the first
    broken one raises PipelineError naming it."""
    overrides = overrides or {}
    unknown = sorted(set(overrides) - set(registry))
    if unknown:
        raise PipelineError(
            f"settings pipelines.overrides name unknown pipelines {unknown}; "
            f"registered: {', '.join(registry)}"
        )
    return {
        name: load_pipeline(name, spec)
        for name, spec in declare_registry(registry, overrides).items()
    }


def declare_registry(
    registry: Mapping[str, Pipeline], overrides: Mapping[str, PipelineOverride] | None = None
) -> dict[str, Pipeline]:
    """The registry with overrides applied, after the checks that need no Hamilton: unknown
    overrides, engines, an ``Inputs`` model with described fields, public outputs named. The
    first problem raises PipelineError naming the pipeline."""
    overrides = overrides or {}
    unknown = sorted(set(overrides) - set(registry))
    if unknown:
        raise PipelineError(
            f"settings pipelines.overrides name unknown pipelines {unknown}; "
            f"registered: {', '.join(registry)}"
        )
    declared = {}
    for name, spec in registry.items():
        spec = with_override(spec, overrides.get(name))
        _declared(name, spec)
        declared[name] = spec
    return declared


def declared_pipelines(
    registry: Mapping[str, Pipeline], overrides: Mapping[str, PipelineOverride] | None = None
) -> dict[str, LoadedPipeline]:
    """Every pipeline as declared (see declare_registry), its driver built when first needed;
    validate them with validate_in_background."""
    return {
        name: LoadedPipeline(name, spec, _declared(name, spec))
        for name, spec in declare_registry(registry, overrides).items()
    }


def _declared(name: str, spec: Pipeline) -> type[BaseModel]:
    where = f"pipeline {name!r} (module {spec.module.__name__})"
    if spec.engine not in ENGINES:
        raise PipelineError(
            f"{where} names engine {spec.engine!r}; choose one of {', '.join(ENGINES)}"
        )
    inputs = getattr(spec.module, "Inputs", None)
    if not (isinstance(inputs, type) and issubclass(inputs, BaseModel)):
        raise PipelineError(f"{where} has no `Inputs` pydantic model describing its inputs")
    if not spec.outputs:
        raise PipelineError(f"{where} declares no public outputs")
    return inputs


def with_override(spec: Pipeline, override: PipelineOverride | None) -> Pipeline:
    """The registry entry with the settings' per-pipeline options laid over it."""
    if override is None:
        return spec
    changes = {
        "timeout_s": override.run_timeout_s,
        "concurrency": override.concurrency,
        "engine": override.engine,
        "cache": override.cache,
    }
    return replace(spec, **{k: v for k, v in changes.items() if v is not None})


def load_pipeline(name: str, spec: Pipeline) -> LoadedPipeline:
    """Build one pipeline's driver and validate it against its declaration (in-process:
    imports Hamilton); PipelineError naming the pipeline and the problem otherwise."""
    where = f"pipeline {name!r} (module {spec.module.__name__})"
    inputs = _declared(name, spec)
    try:
        dr = driver.Builder().with_modules(spec.module).build()
    except Exception as exc:
        raise PipelineError(f"{where} does not build: {type(exc).__name__}: {exc}") from None
    variables = {v.name: v for v in dr.list_available_variables()}
    missing = [o for o in spec.outputs if o not in variables or variables[o].is_external_input]
    if missing:
        raise PipelineError(f"{where} declares outputs that are not nodes: {', '.join(missing)}")
    external = {
        v.name for v in dr.what_is_upstream_of(*spec.outputs) if v.is_external_input
    } - INJECTED.keys()
    declared = set(inputs.model_fields)
    if external != declared:
        raise PipelineError(
            f"{where}: `Inputs` must declare exactly the DAG's external inputs; "
            f"missing {sorted(external - declared)}, extra {sorted(declared - external)}"
        )
    problems = _input_problems(inputs, variables)
    if problems:
        raise PipelineError(f"{where}: {'; '.join(problems)}")
    try:
        dr.validate_execution(list(spec.outputs), inputs=_placeholder_inputs(external))
    except Exception as exc:
        raise PipelineError(f"{where} does not validate: {exc}") from None
    loaded = LoadedPipeline(name, spec, inputs)
    loaded.__dict__["driver"] = dr  # the cached_property, already built
    return loaded


def _input_problems(inputs: type[BaseModel], variables: dict) -> list[str]:
    """Each declared input must have the DAG's type and a description (the LLM reads it)."""
    problems = []
    for name, field in inputs.model_fields.items():
        dag_type = variables[name].type
        if field.annotation != dag_type:
            problems.append(
                f"input {name!r} is {_type_name(field.annotation)} in `Inputs` but the "
                f"functions take {_type_name(dag_type)}"
            )
        elif not (field.description or "").strip():
            problems.append(
                f"input {name!r} has no description in `Inputs` (add Field(description=...))"
            )
    return problems


def input_schema(pipeline: LoadedPipeline) -> dict[str, Any]:
    """The JSON schema of a pipeline's inputs, as its run tool's parameters: types, formats,
    defaults, descriptions, allowed values; no other properties accepted."""
    schema = pipeline.inputs.model_json_schema()
    schema.pop("title", None)
    schema.pop("description", None)
    for prop in schema.get("properties", {}).values():
        prop.pop("title", None)
    return {**schema, "additionalProperties": False}


def _placeholder_inputs(names: set[str]) -> dict[str, Any]:
    # validate_execution checks that every external input is provided; values are not used.
    return {name: None for name in names} | {name: None for name in INJECTED}


def check_call(
    pipeline: LoadedPipeline, inputs: Mapping[str, Any] | None, outputs: list[str] | None
) -> tuple[dict[str, Any], list[str]]:
    """Validated inputs (defaults filled) and outputs, or PipelineError listing what is expected."""
    try:
        values = pipeline.inputs.model_validate(dict(inputs or {})).model_dump()
    except ValidationError as exc:
        problems = describe_errors(exc, "inputs")
        raise PipelineError(
            f"Invalid inputs for pipeline {pipeline.name!r}: {problems}. "
            f"Expected: {describe_inputs(pipeline)}"
        ) from None
    unknown = set(inputs or {}) - set(pipeline.inputs.model_fields)
    if unknown:
        raise PipelineError(
            f"Unknown inputs for pipeline {pipeline.name!r}: {', '.join(sorted(unknown))}. "
            f"Expected: {describe_inputs(pipeline)}"
        )
    chosen = list(outputs or pipeline.spec.outputs)
    hidden = [o for o in chosen if o not in pipeline.spec.outputs]
    if hidden:
        raise PipelineError(
            f"Pipeline {pipeline.name!r} has no public output {', '.join(map(repr, hidden))}; "
            f"choose from {', '.join(pipeline.spec.outputs)}."
        )
    return values, chosen


def describe_inputs(pipeline: LoadedPipeline) -> str:
    parts = []
    for name, field in pipeline.inputs.model_fields.items():
        kind = _type_name(field.annotation)
        default = "required" if field.is_required() else f"default {json_value(field.default)}"
        parts.append(f"{name} ({kind}, {default})")
    return ", ".join(parts) or "no inputs"


def shape_output(value: Any, max_rows: int, max_bytes: int) -> Any:
    """DataFrames become capped Rows (like sql results); everything else plain JSON."""
    pd = sys.modules.get("pandas")  # no DataFrame can exist before pandas is imported
    if pd is not None and isinstance(value, pd.DataFrame):
        columns = [Column(name=str(c), type=str(t)) for c, t in value.dtypes.items()]
        rows = value.itertuples(index=False, name=None)
        return cap_rows(columns, (_no_missing(r) for r in rows), max_rows, max_bytes).model_dump()
    if pd is not None and isinstance(value, pd.Series):
        return shape_output(value.to_frame(), max_rows, max_bytes)
    if isinstance(value, Rows):
        return value.model_dump()
    return json_value(value)


def _no_missing(row: tuple) -> tuple:
    pd = sys.modules["pandas"]
    # In a DataFrame NaN, NA and NaT all mean "missing": JSON null (SQL results keep NaN).
    return tuple(None if pd.api.types.is_scalar(v) and pd.isna(v) else v for v in row)


def describe(pipeline: LoadedPipeline) -> dict[str, Any]:
    """Nodes with types and docs, each public output's lineage, and the DAG as Mermaid."""
    if "describe" in pipeline.facts:
        return pipeline.facts["describe"]
    dr = pipeline.driver
    upstream = dr.what_is_upstream_of(*pipeline.spec.outputs)
    nodes = [
        {
            "name": v.name,
            "type": _type_name(v.type),
            "doc": (v.documentation or "").strip() or None,
            "external_input": v.is_external_input,
        }
        for v in sorted(upstream, key=lambda v: v.name)
        if v.name not in INJECTED
    ]
    lineage = {
        output: sorted(
            v.name
            for v in dr.what_is_upstream_of(output)
            if v.name != output and v.name not in INJECTED
        )
        for output in pipeline.spec.outputs
    }
    return {
        "name": pipeline.name,
        "description": pipeline.description,
        "inputs": input_schema(pipeline),
        "outputs": list(pipeline.spec.outputs),
        "engine": pipeline.spec.engine,
        "cached": pipeline.spec.cache,
        "nodes": nodes,
        "lineage": lineage,
        "mermaid": mermaid(pipeline),
    }


def mermaid(pipeline: LoadedPipeline) -> str:
    """The DAG that produces the public outputs, as a Mermaid flowchart."""
    if "describe" in pipeline.facts:
        return pipeline.facts["describe"]["mermaid"]
    graph = pipeline.driver.graph
    wanted = {v.name for v in pipeline.driver.what_is_upstream_of(*pipeline.spec.outputs)}
    lines = ["flowchart LR"]
    for name in sorted(wanted):
        node = graph.nodes[name]
        shape = f"{name}[/{name}/]" if node.user_defined else f"{name}[{name}]"
        if name in pipeline.spec.outputs:
            shape = f"{name}[[{name}]]"
        lines.append(f"    {shape}")
    for name in sorted(wanted):
        for dependency in sorted(d.name for d in graph.nodes[name].dependencies):
            lines.append(f"    {dependency} --> {name}")
    return "\n".join(lines)


def _type_name(kind: Any) -> str:
    if isinstance(kind, type):
        return kind.__name__
    return str(kind).replace("typing.", "").replace("datetime.", "")
