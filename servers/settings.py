"""One settings object for the gateway and every sub-server.

Values come from (highest first): keyword arguments, environment variables (prefix ``GATEWAY_``,
nesting with ``__``, e.g. ``GATEWAY_SQL__MAX_ROWS=100``), a JSON config file (``--config``), and
the defaults below. The config file may also hold an ``mcpServers`` object in the shape Claude
Desktop and fastmcp use; its entries become proxied backends.
"""

from __future__ import annotations

import json
import sys
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator
from pydantic_settings import (
    BaseSettings,
    JsonConfigSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from servers.sections import (  # the sections, imported from here by every module
    ENGINES,
    GATEWAY_TOOLS,
    LOCAL_NAMESPACES,
    NAMESPACE_PATTERN,
    PIPELINE_OUTPUTS,
    PROJECT_ROOT,
    AuditSettings,
    AuthSettings,
    BackendConfig,
    CannedParameter,
    CannedQuery,
    ChartSettings,
    EngineName,
    LimitSettings,
    PipelineOverride,
    PipelineSettings,
    SqlSettings,
    ToolSearchSettings,
)

__all__ = [
    "AuditSettings",
    "AuthSettings",
    "BackendConfig",
    "CannedParameter",
    "CannedQuery",
    "ChartSettings",
    "ENGINES",
    "EngineName",
    "GATEWAY_TOOLS",
    "LOCAL_NAMESPACES",
    "LimitSettings",
    "NAMESPACE_PATTERN",
    "PIPELINE_OUTPUTS",
    "PROJECT_ROOT",
    "PipelineOverride",
    "PipelineSettings",
    "SqlSettings",
    "ToolSearchSettings",
    "GatewaySettings",
]


def _in_data_dir(*parts: str) -> property:
    """A read-only settings property: the path data_dir/parts."""
    return property(lambda settings: settings.data_dir.joinpath(*parts))


def _demo_backend() -> dict[str, BackendConfig]:
    return {
        "demo": BackendConfig(
            command=sys.executable, args=["-m", "servers.demo_backend"], cwd=PROJECT_ROOT
        )
    }


class GatewaySettings(BaseSettings):
    """Everything the gateway can be told. See the README's settings table."""

    model_config = SettingsConfigDict(
        env_prefix="GATEWAY_",
        env_nested_delimiter="__",
        extra="forbid",
        populate_by_name=True,
        hide_input_in_errors=True,  # errors never echo values: backend headers and env, tokens
    )

    host: str = Field("127.0.0.1", description="Address to listen on (HTTP transport).")
    port: int = Field(8000, ge=0, le=65535, description="Port to listen on (HTTP transport).")
    data_dir: Path = Field(
        Path("data"), description="Where the sample database and scratch files live."
    )
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Extra Host header values accepted (DNS-rebinding protection); "
        "loopback names are always accepted.",
    )
    ready_timeout_s: float = Field(
        2.0, gt=0, description="Longest /ready waits for one backend to answer."
    )
    workers: int = Field(
        1,
        ge=1,
        description="Gateway worker processes (HTTP transport). More than one serves stateless "
        "HTTP, so any process answers any request.",
    )
    stateless_http: bool = Field(
        False,
        description="Serve stateless HTTP (no session in any process), as needed when several "
        "replicas sit behind one load balancer; always on with more than one worker.",
    )
    access_log: bool = Field(
        False,
        description="Log every HTTP request (uvicorn's access log); the audit log records every "
        "call either way.",
    )
    sql: SqlSettings = Field(default_factory=SqlSettings)
    pipelines: PipelineSettings = Field(default_factory=PipelineSettings)
    charts: ChartSettings = Field(default_factory=ChartSettings)
    backends: dict[str, BackendConfig] = Field(
        default_factory=_demo_backend,
        alias="mcpServers",
        description="Remote MCP servers to proxy, by namespace. Default: the bundled demo.",
    )
    tool_search: ToolSearchSettings = Field(default_factory=ToolSearchSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    audit: AuditSettings = Field(default_factory=AuditSettings)
    limits: LimitSettings = Field(default_factory=LimitSettings)
    worker_healthcheck_timeout_s: int = Field(
        120,
        ge=1,
        description="With several workers, how long uvicorn waits for a worker process to "
        "answer its health check before killing and restarting it; generous, so a worker "
        "slowed by a busy machine while it starts is not killed.",
    )

    @field_validator("backends")
    @classmethod
    def _valid_namespaces(cls, backends: dict[str, BackendConfig]) -> dict[str, BackendConfig]:
        for key in backends:
            if key in LOCAL_NAMESPACES or key.startswith(tuple(f"{n}_" for n in LOCAL_NAMESPACES)):
                raise ValueError(
                    f"mcpServers entry {key!r}: that namespace is taken by the gateway "
                    "(its tools would shadow the gateway's own)"
                )
            captured = [tool for tool in GATEWAY_TOOLS if tool.startswith(f"{key}_")]
            if captured:
                raise ValueError(
                    f"mcpServers entry {key!r}: that key would own the gateway's own tool "
                    f"{captured[0]!r}; choose another key"
                )
            if not NAMESPACE_PATTERN.match(key):
                raise ValueError(
                    f"mcpServers entry {key!r}: a key must start with a letter and use only "
                    "letters, digits, '_' or '-' (at most 32 characters)"
                )
        return backends

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources = [init_settings, env_settings]
        config_file = _config_file.get()
        if config_file is not None:
            sources.append(JsonConfigSettingsSource(settings_cls, json_file=config_file))
        return tuple(sources)

    @classmethod
    def load(cls, config_file: Path | None = None, **overrides: Any) -> GatewaySettings:
        """Settings from the environment and, if given, a JSON config file."""
        if config_file is not None:
            _check_config_file(config_file)
        token = _config_file.set(config_file)
        try:
            return cls(**overrides)
        finally:
            _config_file.reset(token)

    # The data directory's layout, defined here only (as read-only properties).
    scratch_dir = _in_data_dir("scratch")  # DuckDB's spill folders, one per process
    outputs_dir = _in_data_dir("outputs")  # files SQL may read: the pipelines' saved tables
    pipeline_outputs_dir = property(lambda settings: settings.outputs_dir / PIPELINE_OUTPUTS)
    pipeline_cache_dir = _in_data_dir("pipeline_cache")  # Hamilton's caches, per pipeline
    results_dir = _in_data_dir("results")  # large sql results kept for paging and download

    def database(self) -> Path:
        """The database served: sql.database, or the sample one in data_dir (built if missing)."""
        from servers.sample_data import ensure_sample_database  # imports duckdb

        return Path(self.sql.database or ensure_sample_database(self.data_dir))


_config_file: ContextVar[Path | None] = ContextVar("gateway_config_file", default=None)


def _check_config_file(path: Path) -> None:
    """Fail early, with the file's name, on a config that is missing or not JSON."""
    try:
        json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ValueError(f"config file {path} does not exist") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"config file {path} is not valid JSON: {exc}") from None
