#!/usr/bin/env bash
# Load-test intentserve with Locust: start the server, wait for /readyz, run Locust headless,
# write CSV + HTML reports under reports/loadtest/, print one summary line, stop the server.
#
# Usage: scripts/loadtest.sh [options] [-- extra locust args]
#   --users N         concurrent Locust users            (env USERS, default 16)
#   --spawn-rate R    users started per second           (env SPAWN_RATE, default 4)
#   --duration T      run time, Locust syntax (30s, 2m)  (env DURATION, default 60s)
#   --backend B       onnx-int8 | onnx | torch | torch-int8 | fake   (env BACKEND, default onnx-int8)
#   --model-dir D     package folder (env MODEL_DIR, default artifacts/student, else artifacts/teacher,
#                     else models/clinc150-minilm)
#   --port P          server port on 127.0.0.1           (env PORT, default 8089)
#   --name NAME       report file prefix                 (env NAME, default <package>-<backend>-u<users>)
#   --processes N     Locust worker processes, -1 = one per core (env PROCESSES, default: 1 process)
#   --out DIR         report folder                      (env OUT_DIR, default reports/loadtest)
# Every INTENT_* variable in the environment reaches the server (INTENT_MAX_BATCH_SIZE=1, INTENT_NUM_THREADS=2, ...).
# The query mix is set with LOCUST_OOS_WEIGHT, LOCUST_BATCH_SHARE, LOCUST_THINK_TIME, LOCUST_DATA, ...
# or with the matching options after `--` (see loadtests/locustfile.py).
# Exit status: Locust's (1 when any request failed, 3 below --min-accuracy), or 2 when the server fails to start.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

USERS="${USERS:-16}"
SPAWN_RATE="${SPAWN_RATE:-4}"
DURATION="${DURATION:-60s}"
BACKEND="${BACKEND:-onnx-int8}"
if [[ -z "${MODEL_DIR:-}" ]]; then
    # A student you built, else a teacher, else the shipped package (what `make serve` serves).
    MODEL_DIR=models/clinc150-minilm
    for candidate in artifacts/student artifacts/teacher; do
        if [[ -f "$candidate/manifest.json" ]]; then MODEL_DIR="$candidate"; break; fi
    done
fi
PORT="${PORT:-8089}"
NAME="${NAME:-}"
PROCESSES="${PROCESSES:-}"
OUT_DIR="${OUT_DIR:-reports/loadtest}"
READY_TIMEOUT="${READY_TIMEOUT:-180}"
EXTRA=()

while [[ $# -gt 0 ]]; do
    case "$1" in
        --users) USERS="$2"; shift 2 ;;
        --spawn-rate) SPAWN_RATE="$2"; shift 2 ;;
        --duration) DURATION="$2"; shift 2 ;;
        --backend) BACKEND="$2"; shift 2 ;;
        --model-dir) MODEL_DIR="$2"; shift 2 ;;
        --port) PORT="$2"; shift 2 ;;
        --name) NAME="$2"; shift 2 ;;
        --processes) PROCESSES="$2"; shift 2 ;;
        --out) OUT_DIR="$2"; shift 2 ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        --) shift; EXTRA=("$@"); break ;;
        *) echo "loadtest.sh: unknown option $1 (see --help)" >&2; exit 64 ;;
    esac
done

