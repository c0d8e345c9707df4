"""The deployment files (docker-compose.yml, Dockerfile, deploy/, .env.example) are checked
without a Docker engine, so they cannot rot silently: the compose topology, its health checks,
secrets and mounts, and the nginx config as nginx itself reads it (`nginx -t`)."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from servers.settings import PROJECT_ROOT, GatewaySettings
from tests.test_docs import environment_names

COMPOSE = PROJECT_ROOT / "docker-compose.yml"
NGINX_CONF = PROJECT_ROOT / "deploy" / "nginx.conf"
SERVICES = {"nginx", "gateway", "task-worker", "demo", "redis", "dask-scheduler", "dask-worker"}


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def service(name: str) -> dict:
    return compose()["services"][name]


def option(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def env_example() -> dict[str, str]:
    lines = (PROJECT_ROOT / ".env.example").read_text().splitlines()
    pairs = [line.split("=", 1) for line in lines if line.strip() and not line.startswith("#")]
    return {key.strip(): value for key, value in pairs}


def render_nginx_conf(prefix: Path, listen_port: int, upstreams: list[str]) -> Path:
    """deploy/nginx.conf for a run without Docker: the given upstream servers, a loopback
    listen address, and every temporary path, the pid file and the access log under prefix."""
    text = NGINX_CONF.read_text()
    for expected in ("server gateway:8000;", "listen 8080;", "access_log /dev/stdout"):
        assert expected in text, f"deploy/nginx.conf no longer has {expected!r}"
    text = text.replace("/tmp/", f"{prefix}/")
    text = text.replace("server gateway:8000;", " ".join(f"server {u};" for u in upstreams))
    text = text.replace("listen 8080;", f"listen 127.0.0.1:{listen_port};")
    text = text.replace("access_log /dev/stdout", f"access_log {prefix}/access.log")
    prefix.mkdir(parents=True, exist_ok=True)
    conf = prefix / "nginx.conf"
    conf.write_text(text)
    return conf


def nginx_binary() -> str:
    binary = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if Path(p).is_file()), None
    )
    if binary is None:
        pytest.skip("nginx is not installed (apt-get install nginx; .ci/run does)")
    return binary


def validate_against_compose_spec(path: Path) -> subprocess.CompletedProcess:
    """The compose-spec JSON schema (vendored by check-jsonschema), no Docker engine needed."""
    return subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec"]
        + [str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_compose_file_is_valid_against_the_compose_spec_schema():
    checked = validate_against_compose_spec(COMPOSE)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_schema_check_catches_a_rotted_compose_file(tmp_path):
    rotted = compose()
    rotted["services"]["gateway"]["healthcheck"]["retries"] = "three"
    rotted["services"]["redis"]["restart_policy"] = "always"  # not a compose key
    path = tmp_path / "docker-compose.yml"
    path.write_text(yaml.safe_dump(rotted))
    checked = validate_against_compose_spec(path)
    assert checked.returncode != 0
    assert "restart_policy" in checked.stdout + checked.stderr


def test_compose_runs_nginx_gateway_demo_backend_redis_and_task_workers():
    assert set(compose()["services"]) == SERVICES


def test_every_long_running_service_has_a_health_check_and_dependencies_wait_for_it():
    services = compose()["services"]
    for name, spec in services.items():
        check = spec.get("healthcheck", {})
        assert check.get("test", [None])[0] == "CMD", name
        assert {"interval", "timeout", "retries"} <= set(check), name
        for dependency, condition in spec.get("depends_on", {}).items():
            assert dependency in services
            assert condition == {"condition": "service_healthy"}, (name, dependency)


def test_only_nginx_is_published_and_it_proxies_to_the_gateway_with_the_checked_config():
    services = compose()["services"]
    assert [n for n, spec in services.items() if "ports" in spec] == ["nginx"]
    assert "./deploy/nginx.conf:/etc/nginx/nginx.conf:ro" in services["nginx"]["volumes"]
    assert re.search(r"server gateway:8000;", NGINX_CONF.read_text())
    assert option(service("gateway")["command"], "--port") == "8000"


def test_the_gateway_serves_stateless_http_with_at_least_two_workers():
    gateway = service("gateway")
    assert int(option(gateway["command"], "--workers")) >= 2
    assert gateway["environment"]["GATEWAY_STATELESS_HTTP"] == "true"
    help_text = subprocess.run(
        [sys.executable, "gateway.py", "--help"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert all(arg in help_text for arg in gateway["command"] if arg.startswith("--"))


def test_the_gateway_config_reaches_the_demo_service_and_loads_as_settings():
    config = PROJECT_ROOT / option(service("gateway")["command"], "--config")
    settings = GatewaySettings.load(config)
    demo_port = option(service("demo")["command"], "--port")
    assert settings.backends["demo"].url == f"http://demo:{demo_port}/mcp"
    assert service("task-worker")["environment"]["GATEWAY_CONFIG"] == str(
        config.relative_to(PROJECT_ROOT)
    )


def test_gateway_and_task_workers_share_one_redis_queue_and_the_worker_entry_point_exists():
    gateway, worker = service("gateway"), service("task-worker")
    url = gateway["environment"]["GATEWAY_PIPELINES__TASKS_URL"]
    assert url.startswith("redis://") and "@redis:6379/" in url
    assert worker["environment"]["GATEWAY_PIPELINES__TASKS_URL"] == url
    assert worker["command"][-2:] == ["-m", "servers.pipelines.task_worker"]
    entry = PROJECT_ROOT / "servers" / "pipelines" / "task_worker.py"
    assert 'if __name__ == "__main__":' in entry.read_text()


def test_secrets_come_from_the_env_file_and_every_referenced_variable_is_in_the_example():
    text = COMPOSE.read_text()
    example = env_example()
    referenced = set(re.findall(r"\$\{(\w+)", text))
    assert referenced and referenced <= set(example)
    for name in ("gateway", "task-worker"):
        assert service(name)["env_file"] == ".env"
    # Every gateway setting in the example is a real one, and the secrets are placeholders.
    settings = set(environment_names(GatewaySettings, "GATEWAY_"))
    assert {k for k in example if k.startswith("GATEWAY_")} <= settings
    assert example["REDIS_PASSWORD"].startswith("change-me")
    assert ".env" in (PROJECT_ROOT / ".dockerignore").read_text().split()


def test_the_image_runs_as_a_non_root_user_with_read_only_data_and_separate_scratch():
    dockerfile = (PROJECT_ROOT / "Dockerfile").read_text()
    users = re.findall(r"^USER (\S+)", dockerfile, re.M)
    assert users and users[-1] not in {"root", "0"}
    for source in re.findall(r"^COPY (\S+)", dockerfile, re.M):
        assert (PROJECT_ROOT / source).exists(), source
    assert "GATEWAY_DATA_DIR=/var/lib/gateway" in dockerfile
    assert not re.search(r"TOKEN|PASSWORD|SECRET", dockerfile.split("USER")[-1])
    for name in ("gateway", "task-worker"):
        volumes = service(name)["volumes"]
        assert "./data:/srv/data:ro" in volumes
        assert any(v.endswith(":/var/lib/gateway") for v in volumes)


def test_nginx_accepts_the_shipped_config(tmp_path):
    conf = render_nginx_conf(tmp_path / "nginx", 8080, ["127.0.0.1:8000"])
    checked = subprocess.run(
        [nginx_binary(), "-t", "-e", "stderr", "-p", str(conf.parent), "-c", str(conf)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert checked.returncode == 0, checked.stderr
    assert "test is successful" in checked.stderr


def test_the_nginx_config_streams_without_buffering_and_allows_slow_tools():
    text = NGINX_CONF.read_text()
    for directive in (
        "proxy_buffering off;",
        "proxy_request_buffering off;",
        "proxy_cache off;",
        "proxy_http_version 1.1;",
        "client_max_body_size 1m;",
        "location = /nginx-health",
    ):
        assert directive in text
    read_timeout = re.search(r"proxy_read_timeout (\d+)s;", text)
    assert read_timeout and int(read_timeout.group(1)) >= 600
    assert re.search(r"nginx-health", str(service("nginx")["healthcheck"]["test"]))
