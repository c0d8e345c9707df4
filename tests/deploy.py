"""Real processes of a deployment, docker-free, on 127.0.0.1: redis-server, and the compose
topology (the demo backend over HTTP, two gateway replicas sharing one data directory, a
pipeline task worker, nginx in front running deploy/nginx.conf). Tests wait on each process's
state, bounded generously.

Needs the `redis-server` and `nginx` binaries (Debian packages; .ci/run installs them).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis

from servers.sample_data import ensure_sample_database
from servers.settings import PROJECT_ROOT
from tests.conftest import free_port
from tests.test_deploy_config import nginx_binary, render_nginx_conf


class RedisServer:
    """A private redis-server on a loopback port (with a password if given), without
    persistence: stopping and starting it loses every key, as a Redis restart without AOF does."""

    def __init__(self, password: str | None = None) -> None:
        self.binary = shutil.which("redis-server")
        if self.binary is None:
            pytest.skip("redis-server is not installed (apt-get install redis-server)")
        self.password = password
        self.port = free_port()
        auth = f":{password}@" if password else ""
        self.url = f"redis://{auth}127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        secret = ["--requirepass", self.password] if self.password else []
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", *secret]
            + ["--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        client = redis.Redis(
            host="127.0.0.1", port=self.port, password=self.password, socket_timeout=1
        )
        for _ in range(600):  # up to ~60 s on a loaded machine
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited: {self.process.stderr.read()[-300:]}")
            try:
                client.ping()
                return
            except redis.ConnectionError:
                threading.Event().wait(0.1)
        raise TimeoutError("redis-server did not answer within 60 s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)


@contextmanager
def started(command: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen]:
    """A process in its own session (so its workers go with it), logging to a file."""
    with log.open("wb") as output:
        process = subprocess.Popen(
            command,
            cwd=PROJECT_ROOT,
            env={**os.environ, **env},
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield process
    finally:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=15)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)


def wait_for(check, process: subprocess.Popen, log: Path, what: str, timeout_s: float = 90):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited early:\n{log.read_text()[-3000:]}")
        try:
            if check():
                return
        except (httpx.HTTPError, OSError):
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{what} did not start within {timeout_s} s:\n{log.read_text()[-3000:]}")


def answers(url: str) -> bool:
    return httpx.get(url, timeout=1).status_code == 200


def listening(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=1):
        return True


@dataclass
class Deployment:
    url: str  # the MCP endpoint, through nginx
    replicas: list[str]  # each replica's base URL (http://127.0.0.1:<port>), directly
    replica_ports: list[int]
    access_log: Path
    task_worker_pid: int
    redis: RedisServer
    config: Path  # the config file every process reads (rewrite it, then admin_reload)
    env: dict[str, str]  # the settings every process got


@contextmanager
def deployment(
    tmp: Path, data_dir: Path, token: str, env: dict[str, str] | None = None
) -> Iterator[Deployment]:
    """The compose topology as processes: replica A with two uvicorn workers, replica B one
    stateless process, both on one data directory and one Redis queue, a task worker, nginx in
    front. ``env``: extra GATEWAY_* settings for every process."""
    nginx = nginx_binary()
    ports = {name: free_port() for name in ("demo", "a", "b", "nginx")}
    config = tmp / "gateway.json"
    demo_url = f"http://127.0.0.1:{ports['demo']}/mcp"
    config.write_text(json.dumps({"mcpServers": {"demo": {"url": demo_url}}}))
    server = RedisServer()
    server.start()
    # As in docker-compose.yml: the database read-only on its own, scratch in a separate
    # directory, one Redis queue, a token from the environment.
    settings = {
        "GATEWAY_SQL__DATABASE": str(ensure_sample_database(data_dir)),
        "GATEWAY_DATA_DIR": str(tmp / "state"),
        "GATEWAY_PIPELINES__TASKS_URL": server.url,
        "GATEWAY_PIPELINES__TASKS_NAME": f"deploy-{uuid.uuid4().hex[:8]}",
        "GATEWAY_PIPELINES__TASKS_CONCURRENCY": "1",
        "GATEWAY_AUTH__TOKEN": token,
        "GATEWAY_LIMITS__RATE_PER_S": "0",
        **(env or {}),
    }
    gateway = [sys.executable, "gateway.py", "--config", str(config), "--port"]
    with ExitStack() as stack:
        stack.callback(server.stop)

        def start(name: str, command: list[str], extra: dict[str, str] | None = None):
            log = tmp / f"{name}.log"
            return stack.enter_context(started(command, {**settings, **(extra or {})}, log)), log

        demo, demo_log = start(
            "demo",
            [sys.executable, "-m", "servers.demo_backend", "--transport", "http"]
            + ["--port", str(ports["demo"])],
        )
        replica_a, a_log = start("gateway-a", [*gateway, str(ports["a"]), "--workers", "2"])
        replica_b, b_log = start(
            "gateway-b", [*gateway, str(ports["b"])], {"GATEWAY_STATELESS_HTTP": "true"}
        )
        worker, worker_log = start(
            "task-worker",
            [sys.executable, "-m", "servers.pipelines.task_worker"],
            {"GATEWAY_CONFIG": str(config), "GATEWAY_PIPELINES__TASKS_CONCURRENCY": "4"},
        )
        prefix = tmp / "nginx"
        conf = render_nginx_conf(
            prefix, ports["nginx"], [f"127.0.0.1:{ports['a']}", f"127.0.0.1:{ports['b']}"]
        )
        proxy, proxy_log = start(
            "nginx",
            [nginx, "-e", "stderr", "-p", str(prefix), "-c", str(conf)] + ["-g", "daemon off;"],
        )
        base = f"http://127.0.0.1:{ports['nginx']}"
        wait_for(lambda: answers(f"{base}/nginx-health"), proxy, proxy_log, "nginx")
        wait_for(lambda: listening(ports["demo"]), demo, demo_log, "the demo backend")
        replicas = [f"http://127.0.0.1:{ports[name]}" for name in ("a", "b")]
        for url, process, log in zip(replicas, (replica_a, replica_b), (a_log, b_log), strict=True):
            wait_for(lambda url=url: answers(f"{url}/health"), process, log, "gateway")
        wait_for(lambda: "Starting worker" in worker_log.read_text(), worker, worker_log, "worker")
        yield Deployment(
            url=f"{base}/mcp",
            replicas=replicas,
            replica_ports=[ports["a"], ports["b"]],
            access_log=prefix / "access.log",
            task_worker_pid=worker.pid,
            redis=server,
            config=config,
            env=settings,
        )
