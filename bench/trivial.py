"""A trivial tool for measuring per-call overhead and throughput: `echo` on a sub-server of its
own, served alone (the baseline) or mounted as `bench` in the real gateway (every namespace,
middleware and transform of `create_gateway`). With --bench-pipeline the gateway also serves
the benchmark dataflow (bench/bench_dataflow.py) as pipeline `bench`, beside the registered
pipelines, so a long pipeline run can be started in a real gateway process (bench_isolation.py).

    python -m bench.trivial --port N                 # the gateway with bench_echo mounted
    python -m bench.trivial --port N --workers 2     # ... in two worker processes
    python -m bench.trivial --port N --bench-pipeline  # ... and pipeline `bench`
    python -m bench.trivial --port N --direct        # the trivial server alone

Settings come from the environment (GATEWAY_*), as for gateway.py. Both servers keep sessions
unless GATEWAY_STATELESS_HTTP=true or there are several workers (then both are stateless).
"""

import argparse
import os

import uvicorn
from fastmcp import FastMCP
from starlette.applications import Starlette

from bench import bench_dataflow
from gateway import create_app, create_gateway
from pipelines import Pipeline, registry
from servers.lookup import Server
from servers.settings import GatewaySettings


def create_server() -> FastMCP:
    """A sub-server like the gateway's own (same class, errors masked) with one trivial tool."""
    server = Server("trivial", mask_error_details=True)

    @server.tool
    async def echo(text: str = "") -> str:
        """Return the text unchanged."""
        return text

    return server


def with_bench_pipeline() -> dict[str, Pipeline]:
    """The registered pipelines and the benchmark dataflow as pipeline `bench`."""
    return {"bench": Pipeline(bench_dataflow, bench_dataflow.OUTPUTS), **registry()}


def create_bench_gateway(settings: GatewaySettings, bench_pipeline: bool = False) -> FastMCP:
    """The real gateway with the trivial server mounted as `bench` (tool `bench_echo`); with
    bench_pipeline, the benchmark dataflow is served too, as pipeline `bench`
    (pipelines_run_pipeline(name="bench"), beside the registered pipelines)."""
    served = with_bench_pipeline() if bench_pipeline else None
    gateway = create_gateway(settings, served_pipelines=served)
    gateway.mount(create_server(), namespace="bench")
    return gateway


def gateway_app() -> Starlette:
    """uvicorn factory: the gateway with bench_echo, settings from the environment."""
    settings = GatewaySettings.load()
    return create_app(settings, create_bench_gateway(settings))


def pipeline_gateway_app() -> Starlette:
    """uvicorn factory: the gateway with bench_echo and pipeline `bench`."""
    settings = GatewaySettings.load()
    return create_app(settings, create_bench_gateway(settings, bench_pipeline=True))


def direct_app() -> Starlette:
    """uvicorn factory: the trivial server alone, stateless exactly when the gateway is."""
    settings = GatewaySettings.load()
    stateless = settings.stateless_http or settings.workers > 1
    return create_server().http_app(path="/mcp", stateless_http=stateless)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--direct", action="store_true", help="the trivial server alone")
    parser.add_argument(
        "--bench-pipeline", action="store_true", help="serve the benchmark dataflow as `bench`"
    )
    args = parser.parse_args()
    os.environ["GATEWAY_WORKERS"] = str(args.workers)  # the factories read their settings
    factory = "pipeline_gateway_app" if args.bench_pipeline else "gateway_app"
    uvicorn.run(
        f"bench.trivial:{'direct_app' if args.direct else factory}",
        factory=True,
        host="127.0.0.1",
        port=args.port,
        workers=args.workers,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
