"""Locust load test for intentserve: a realistic mix of users, checked answers, accuracy under load.

Run it through `scripts/loadtest.sh` (starts the server, writes reports), or directly:

    locust -f loadtests/locustfile.py --headless -u 16 -r 4 -t 60s --host http://127.0.0.1:8000 \
        --oos-weight 0.2 --batch-share 0.1 --accuracy-out reports/loadtest/accuracy.json

Scenarios (one task each, selectable with Locust's `--tags` / `--exclude-tags`):

- `single`, `inscope`: POST /classify with an in-scope CLINC150 test query (stats name `/classify [in-scope]`)
- `single`, `oos`:     POST /classify with an out-of-scope test query (stats name `/classify [oos]`)
- `batch`:             POST /classify/batch with 2..--batch-size mixed queries (stats name `/classify/batch`)

Custom options (each also readable from the environment variable in brackets):

- `--data PATH` [LOCUST_DATA]: CLINC150 oos-eval JSON (`{"test": [[text, label], ...], "oos_test": ...}`);
  default `data/clinc150/data_oos_plus.json` in the checkout (or a shared `data/clinc150/` folder beside it,
  where the compression pipeline also looks).
- `--split NAME` [LOCUST_SPLIT]: in-scope queries come from NAME, out-of-scope ones from `oos_NAME` (default test).
- `--oos-weight F` [LOCUST_OOS_WEIGHT]: share of single queries that are out of scope (default 0.2;
  CLINC150's test split has 1000 / 5500 = 0.18).
- `--batch-share F` [LOCUST_BATCH_SHARE]: share of requests that go to /classify/batch (default 0.1).
- `--batch-size N` [LOCUST_BATCH_SIZE]: most texts per batch request (default 8).
- `--top-k N` [LOCUST_TOP_K]: top_k sent with each request (default 3).
- `--think-time MIN,MAX` [LOCUST_THINK_TIME]: seconds a user waits between requests (default 0.5,2;
  `0` = closed loop, each user fires the next request as soon as the last one returns).
- `--accuracy-out PATH` [LOCUST_ACCURACY_OUT]: also write the accuracy summary as JSON.
- `--min-accuracy F` [LOCUST_MIN_ACCURACY]: exit with code 3 when the sampled accuracy is lower
  (enforced in local and --processes runs; a separate `--master` only logs it).

Accuracy under load: every single-query response that passes the checks is recorded as
(expected label, returned intent). At test stop the sampled accuracy (overall, in-scope, out-of-scope
recall, in-scope answered as oos) and the most frequent confusions are logged. Workers ship their
counts to the master with each stats report, so `--processes N` runs are aggregated.

Weights and tags are applied when Locust starts (init event), so a worker started on its own
(`--worker`) needs the same weight options as the master; `--processes` workers inherit them.
The file needs only Locust and the standard library (no torch, no app imports).
"""

from __future__ import annotations

import json
import logging
import math
import random
from collections import Counter
from pathlib import Path
from typing import Any

import gevent
from locust import FastHttpUser, events, tag
from locust.runners import MasterRunner, WorkerRunner
from locust.stats import CSV_STATS_INTERVAL_SEC

logger = logging.getLogger("intentserve.loadtest")

REPO = Path(__file__).resolve().parent.parent
# Where compression.data looks for CLINC150's JSON: a shared data folder beside the checkout, else data/clinc150/.
DATA_CANDIDATES = (
    REPO.parent / "shared" / "data" / "clinc150" / "data_oos_plus.json",
    REPO / "data" / "clinc150" / "data_oos_plus.json",
)
DEFAULT_DATA = next((c for c in DATA_CANDIDATES if c.is_file()), DATA_CANDIDATES[-1])
OOS_LABEL = "oos"
RESULT_KEYS = ("intent", "confidence", "oos", "fallback", "alternatives", "model", "backend")
JSON_HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}


# --------------------------------------------------------------------------------------------- options


