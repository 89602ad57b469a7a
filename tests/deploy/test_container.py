"""The images built and run for real with podman: the default image with a package mounted read-only, the
bundled image, and the compose service scraped by a real Prometheus with the project's prometheus.yml.

The base image is made locally (scripts/container/base-image.sh: Debian bookworm with Python 3.11) and passed
through the Dockerfile's PYTHON_IMAGE build argument, so nothing is pulled from a registry. Setup
(scripts/container/setup.sh) installs podman, buildah, runc and debootstrap when they are missing; the tests skip,
saying why, only where no container can run at all.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from tests.deploy.live import (
    HOST,
    Prometheus,
    empty_dashboard_queries,
    free_port,
    http,
    process,
    send_traffic,
    wait_for,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
SHIPPED = REPO_ROOT / "models" / "clinc150-minilm"
DASHBOARD = REPO_ROOT / "deploy" / "grafana" / "dashboards" / "intentserve.json"
PROMETHEUS_CONFIG = REPO_ROOT / "deploy" / "prometheus" / "prometheus.yml"
SETUP = REPO_ROOT / "scripts" / "container" / "setup.sh"
BASE_IMAGE = REPO_ROOT / "scripts" / "container" / "base-image.sh"
IMAGE = "localhost/intentserve:test"
BUNDLED = "localhost/intentserve:test-bundled"
SERVICE_UID = "10001"
START_TIMEOUT_S = 120.0
STOP_GRACE_S = 30  # docker-compose.yml's stop_grace_period
IN_SCOPE = ("what is my bank account balance", "balance")
OUT_OF_SCOPE = "how many moons does jupiter have"

pytestmark = pytest.mark.slow


def sh(*argv: str | Path, timeout: float = 900, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    """Run a command, capturing its output; fail the test with that output when check and it fails."""
    result = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=timeout, **kwargs)
    if check and result.returncode != 0:
        pytest.fail(
            f"{' '.join(map(str, argv))} exited {result.returncode}\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
        )
    return result


def timed(label: str, seconds: float) -> None:
    """The durations the closing figures come from (shown with -rP or -s)."""
    print(f"[container] {label}: {seconds:.1f} s")


@pytest.fixture(scope="module")
def base_image() -> str:
    """A runnable podman with a local Python 3.11 base image, or a skip that says why."""
    if os.name != "posix" or not shutil.which("bash"):
        pytest.skip("container tests need a Linux host with bash")
    setup = sh("bash", SETUP, check=False)
    if setup.returncode == 3:
        pytest.skip(f"no container runtime: {setup.stderr.strip()}")
    assert setup.returncode == 0, setup.stdout + setup.stderr
    if os.geteuid() != 0:
        pytest.skip("the local base image is made with debootstrap, which needs root")
    started = time.monotonic()
    result = sh("bash", BASE_IMAGE, check=False)
    if result.returncode != 0:
        pytest.skip(f"cannot make the base image (no Debian mirror reachable?): {result.stderr.strip()[-500:]}")
    image = result.stdout.strip().splitlines()[-1]
    timed("base image", time.monotonic() - started)
    probe = sh("podman", "run", "--rm", image, "python", "-c", "print(1)", check=False)
    if probe.returncode != 0:
        pytest.skip(f"podman cannot run a container here: {probe.stderr.strip()[-500:]}")
    return image


def build(base_image: str, tag: str, *extra: str) -> None:
    started = time.monotonic()
    sh("podman", "build", "--format", "docker", "--build-arg", f"PYTHON_IMAGE={base_image}", "-t", tag, *extra, ".",
       cwd=REPO_ROOT)  # fmt: skip
    size = sh("podman", "image", "inspect", tag, "--format", "{{.Size}}").stdout.strip()
    timed(f"build {tag} ({int(size) / 1e6:.0f} MB)", time.monotonic() - started)


@pytest.fixture(scope="module")
def image(base_image: str) -> str:
    """The default target (ONNX backends, package from a volume)."""
    build(base_image, IMAGE)
    return IMAGE


def wait_ready(url: str, fail_if_dead: Callable[[], None], logs: Callable[[], str]) -> None:
    """Poll /readyz until 200; fail_if_dead() fails the test early, logs() explains a time-out."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        fail_if_dead()
        try:
            if http("GET", f"{url}/readyz", timeout=2)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.5)
    pytest.fail(f"not ready after {START_TIMEOUT_S:.0f} s:\n{logs()[-4000:]}")


