"""PromQL helpers for the tests: the expressions of the alert rules and the dashboard, Grafana variables
replaced by values Prometheus accepts, and the metric names an expression reads (from a real PromQL parser's
AST, not a regex)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import promql_parser
import yaml

from chart_support import ROOT

RULES_FILE = ROOT / "alerts" / "csr-signer-rules.yaml"
DASHBOARD_FILE = ROOT / "dashboards" / "csr-signer.json"

# Grafana replaces these before the query reaches Prometheus; any value of the right kind will do for parsing.
GRAFANA_VARIABLES = {
    "$__rate_interval": "5m",
    "$__interval": "1m",
    "$__range": "6h",
    "$signer": ".*",
    "$kind": "csr|pcr",
}


def substitute_grafana_variables(expr: str) -> str:
    for var, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(var, value)
    leftover = re.findall(r"\$\{?\w+", expr)
    assert not leftover, f"unknown Grafana variable(s) {leftover} in {expr!r}"
    return expr


def alert_rules(path: Path = RULES_FILE) -> list[dict]:
    return [rule for group in yaml.safe_load(path.read_text())["groups"] for rule in group["rules"]]


def dashboard(path: Path = DASHBOARD_FILE) -> dict:
    return json.loads(path.read_text())


def dashboard_panels(dash: dict) -> list[dict]:
    out = []
    for panel in dash["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def dashboard_exprs(dash: dict) -> list[tuple[str, str]]:
    """(panel title, expression as Prometheus receives it) for every query in the dashboard."""
    out = []
    for panel in dashboard_panels(dash):
        for target in panel.get("targets", []):
            out.append((panel["title"], substitute_grafana_variables(target["expr"])))
    return out


def selectors(expr: str) -> list[promql_parser.VectorSelector]:
    found: list[promql_parser.VectorSelector] = []

    def visit(node):
        if isinstance(node, promql_parser.VectorSelector):
            found.append(node)
        return True

    promql_parser.walk(promql_parser.parse(expr), visit)
    return found


def metric_names(expr: str) -> set[str]:
    names = set()
    for sel in selectors(expr):
        assert sel.name, f"selector without a metric name in {expr!r}: every query must name its metric"
        names.add(sel.name)
    return names