@events.init_command_line_parser.add_listener
def _add_arguments(parser: Any) -> None:
    group = parser.add_argument_group("intentserve", "query mix, checks and accuracy sampling")
    group.add_argument(
        "--data",
        type=str,
        env_var="LOCUST_DATA",
        default=str(DEFAULT_DATA),
        help="CLINC150 oos-eval JSON with <split> and oos_<split> lists of [text, label]",
    )
    group.add_argument(
        "--split",
        type=str,
        env_var="LOCUST_SPLIT",
        default="test",
        help="split to draw queries from (oos queries from oos_<split>)",
    )
    group.add_argument(
        "--oos-weight",
        type=float,
        env_var="LOCUST_OOS_WEIGHT",
        default=0.2,
        help="share of single queries that are out of scope (0..1)",
    )
    group.add_argument(
        "--batch-share",
        type=float,
        env_var="LOCUST_BATCH_SHARE",
        default=0.1,
        help="share of requests sent to /classify/batch (0..1)",
    )
    group.add_argument(
        "--batch-size",
        type=int,
        env_var="LOCUST_BATCH_SIZE",
        default=8,
        help="most texts in one /classify/batch request",
    )
    group.add_argument("--top-k", type=int, env_var="LOCUST_TOP_K", default=3, help="top_k sent with requests")
    group.add_argument(
        "--think-time",
        type=str,
        env_var="LOCUST_THINK_TIME",
        default="0.5,2",
        help="MIN,MAX seconds between a user's requests (0 = closed loop)",
    )
    group.add_argument(
        "--accuracy-out",
        type=str,
        env_var="LOCUST_ACCURACY_OUT",
        default="",
        help="write the accuracy summary to this JSON file",
    )
    group.add_argument(
        "--min-accuracy",
        type=float,
        env_var="LOCUST_MIN_ACCURACY",
        default=-1.0,
        help="exit code 3 when the sampled accuracy is below this (default: off)",
    )


def _think_time(spec: str) -> tuple[float, float]:
    parts = [float(p) for p in str(spec).replace(" ", "").split(",") if p]
    if not parts:
        return 0.0, 0.0
    low, high = parts[0], parts[-1]
    if low < 0 or high < low:
        raise ValueError(f"--think-time: expected MIN,MAX with 0 <= MIN <= MAX, got {spec!r}")
    return low, high


# ------------------------------------------------------------------------------------------------ data


class QueryPool:
    """In-scope and out-of-scope (text, label) pairs read straight from the JSON (no torch)."""

    def __init__(self, path: str | Path, split: str = "test") -> None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"query data not found: {path} (set --data or LOCUST_DATA)")
        raw = json.loads(path.read_text(encoding="utf-8"))
        if split not in raw:
            raise KeyError(f"{path}: no split {split!r} (has {sorted(raw)})")
        rows = [(str(t), str(y)) for t, y in raw[split]]
        self.inscope = [r for r in rows if r[1] != OOS_LABEL]
        self.oos = [(str(t), OOS_LABEL) for t, _ in raw.get(f"oos_{split}", [])] + [
            r for r in rows if r[1] == OOS_LABEL
        ]
        if not self.inscope:
            raise ValueError(f"{path}: split {split!r} has no in-scope queries")
        self.path = path

    def draw_inscope(self) -> tuple[str, str]:
        return random.choice(self.inscope)

    def draw_oos(self) -> tuple[str, str]:
        return random.choice(self.oos) if self.oos else self.draw_inscope()

    def draw_mixed(self, oos_weight: float) -> tuple[str, str]:
        return self.draw_oos() if self.oos and random.random() < oos_weight else self.draw_inscope()


# -------------------------------------------------------------------------------------------- accuracy


class AccuracyTracker:
    """(expected, returned) counts; workers send deltas to the master with each stats report."""

    def __init__(self) -> None:
        self.pairs: Counter[tuple[str, str]] = Counter()
        self.reported_total = -1

    def record(self, expected: str, returned: str) -> None:
        self.pairs[(expected, returned)] += 1

    def merge(self, items: list[list[Any]]) -> None:
        for expected, returned, n in items:
            self.pairs[(expected, returned)] += int(n)

    def drain(self) -> list[list[Any]]:
        items = [[e, r, n] for (e, r), n in self.pairs.items()]
        self.pairs.clear()
        return items

    def reset(self) -> None:
        self.pairs.clear()
        self.reported_total = -1

    def summary(self) -> dict[str, Any]:
        total = sum(self.pairs.values())
        correct = sum(n for (e, r), n in self.pairs.items() if e == r)
        ins = {k: n for k, n in self.pairs.items() if k[0] != OOS_LABEL}
        oos = {k: n for k, n in self.pairs.items() if k[0] == OOS_LABEL}
        n_ins, n_oos = sum(ins.values()), sum(oos.values())

        def ratio(a: int, b: int) -> float | None:
            return round(a / b, 4) if b else None

        confusions = Counter({k: n for k, n in self.pairs.items() if k[0] != k[1]}).most_common(10)
        return {
            "samples": total,
            "correct": correct,
            "accuracy": ratio(correct, total),
            "in_scope_samples": n_ins,
            "in_scope_accuracy": ratio(sum(n for (e, r), n in ins.items() if e == r), n_ins),
            "in_scope_answered_oos": ratio(sum(n for (_, r), n in ins.items() if r == OOS_LABEL), n_ins),
            "oos_samples": n_oos,
            "oos_recall": ratio(sum(n for (_, r), n in oos.items() if r == OOS_LABEL), n_oos),
            "top_confusions": [{"expected": e, "returned": r, "count": n} for (e, r), n in confusions],
        }