if [[ -n "${PYTHON:-}" ]]; then :
elif [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python
else PYTHON=python3; fi

if [[ ! -f "$MODEL_DIR/manifest.json" ]]; then
    echo "loadtest.sh: no model package at $MODEL_DIR (manifest.json missing); set MODEL_DIR or --model-dir" >&2
    exit 2
fi
NAME="${NAME:-$(basename "$MODEL_DIR")-${BACKEND}-u${USERS}}"
mkdir -p "$OUT_DIR"
PREFIX="$OUT_DIR/$NAME"
URL="http://127.0.0.1:$PORT"

# Refuse a busy port: we would otherwise measure whatever already listens there.
if "$PYTHON" - "$PORT" <<'EOF'
import socket, sys
s = socket.socket()
s.settimeout(0.5)
sys.exit(0 if s.connect_ex(("127.0.0.1", int(sys.argv[1]))) == 0 else 1)
EOF
then
    echo "loadtest.sh: port $PORT is already in use; pick another with --port" >&2
    exit 2
fi

SERVER_PID=""
LOCUST_PID=""
stop_pid() {  # TERM, up to 10 s grace, then KILL
    local pid="$1"
    if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
}
cleanup() {
    stop_pid "$LOCUST_PID"  # Locust writes its reports on TERM
    stop_pid "$SERVER_PID"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

echo "loadtest: serving $MODEL_DIR with backend $BACKEND on $URL (log: ${PREFIX}_server.log)"
INTENT_MODEL_DIR="$MODEL_DIR" INTENT_BACKEND="$BACKEND" INTENT_HOST=127.0.0.1 INTENT_PORT="$PORT" \
    "$PYTHON" -m app >"${PREFIX}_server.log" 2>&1 &
SERVER_PID=$!

# Wait for readiness (the model is loaded and warmed up), failing fast if the server exits.
if ! "$PYTHON" - "$URL/readyz" "$READY_TIMEOUT" "$SERVER_PID" <<'EOF'
import os, sys, time, urllib.request
url, deadline, pid = sys.argv[1], time.monotonic() + float(sys.argv[2]), int(sys.argv[3])
while time.monotonic() < deadline:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            if r.status == 200:
                sys.exit(0)
    except Exception:
        pass
    try:
        os.kill(pid, 0)
    except OSError:
        print("loadtest.sh: the server exited before it was ready", file=sys.stderr)
        sys.exit(1)
    time.sleep(0.25)
print(f"loadtest.sh: {url} not ready after {sys.argv[2]} s", file=sys.stderr)
sys.exit(1)
EOF
then
    tail -n 20 "${PREFIX}_server.log" >&2 || true
    exit 2
fi
echo "loadtest: ready; $USERS users (spawn rate $SPAWN_RATE/s) for $DURATION"

LOCUST_ARGS=(-f loadtests/locustfile.py --headless --host "$URL"
    -u "$USERS" -r "$SPAWN_RATE" -t "$DURATION" --stop-timeout 5
    --csv "$PREFIX" --html "${PREFIX}.html" --only-summary
    --accuracy-out "${PREFIX}_accuracy.json")
if [[ -n "$PROCESSES" ]]; then LOCUST_ARGS+=(--processes "$PROCESSES"); fi
# In the background + wait, so INT/TERM reach the traps at once (and stop Locust, then the server).
"$PYTHON" -m locust "${LOCUST_ARGS[@]}" "${EXTRA[@]}" > >(tee "${PREFIX}_locust.log") 2>&1 &
LOCUST_PID=$!
LOCUST_RC=0
wait "$LOCUST_PID" || LOCUST_RC=$?
LOCUST_PID=""

# The server's own view (batch sizes, queue wait, inference time) while it is still up.
"$PYTHON" -c "import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())" \
    "$URL/metrics" >"${PREFIX}_metrics.txt" 2>/dev/null || true

"$PYTHON" - "$PREFIX" "$BACKEND" "$MODEL_DIR" "$USERS" "$DURATION" <<'EOF' || true
import csv, json, sys
prefix, backend, model_dir, users, duration = sys.argv[1:6]
rows = {r["Name"]: r for r in csv.DictReader(open(f"{prefix}_stats.csv", newline=""))}
agg = rows.get("Aggregated")
if agg is None:
    print("SUMMARY: no Locust stats written")
    sys.exit(0)
n, fails = int(agg["Request Count"]), int(agg["Failure Count"])
try:
    acc = json.load(open(f"{prefix}_accuracy.json"))
    accuracy = f"{acc['accuracy']:.2%} of {acc['samples']}" if acc.get("accuracy") is not None else "n/a"
except (OSError, ValueError, KeyError):
    accuracy = "n/a"
print(
    f"SUMMARY {prefix.rsplit('/', 1)[-1]}: package={model_dir} backend={backend} users={users} duration={duration} "
    f"requests={n} failures={fails} ({fails / max(n, 1):.2%}) req/s={float(agg['Requests/s']):.1f} "
    f"p50={agg['50%']}ms p95={agg['95%']}ms p99={agg['99%']}ms max={float(agg['Max Response Time']):.0f}ms "
    f"accuracy={accuracy}"
)
EOF
echo "loadtest: reports in ${PREFIX}_stats.csv, ${PREFIX}.html, ${PREFIX}_accuracy.json, ${PREFIX}_metrics.txt"
exit "$LOCUST_RC"
