"""``deploy/compose.yaml`` as ``podman-compose`` reads it, its nginx settings as docs/deployment.md
gives them, and the systemd unit's stop timeout against the drain (issue 21). The images of Redis,
PostgreSQL and nginx cannot be pulled here, so the compose file is validated, not run; the image
it builds is run in ``test_container.py``."""

from __future__ import annotations

import configparser
import os
import re
import shutil
import subprocess
import sys

import yaml

from bfstream.config import Settings
from tests.deploy.podman import ROOT
from tests.services import unavailable

DEPLOY = ROOT / "deploy"
SECRETS = {
    "POSTGRES_PASSWORD": "a-password-for-the-test",
    "BFSTREAM_TOKEN_SECRET": "a-token-secret-for-the-test",
    "BFSTREAM_CREDENTIALS_KEY": "a-credentials-key-for-the-test-of-32+",
}


def compose_config(**env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in SECRETS}
    return subprocess.run(
        [sys.executable, "-m", "podman_compose", "-f", str(DEPLOY / "compose.yaml"), "config"],
        capture_output=True, text=True, timeout=60, check=False, env={**clean, **env},
    )  # fmt: skip


def seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m)?", value)
    assert match, value
    return float(match[1]) * {"ms": 0.001, "s": 1, "m": 60, None: 1}[match[2]]


def test_the_compose_file_validates_with_two_instances_redis_postgres_and_nginx() -> None:
    done = compose_config(**SECRETS)
    assert done.returncode == 0, done.stderr
    config = yaml.safe_load(done.stdout)
    services = config["services"]
    assert set(services) == {"bfstream-a", "bfstream-b", "redis", "postgres", "nginx"}
    for name, service in services.items():
        assert service.get("healthcheck", {}).get("test"), f"{name} has no health check"
    drain = Settings().streams.drain_seconds
    for name in ("bfstream-a", "bfstream-b"):
        service = services[name]
        assert service["build"]["context"] == str(ROOT)  # the Dockerfile at the root
        env = service["environment"]
        assert env["BFSTREAM_BROKER_URL"].startswith("redis://redis:")
        assert env["BFSTREAM_DATABASE_URL"].endswith("@postgres:5432/bfstream")
        assert env["BFSTREAM_TOKEN_SECRET"] == SECRETS["BFSTREAM_TOKEN_SECRET"]
        assert seconds(service["stop_grace_period"]) > drain  # the drain is never cut short
    named = set(config["volumes"])
    mounted = {v.split(":")[0] for s in services.values() for v in s.get("volumes", []) if not v.startswith(".")}
    assert mounted == named and len(named) == 4  # every service's data on a named volume
    assert services["nginx"]["depends_on"]["bfstream-a"]["condition"] == "service_healthy"


def test_the_compose_file_refuses_to_run_without_its_secrets() -> None:
    done = compose_config()
    assert done.returncode != 0
    assert "POSTGRES_PASSWORD" in done.stderr  # it names what is missing instead of using a default


def location_blocks(text: str) -> dict[str, set[str]]:
    """Each ``location`` block's directives, comments and spacing left out."""
    blocks: dict[str, set[str]] = {}
    for path, body in re.findall(r"location\s+(\S+)\s*\{(.*?)\}", text, flags=re.S):
        lines = (re.sub(r"\s+", " ", line.split("#")[0]).strip() for line in body.splitlines())
        blocks[path] = {line for line in lines if line}
    return blocks


def test_nginx_in_front_has_the_websocket_and_sse_settings_of_the_deployment_guide() -> None:
    guide = (ROOT / "docs" / "deployment.md").read_text()
    (snippet,) = re.findall(r"```nginx\n(.*?)```", guide, flags=re.S)
    documented, shipped = location_blocks(snippet), location_blocks((DEPLOY / "nginx.conf").read_text())
    assert set(documented) == set(shipped) == {"/message/ws", "/message/sse", "/"}
    assert documented == shipped
    assert "proxy_buffering off;" in shipped["/message/sse"]
    assert "proxy_set_header Upgrade $http_upgrade;" in shipped["/message/ws"]


def test_the_systemd_unit_runs_one_process_as_its_own_user_and_waits_for_the_drain() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]  (systemd's keys are case-sensitive)
    unit.read(DEPLOY / "bfstream.service")
    service = unit["Service"]
    assert service["User"] == "bfstream" and service["ExecStart"].endswith("bfstream serve")
    assert service["Restart"] in ("on-failure", "always")
    assert service["KillSignal"] == "SIGTERM"
    assert seconds(service["TimeoutStopSec"]) > Settings().streams.drain_seconds
    assert unit["Install"]["WantedBy"] == "multi-user.target"


def test_systemd_accepts_the_unit() -> None:
    if shutil.which("systemd-analyze") is None:
        unavailable("systemd-analyze is not installed (apt-get install -y systemd)")
    done = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(DEPLOY / "bfstream.service")],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    # Whatever it says of the unit, but that bfstream is not installed at /opt/bfstream on this machine.
    problems = [line for line in done.stderr.splitlines() if "bfstream.service" in line and "/opt/bfstream" not in line]
    assert problems == [], done.stderr
