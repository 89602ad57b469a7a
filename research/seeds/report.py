"""The study's Markdown report."""

from __future__ import annotations

import math
import shlex
from typing import Any

from research.seeds.stats import ARMS


def _pct(x: float) -> str:
    return "–" if math.isnan(x) else f"{100 * x:.2f}"


def _pts(x: float) -> str:
    return "–" if math.isnan(x) else f"{100 * x:+.2f}"


def format_report(study: dict[str, Any]) -> str:
    """Markdown: the recipe, one row per seed (both arms), the paired summary and the verdict."""
    s, rec = study["summary"], study["recipe"]
    lines = [
        "# Seed study: distillation vs alpha = 1",
        "",
        f"Recipe: student `{rec['student']}`, alpha {rec['alpha']}, T {rec['temperature']}, {rec['epochs']} epochs, "
        f"lr {rec['learning_rate']}, batch {rec['batch_size']}"
        + (f", extra `{shlex.join(rec['extra_args'])}`" if rec["extra_args"] else "")
        + f"; teacher weights sha256 {rec['teacher'][:12]}. fp32 torch, each package with its own oos rule chosen on "
        "validation. Figures in %; differences in points (KD - alpha=1).",
        "",
        "| seed | arm | validation acc | test acc | test in-scope | test oos recall | test arg-max in-scope | train min |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(study["runs"], key=lambda r: (r["seed"], ARMS.index(r["arm"]))):
        t = r["test"]
        lines.append(
            f"| {r['seed']} | {r['arm']} | {_pct(r['validation']['accuracy'])} | {_pct(t['accuracy'])} | "
            f"{_pct(t['in_scope_accuracy'])} | {_pct(t['oos_recall'])} | {_pct(r['test_argmax']['in_scope_accuracy'])} "
            f"| {r.get('train_s', math.nan) / 60:.1f} |"
        )
    level = round(100 * s["confidence"])
    lines += [
        "",
        f"Paired over seeds {s['seeds']}:",
        "",
        f"| metric | mean diff (pts) | sd (pts) | {level}% interval (pts) | KD wins / losses / ties |",
        "|---|---|---|---|---|",
    ]
    for name, m in s["metrics"].items():
        lines.append(
            f"| {name} | {_pts(m['mean'])} | {_pct(m['sd'])} | [{_pts(m['ci'][0])}, {_pts(m['ci'][1])}] | "
            f"{m['wins']} / {m['losses']} / {m['ties']} |"
        )
    parts = s.get("accuracy_parts")
    if parts:
        w, inside, oos = parts["in_scope_weight"], parts["in_scope"], parts["oos_recall"]
        lines += [
            "",
            f"Test accuracy = {_pct(w)}% x in-scope + {_pct(1 - w)}% x oos recall, so its mean difference "
            f"{_pts(s['metrics']['test.accuracy']['mean'])} is {_pts(inside['mean'])} from in-scope accuracy "
            f"(sd {_pct(inside['sd'])}) and {_pts(oos['mean'])} from oos recall (sd {_pct(oos['sd'])}).",
        ]
    lines += ["", f"**Verdict** (rule fixed in advance, on test arg-max in-scope accuracy): {s['verdict']}."]
    return "\n".join(lines)
