"""Every metric the dashboard and the alerts read is one csr-signer exports: checked against the metrics contract
(always) and against a real scrape of the binary's /metrics (when METRICS_SCRAPE_FILE names one)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from chart_promql import alert_rules, dashboard, dashboard_exprs, selectors

# The metrics contract, as README.md publishes it (checked below): name -> (type, label names).
CONTRACT = {
    "csr_signer_signing_duration_seconds": ("histogram", {"signer", "kind"}),
    "csr_signer_issuance_latency_seconds": ("histogram", {"signer", "kind"}),
    "csr_signer_requests_total": ("counter", {"signer", "kind", "outcome", "reason"}),
    "csr_signer_granted_lifetime_seconds": ("histogram", {"signer", "kind"}),
    "csr_signer_lifetime_requests_total": ("counter", {"signer", "kind", "result"}),
    "csr_signer_ca_not_after_timestamp_seconds": ("gauge", {"signer"}),
    "csr_signer_ca_reload_errors_total": ("counter", {"signer"}),
    "csr_signer_signing_errors_total": ("counter", {"signer", "error"}),
    "csr_signer_approved_not_issued": ("gauge", {"signer", "kind"}),
    "csr_signer_oldest_approved_not_issued_seconds": ("gauge", {"signer", "kind"}),
    "csr_signer_api_errors_total": ("counter", {"operation", "code"}),
    "csr_signer_api_retries_total": ("counter", {"operation", "code"}),
    "csr_signer_watch_restarts_total": ("counter", {"signer", "kind"}),
    "csr_signer_certificates_signed_total": ("counter", {"signer", "kind"}),
    "csr_signer_audit_write_errors_total": ("counter", {"event"}),
    "csr_signer_trust_bundle_published_timestamp_seconds": ("gauge", {"signer", "via"}),
    "csr_signer_trust_bundle_errors_total": ("counter", {"signer", "via", "reason"}),
    "csr_signer_trust_bundle_missing_anchor": ("gauge", {"signer", "via"}),
    "csr_signer_ca_certificate_not_after_timestamp_seconds": ("gauge", {"signer", "ca", "state"}),
    "csr_signer_ca_published_since_timestamp_seconds": ("gauge", {"signer", "ca"}),
    "csr_signer_max_lifetime_seconds": ("gauge", {"signer"}),
    "csr_signer_auto_approvals_total": ("counter", {"signer", "rule"}),
    "csr_signer_not_auto_approved_total": ("counter", {"signer", "reason"}),
    "csr_signer_leader": ("gauge", set()),
    "csr_signer_build_info": ("gauge", {"version"}),
}
# Contract metrics a scrape of scrape-metrics.sh's binary (no reachable apiserver) cannot show, and why: their
# series exist only in a state that needs one. The contract and label checks still apply to them.
ONLY_IN_SOME_STATES = {
    "csr_signer_ca_published_since_timestamp_seconds": "exported by the leader once a published CA is in the bundle",
}
# Series Prometheus makes itself, not the binary.
PROMETHEUS_SERIES = {"up": {"job", "instance"}}
# Labels Prometheus attaches at scrape time (target labels), usable on any series.
TARGET_LABELS = {"job", "instance", "namespace", "pod", "service", "container", "endpoint"}


def series_names(name: str, kind: str) -> set[str]:
    if kind == "histogram":
        return {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    return {name}


def series_labels(name: str, kind: str, labels: set[str], series: str) -> set[str]:
    return labels | {"le"} if series.endswith("_bucket") and kind == "histogram" else labels


CONTRACT_SERIES = {s: series_labels(n, k, l, s) for n, (k, l) in CONTRACT.items() for s in series_names(n, k)}


def used_selectors():
    """(where, selector) for every vector selector in the alert rules and the dashboard."""
    out = []
    for rule in alert_rules():
        out += [(f"alert {rule['alert']}", s) for s in selectors(rule["expr"])]
    for title, expr in dashboard_exprs(dashboard()):
        out += [(f"panel {title!r}", s) for s in selectors(expr)]
    return out


def label_names_used(sel) -> set[str]:
    return {m.name for m in sel.matchers.matchers} - {"__name__"}


def test_every_metric_used_is_in_the_contract():
    allowed = CONTRACT_SERIES | PROMETHEUS_SERIES
    for where, sel in used_selectors():
        assert sel.name in allowed, f"{where} reads {sel.name}, which csr-signer does not export"
        extra = label_names_used(sel) - allowed[sel.name] - TARGET_LABELS
        assert not extra, f"{where} filters {sel.name} on labels {extra} it does not have"


def test_grouping_labels_exist_on_the_metrics():
    """`by (...)` clauses group on labels the aggregated metrics carry (a typo there yields one empty series)."""
    import promql_parser

    problems = []

    def visit(node):
        if isinstance(node, promql_parser.AggregateExpr) and node.modifier is not None:
            labels = set(node.modifier.labels)
            inner = {s.name for s in _selectors_of(node.expr)}
            for name in inner:
                have = (CONTRACT_SERIES | PROMETHEUS_SERIES).get(name, set()) | TARGET_LABELS
                if not labels <= have:
                    problems.append((name, labels - have))
        return True

    exprs = [r["expr"] for r in alert_rules()] + [e for _, e in dashboard_exprs(dashboard())]
    for expr in exprs:
        promql_parser.walk(promql_parser.parse(expr), visit)
    assert problems == []


def _selectors_of(node):
    import promql_parser

    found = []
    promql_parser.walk(node, lambda n: found.append(n) or True if isinstance(n, promql_parser.VectorSelector) else True)
    return found


def test_every_contract_metric_is_shown_or_alerted_on():
    used = {sel.name for _, sel in used_selectors()}
    unused = [n for n, (k, _) in CONTRACT.items() if not (series_names(n, k) & used)]
    assert unused == [], f"contract metrics neither on the dashboard nor in an alert: {unused}"


def test_contract_is_the_one_the_readme_publishes():
    """The contract above is the README's metrics list (names and label sets), so users and this test read the
    same promise."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    text = readme.split("Metrics (all `csr_signer_*`", 1)[1].split("Alerts and their runbook", 1)[0]
    published = {}
    for name, labels in re.findall(r"`(\w+)(?:\{([\w,]*)\})?`", text):
        published["csr_signer_" + name] = set(labels.split(",")) if labels else set()
    assert published == {n: labels for n, (_, labels) in CONTRACT.items()}


# ---- against a real scrape -------------------------------------------------------------------------------

def parse_exposition(text: str) -> dict[str, set[str]]:
    """Series name -> label names seen, from the Prometheus text format."""
    series: dict[str, set[str]] = {}
    types = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(maxsplit=3)
            types[name] = kind
            for s in series_names(name, kind):
                series.setdefault(s, set())
            continue
        if not line or line.startswith("#"):
            continue
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s", line)
        assert m, f"not a sample line: {line!r}"
        labels = set(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="', m.group(3) or ""))
        series.setdefault(m.group(1), set()).update(labels)
    return series


def scrape_file() -> Path:
    path = os.environ.get("METRICS_SCRAPE_FILE")
    if not path:
        pytest.skip("METRICS_SCRAPE_FILE is not set: save a scrape of the binary's /metrics "
                    "(tests/chart/scrape-metrics.sh OUT_FILE) and set METRICS_SCRAPE_FILE=OUT_FILE")
    p = Path(path)
    assert p.is_file(), f"METRICS_SCRAPE_FILE={path} does not exist"
    return p


def test_every_metric_used_appears_in_a_real_scrape():
    scraped = parse_exposition(scrape_file().read_text())
    for where, sel in used_selectors():
        if sel.name in PROMETHEUS_SERIES or sel.name in ONLY_IN_SOME_STATES:
            continue
        assert sel.name in scraped, f"{where} reads {sel.name}, absent from the scrape"
        if scraped[sel.name]:
            missing = label_names_used(sel) - scraped[sel.name] - TARGET_LABELS
            assert not missing, f"{where} filters {sel.name} on {missing}, absent from the scrape"


def test_scrape_has_exactly_the_contract_metrics():
    scraped = parse_exposition(scrape_file().read_text())
    ours = {s for s in scraped if s.startswith("csr_signer_")}
    assert ours <= set(CONTRACT_SERIES), f"not in the contract: {sorted(ours - set(CONTRACT_SERIES))}"
    for series, labels in scraped.items():
        if series in CONTRACT_SERIES and labels:
            assert labels == CONTRACT_SERIES[series], (series, labels)


def test_scrape_passes_promtool_check_metrics(promtool):
    path = scrape_file()
    result = subprocess.run([promtool, "check", "metrics"], input=path.read_text(), capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_exposition_parser_on_a_known_sample():
    sample = (
        "# HELP csr_signer_leader 1 if this replica holds the lease\n# TYPE csr_signer_leader gauge\ncsr_signer_leader 1\n"
        "# TYPE csr_signer_signing_duration_seconds histogram\n"
        'csr_signer_signing_duration_seconds_bucket{signer="example.com/mtls",le="0.001"} 3\n'
        'csr_signer_signing_duration_seconds_sum{signer="example.com/mtls"} 0.002\n'
    )
    parsed = parse_exposition(sample)
    assert parsed["csr_signer_leader"] == set()
    assert parsed["csr_signer_signing_duration_seconds_bucket"] == {"signer", "le"}
    assert "csr_signer_signing_duration_seconds_count" in parsed