ACCURACY = AccuracyTracker()
STATE: dict[str, Any] = {"pool": None, "options": None}


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2%}"


def _report(environment: Any) -> None:
    summary = ACCURACY.summary()
    if summary["samples"] == ACCURACY.reported_total:
        return  # nothing new since the last report
    ACCURACY.reported_total = summary["samples"]
    opts = environment.parsed_options
    line = (
        f"ACCURACY under load: {_fmt(summary['accuracy'])} of {summary['samples']} sampled single queries "
        f"(in-scope {_fmt(summary['in_scope_accuracy'])} of {summary['in_scope_samples']}, "
        f"oos recall {_fmt(summary['oos_recall'])} of {summary['oos_samples']}, "
        f"in-scope answered oos {_fmt(summary['in_scope_answered_oos'])})"
    )
    logger.info(line)
    print(line, flush=True)
    min_acc = getattr(opts, "min_accuracy", -1.0) if opts else -1.0
    passed = None
    if min_acc is not None and min_acc >= 0:
        passed = summary["accuracy"] is not None and summary["accuracy"] >= min_acc
        if not passed:
            logger.error("accuracy %s is below --min-accuracy %.4f", _fmt(summary["accuracy"]), min_acc)
            environment.process_exit_code = 3
    out = getattr(opts, "accuracy_out", "") if opts else ""
    if out:
        payload = {
            **summary,
            "min_accuracy": min_acc if min_acc is not None and min_acc >= 0 else None,
            "passed": passed,
            "host": environment.host,
            "data": str(STATE["pool"].path) if STATE["pool"] else None,
            "oos_weight": getattr(opts, "oos_weight", None),
            "batch_share": getattr(opts, "batch_share", None),
        }
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")


@events.report_to_master.add_listener
def _send_accuracy(client_id: str, data: dict[str, Any]) -> None:
    data["intent_accuracy"] = ACCURACY.drain()


@events.worker_report.add_listener
def _receive_accuracy(client_id: str, data: dict[str, Any]) -> None:
    ACCURACY.merge(data.get("intent_accuracy", []))


@events.test_start.add_listener
def _on_test_start(environment: Any, **_: Any) -> None:
    ACCURACY.reset()
    if not isinstance(environment.runner, MasterRunner):
        _pool(environment)  # fail fast (and load once) on the processes that send traffic


def _let_csv_writer_catch_up(environment: Any) -> None:
    """Locust rewrites --csv files every CSV_STATS_INTERVAL_SEC and not at exit: yield once so they hold final stats."""
    if getattr(environment.parsed_options, "csv_prefix", None):
        gevent.sleep(CSV_STATS_INTERVAL_SEC + 0.1)


@events.test_stop.add_listener
def _on_test_stop(environment: Any, **_: Any) -> None:
    if not isinstance(environment.runner, WorkerRunner):
        _report(environment)
        _let_csv_writer_catch_up(environment)


@events.quit.add_listener
def _on_quit(**_: Any) -> None:
    # A headless master fires test_stop before the workers' final stats arrive: report again if they added samples.
    env = STATE.get("environment")
    if env is not None and isinstance(env.runner, MasterRunner):
        _report(env)
        _let_csv_writer_catch_up(env)


# ------------------------------------------------------------------------------------------- the user


def _pool(environment: Any) -> QueryPool:
    opts = environment.parsed_options
    path = getattr(opts, "data", None) or str(DEFAULT_DATA)
    split = getattr(opts, "split", None) or "test"
    pool = STATE["pool"]
    if pool is None or pool.path != Path(path) or STATE.get("split") != split:
        pool = STATE["pool"] = QueryPool(path, split)
        STATE["split"] = split
        logger.info(
            "query pool: %d in-scope, %d oos queries from %s [%s]", len(pool.inscope), len(pool.oos), path, split
        )
    return pool