class Container:
    """One `podman run -d` container publishing the service on a loopback port."""

    def __init__(self, image: str, *run_args: str) -> None:
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.name = f"intentserve-test-{self.port}"
        sh("podman", "run", "-d", "--name", self.name, "-p", f"{HOST}:{self.port}:8000", *run_args, image)

    def logs(self) -> str:
        result = sh("podman", "logs", self.name, check=False)
        return result.stdout + result.stderr

    def fail_if_stopped(self) -> None:
        state = sh("podman", "inspect", self.name, "--format", "{{.State.Status}}").stdout.strip()
        if state != "running":
            pytest.fail(f"container {state}:\n{self.logs()[-4000:]}")

    def wait_ready(self) -> None:
        wait_ready(self.url, self.fail_if_stopped, self.logs)

    def exec(self, *argv: str) -> subprocess.CompletedProcess:
        return sh("podman", "exec", self.name, *argv, check=False)

    def remove(self) -> None:
        sh("podman", "rm", "--force", "--time", "0", self.name, check=False)


@pytest.fixture
def containers() -> Iterator[list[Container]]:
    """Containers started by a test; always removed."""
    started: list[Container] = []
    yield started
    for container in started:
        container.remove()


def classify(url: str, text: str) -> dict:
    status, body = http("POST", f"{url}/classify", {"text": text})
    assert status == 200, body
    return json.loads(body)


def check_serving(container: Container) -> None:
    """In-scope and out-of-scope answers, health, readiness and metrics."""
    answer = classify(container.url, IN_SCOPE[0])
    assert answer["intent"] == IN_SCOPE[1], answer
    assert answer["oos"] is False, answer
    assert classify(container.url, OUT_OF_SCOPE)["oos"] is True
    assert http("GET", f"{container.url}/healthz")[0] == 200
    assert http("GET", f"{container.url}/readyz")[0] == 200
    status, metrics = http("GET", f"{container.url}/metrics")
    assert status == 200
    served = re.search(rb'intent_requests_total\{[^}]*endpoint="/classify"[^}]*status="200"[^}]*\} (\S+)', metrics)
    assert served, metrics[:2000]
    assert float(served.group(1)) >= 2, served.group(0)


def check_stop(container: Container) -> None:
    """SIGTERM (podman stop) drains and exits 0 well inside the grace period, not by SIGKILL."""
    started = time.monotonic()
    sh("podman", "stop", "--time", str(STOP_GRACE_S), container.name)
    seconds = time.monotonic() - started
    code = sh("podman", "inspect", container.name, "--format", "{{.State.ExitCode}}").stdout.strip()
    timed(f"stop {container.name}", seconds)
    assert code == "0", container.logs()[-3000:]
    assert seconds < STOP_GRACE_S / 2, f"stop took {seconds:.1f} s"
    assert "Application shutdown complete" in container.logs()


def test_default_image_serves_a_mounted_package(image: str, containers: list[Container]):
    container = Container(image, "-v", f"{SHIPPED}:/models/package:ro")
    containers.append(container)
    started = time.monotonic()
    container.wait_ready()
    timed("default image ready", time.monotonic() - started)
    check_serving(container)
    assert container.exec("id", "-u").stdout.strip() == SERVICE_UID
    # The image's HEALTHCHECK (kept because the image is built in the docker format) runs and passes.
    healthcheck = sh("podman", "inspect", container.name, "--format", "{{json .Config.Healthcheck}}").stdout
    assert "/healthz" in healthcheck, healthcheck
    assert sh("podman", "healthcheck", "run", container.name, check=False).returncode == 0, container.logs()[-2000:]
    check_stop(container)


def test_default_image_serves_a_package_the_project_built(image: str, tiny_package: Path, containers: list[Container]):
    """The README's `docker run -v PACKAGE:/models/package:ro` with a package as the compression code writes it:
    its files must be readable by the service user (uid 10001), not only by their owner."""
    container = Container(image, "-v", f"{tiny_package}:/models/package:ro", "-e", "INTENT_BACKEND=onnx")
    containers.append(container)
    container.wait_ready()
    assert http("POST", f"{container.url}/classify", {"text": "hello there"})[0] == 200


