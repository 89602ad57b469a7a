"""The PromQL queries of a Grafana dashboard, made concrete enough for Prometheus tools.

Grafana fills in `$__rate_interval` and the dashboard's template variables before sending a query;
this module does the same with fixed values so the queries can be checked offline
(`promtool check rules` on a generated rule file) or run against a real Prometheus (tests/deploy).

    python scripts/dashboard_queries.py list  deploy/grafana/dashboards/intentserve.json
    python scripts/dashboard_queries.py rules deploy/grafana/dashboards/intentserve.json [--rate-interval 1m] [--output F]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

# Grafana's built-in interval variables; all of them stand for a range-vector window here.
BUILTIN_INTERVALS = ("__rate_interval", "__interval", "__range")
PROMQL_KEYWORDS = {"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan", "start", "end"}
_VAR = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]")


@dataclass(frozen=True)
class Query:
    """One panel target."""

    panel: str
    ref_id: str
    expr: str


def load_dashboard(path: str | Path) -> dict:
    """The dashboard JSON (a file as Grafana's provisioning reads it)."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


def _panels(panels: list[dict]) -> list[dict]:
    out = []
    for panel in panels:
        out.append(panel)
        out.extend(_panels(panel.get("panels", [])))  # collapsed rows keep their panels inside
    return out


def queries(dashboard: dict) -> list[Query]:
    """Every non-empty `expr` of every panel target, in panel order."""
    found = []
    for panel in _panels(dashboard.get("panels", [])):
        for target in panel.get("targets", []):
            expr = (target.get("expr") or "").strip()
            if expr:
                found.append(Query(panel.get("title", f"panel {panel.get('id')}"), target.get("refId", "?"), expr))
    return found


def variable_values(dashboard: dict) -> dict[str, str]:
    """A value for each template variable: its "All" regex, else its current value, else `.*`."""
    values = {}
    for var in dashboard.get("templating", {}).get("list", []):
        current = (var.get("current") or {}).get("value")
        if isinstance(current, list):
            current = current[0] if len(current) == 1 else None
        if var.get("includeAll") or current in (None, "", "$__all"):
            values[var["name"]] = var.get("allValue") or ".*"
        else:
            values[var["name"]] = str(current)
    return values


def substitute(expr: str, variables: dict[str, str], rate_interval: str = "1m") -> str:
    """Replace Grafana variables ($x, ${x}, ${x:fmt}, [[x]]); raise ValueError on an unknown one."""

    def repl(match: re.Match) -> str:
        name = next(g for g in match.groups() if g)
        if name in BUILTIN_INTERVALS:
            return rate_interval
        if name in variables:
            return variables[name]
        raise ValueError(f"unknown Grafana variable ${name} in: {expr}")

    return _VAR.sub(repl, expr)


def concrete_queries(dashboard: dict, rate_interval: str = "1m") -> list[tuple[Query, str]]:
    """Each query with its PromQL as Prometheus would receive it from Grafana."""
    variables = variable_values(dashboard)
    return [(q, substitute(q.expr, variables, rate_interval)) for q in queries(dashboard)]


def metric_names(promql: str) -> set[str]:
    """Metric (series) names a PromQL expression selects; a light scan, not a full parser."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', promql)  # string literals
    s = re.sub(r"\{[^}]*\}", " ", s)  # label matchers
    s = re.sub(r"\[[^\]]*\]", " ", s)  # ranges and subqueries
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    s = re.sub(r"\b(group_left|group_right)\b", " ", s)
    names = set()
    for match in re.finditer(r"(?<![\w:.])([A-Za-z_:][\w:]*)", s):
        name = match.group(1)
        if s[match.end() :].lstrip().startswith("("):  # a function or an aggregation
            continue
        if name.lower() in PROMQL_KEYWORDS:
            continue
        names.add(name)
    return names


def rules_file(dashboard: dict, rate_interval: str = "1m") -> str:
    """A Prometheus rule file with one recording rule per query, for `promtool check rules`."""
    lines = ["groups:", "  - name: grafana-dashboard-queries", "    rules:"]
    for i, (query, promql) in enumerate(concrete_queries(dashboard, rate_interval)):
        lines.append(f"      # {query.panel} [{query.ref_id}]")
        lines.append(f"      - record: dashboard:query_{i}")
        lines.append(f"        expr: {json.dumps(promql)}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["list", "rules"])
    parser.add_argument("dashboard", type=Path)
    parser.add_argument("--rate-interval", default="1m", help="value for $__rate_interval (default 1m)")
    parser.add_argument("--output", type=Path, help="write here instead of stdout")
    args = parser.parse_args(argv)
    try:
        dashboard = load_dashboard(args.dashboard)
        concrete = concrete_queries(dashboard, args.rate_interval)
        if not concrete:
            raise ValueError("no PromQL queries found")
        if args.command == "rules":
            text = rules_file(dashboard, args.rate_interval)
        else:
            text = "".join(f"{query.panel} [{query.ref_id}]: {promql}\n" for query, promql in concrete)
        if args.output:
            args.output.write_text(text, encoding="utf-8")
        else:
            sys.stdout.write(text)
    except (OSError, ValueError) as exc:  # json.JSONDecodeError is a ValueError
        print(f"dashboard_queries: error: {args.dashboard}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