def check_result(result: Any) -> str | None:
    """Why one classification result breaks the API contract, or None when it is fine."""
    if not isinstance(result, dict):
        return f"result is {type(result).__name__}, not an object"
    missing = [k for k in RESULT_KEYS if k not in result]
    if missing:
        return f"missing keys {missing}"
    if not isinstance(result["intent"], str) or not result["intent"]:
        return "intent is empty or not a string"
    conf = result["confidence"]
    if not isinstance(conf, int | float) or not (0.0 <= conf <= 1.0) or math.isnan(conf):
        return f"confidence {conf!r} is not a probability"
    if not isinstance(result["oos"], bool):
        return "oos is not a boolean"
    if result["oos"] != (result["intent"] == OOS_LABEL):
        return f"oos={result['oos']} disagrees with intent={result['intent']!r}"
    fallback = result["fallback"]
    if result["oos"]:
        if not isinstance(fallback, dict) or not fallback.get("message") or "domains" not in fallback:
            return "out-of-scope answer without a fallback message"
    elif fallback is not None:
        return "in-scope answer with a fallback"
    if not isinstance(result["alternatives"], list):
        return "alternatives is not a list"
    for alt in result["alternatives"]:
        if not isinstance(alt, dict) or "intent" not in alt or "confidence" not in alt:
            return "alternative without intent/confidence"
    return None


class IntentUser(FastHttpUser):
    """An assistant front-end classifying user utterances (tasks are weighted at init, see below)."""

    def wait_time(self) -> float:
        low, high = STATE.get("think_time", (0.5, 2.0))
        return random.uniform(low, high) if high > 0 else 0.0

    def on_start(self) -> None:
        opts = self.environment.parsed_options
        self.pool = _pool(self.environment)
        self.top_k = int(getattr(opts, "top_k", 3) or 0)
        self.batch_size = max(1, int(getattr(opts, "batch_size", 8) or 1))
        self.oos_weight = float(getattr(opts, "oos_weight", 0.2) or 0.0)

    def _single(self, text: str, expected: str, name: str) -> None:
        body = {"text": text, "top_k": self.top_k}
        with self.client.post("/classify", json=body, headers=JSON_HEADERS, name=name, catch_response=True) as resp:
            if resp.status_code != 200:
                resp.failure(f"HTTP {resp.status_code}: {(resp.text or '')[:200]}")
                return
            try:
                result = resp.json()
            except (ValueError, TypeError):
                resp.failure("response is not JSON")
                return
            problem = check_result(result)
            if problem:
                resp.failure(problem)
                return
            resp.success()
            ACCURACY.record(expected, result["intent"])

    @tag("single", "inscope")
    def classify_inscope(self) -> None:
        text, label = self.pool.draw_inscope()
        self._single(text, label, "/classify [in-scope]")

    @tag("single", "oos")
    def classify_oos(self) -> None:
        text, label = self.pool.draw_oos()
        self._single(text, label, "/classify [oos]")

    @tag("batch")
    def classify_batch(self) -> None:
        n = random.randint(min(2, self.batch_size), self.batch_size)
        texts = [self.pool.draw_mixed(self.oos_weight)[0] for _ in range(n)]
        body = {"texts": texts, "top_k": self.top_k}
        with self.client.post(
            "/classify/batch", json=body, headers=JSON_HEADERS, name="/classify/batch", catch_response=True
        ) as resp:
            if resp.status_code != 200:
                resp.failure(f"HTTP {resp.status_code}: {(resp.text or '')[:200]}")
                return
            try:
                results = resp.json().get("results")
            except (ValueError, TypeError, AttributeError):
                resp.failure("response is not a JSON object")
                return
            if not isinstance(results, list) or len(results) != n:
                resp.failure(f"expected {n} results, got {len(results) if isinstance(results, list) else results!r}")
                return
            for i, result in enumerate(results):
                problem = check_result(result)
                if problem:
                    resp.failure(f"results[{i}]: {problem}")
                    return
            resp.success()

    tasks = [classify_inscope, classify_oos, classify_batch]  # noqa: RUF012 - reweighted in _on_init


def task_weights(oos_weight: float, batch_share: float) -> list[Any]:
    """The task list with repetitions in proportion: single in-scope / single oos / batch."""
    for name, value in (("--oos-weight", oos_weight), ("--batch-share", batch_share)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be within 0..1, got {value}")
    shares = {
        IntentUser.classify_inscope: (1 - batch_share) * (1 - oos_weight),
        IntentUser.classify_oos: (1 - batch_share) * oos_weight,
        IntentUser.classify_batch: batch_share,
    }
    ints = {fn: round(share * 1000) for fn, share in shares.items()}
    ints = {fn: n for fn, n in ints.items() if n > 0}
    g = math.gcd(*ints.values())
    return [fn for fn, n in ints.items() for _ in range(n // g)]


@events.init.add_listener
def _on_init(environment: Any, **_: Any) -> None:
    STATE["environment"] = environment
    opts = environment.parsed_options
    if opts is None:
        return
    STATE["think_time"] = _think_time(getattr(opts, "think_time", "0.5,2"))
    IntentUser.tasks = task_weights(float(opts.oos_weight), float(opts.batch_share))