def test_bundled_image_in_one_command(base_image: str, image: str, containers: list[Container]):
    """runtime-bundled builds in one command with podman/buildah; its model is root-owned and read-only."""
    build(base_image, BUNDLED, "--target", "runtime-bundled", "--build-context", f"model={SHIPPED}")
    container = Container(BUNDLED)
    containers.append(container)
    container.wait_ready()
    check_serving(container)
    owners = container.exec(
        "stat", "-c", "%u %a %n", "/models/package/manifest.json", "/models/package/model_quantized.onnx"
    )
    assert owners.returncode == 0, owners.stderr
    for line in owners.stdout.splitlines():
        uid, mode, _ = line.split(" ", 2)
        assert uid == "0", line
        assert not int(mode, 8) & 0o022, line
    writable = container.exec("python", "-c", "open('/models/package/manifest.json', 'a')")
    assert writable.returncode != 0
    assert "Permission denied" in writable.stderr
    check_stop(container)


@pytest.fixture
def compose_service(base_image: str, image: str, tmp_path: Path) -> Iterator[str]:
    """docker-compose.yml's intentserve service built and started by podman-compose; its URL."""
    compose = shutil.which(
        "podman-compose", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])
    )
    if compose is None:
        pytest.skip("podman-compose not installed (the dev extra pins it)")
    port = free_port()
    project = f"intentserve-test-{port}"
    # BUILDAH_FORMAT: podman keeps the image's HEALTHCHECK only in the docker format.
    env = {**os.environ, "PYTHON_IMAGE": base_image, "INTENT_PUBLISH_PORT": str(port), "BUILDAH_FORMAT": "docker"}
    argv = [compose, "-p", project, "-f", str(REPO_ROOT / "docker-compose.yml")]
    started = time.monotonic()
    sh(*argv, "up", "-d", "--build", "--no-deps", "intentserve", cwd=REPO_ROOT, env=env)
    try:
        url = f"http://{HOST}:{port}"

        def logs() -> str:
            result = sh(*argv, "logs", "intentserve", cwd=REPO_ROOT, env=env, check=False)
            return result.stdout + result.stderr

        wait_ready(url, lambda: None, logs)
        timed("compose up (build + ready)", time.monotonic() - started)
        yield url
    finally:
        sh(*argv, "down", "--timeout", "5", cwd=REPO_ROOT, env=env, check=False)


def test_compose_service_scraped_by_prometheus(compose_service: str, find_tool, dashboard_queries, tmp_path: Path):
    """The project's prometheus.yml, pointed at the published port, scrapes the compose service; every Grafana
    dashboard query returns data."""
    prometheus_binary = find_tool("prometheus")
    if prometheus_binary is None:
        pytest.skip("prometheus not installed (Debian package prometheus)")
    published = compose_service.rsplit("//", 1)[1]
    config = tmp_path / "prometheus.yml"
    text = PROMETHEUS_CONFIG.read_text()
    for rules in yaml.safe_load(text).get("rule_files", []):  # read relative to the config, as in the compose stack
        shutil.copy(PROMETHEUS_CONFIG.parent / rules, tmp_path / rules)
    assert '"intentserve:8000"' in text
    assert "scrape_interval: 5s" in text
    assert "scrape_timeout: 4s" in text
    # Outside the compose network the service is the published port; scrape every second to keep the test short.
    config.write_text(
        text.replace('"intentserve:8000"', f'"{published}"')
        .replace("scrape_interval: 5s", "scrape_interval: 1s")
        .replace("scrape_timeout: 4s", "scrape_timeout: 1s")
        .replace("evaluation_interval: 15s", "evaluation_interval: 1s")
    )
    prom_port = free_port()
    prom_url = f"http://{HOST}:{prom_port}"
    argv = [prometheus_binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address={HOST}:{prom_port}", "--log.level=warn"]  # fmt: skip
    log = tmp_path / "prometheus.log"
    with process(argv, log, cwd=tmp_path) as prom:
        wait_for("prometheus /-/ready", lambda: http("GET", f"{prom_url}/-/ready", timeout=2)[0] == 200, 60, prom, log)
        prometheus = Prometheus(prom_url)

        def target_up() -> bool:
            result = prometheus.query('up{job="intentserve"}')["result"]
            return bool(result) and result[0]["value"][1] == "1"

        wait_for("scrape target up", target_up, 60, prom, log)
        send_traffic(compose_service)
        time.sleep(3)  # a few scrapes after the last request
        empty = empty_dashboard_queries(prometheus, dashboard_queries, DASHBOARD, "30s")
        assert not empty, "dashboard queries with no data:\n" + "\n".join(empty)
        rules = [r for g in prometheus.api("rules")["groups"] for r in g["rules"]]
        assert len(rules) >= 10, "alerts.yml was not loaded beside prometheus.yml"
        assert all(r["health"] == "ok" for r in rules), [(r["name"], r["health"], r.get("lastError")) for r in rules]
