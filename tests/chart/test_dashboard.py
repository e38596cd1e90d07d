"""The Grafana dashboard: every query parses as PromQL (promtool), it has the panels SREs need, it is templated by
data source and signer, and the chart ships the same JSON."""

from __future__ import annotations

import json
import subprocess

import yaml

from chart_support import CHART, render
from chart_promql import DASHBOARD_FILE, dashboard, dashboard_exprs, dashboard_panels, selectors
from test_metric_names import CONTRACT, series_names

CHART_DASHBOARD = CHART / "files" / "csr-signer.json"
# Metrics without a signer label (the contract): their queries cannot filter by $signer.
NO_SIGNER_LABEL = {"csr_signer_api_errors_total", "csr_signer_api_retries_total", "csr_signer_audit_write_errors_total", "csr_signer_leader", "csr_signer_build_info", "up"}

REQUIRED_PANELS = {
    "Issuance rate by outcome": {"csr_signer_requests_total"},
    "Failures by reason": {"csr_signer_requests_total"},
    "Signing latency": {"csr_signer_signing_duration_seconds_bucket"},
    "Approval to issued latency": {"csr_signer_issuance_latency_seconds_bucket"},
    "Granted lifetime": {"csr_signer_granted_lifetime_seconds_bucket"},
    "Approved, not issued": {"csr_signer_approved_not_issued", "csr_signer_oldest_approved_not_issued_seconds"},
    "CA expiry countdown": {"csr_signer_ca_not_after_timestamp_seconds"},
    "Leader and replicas": {"csr_signer_leader", "csr_signer_build_info"},
    "API errors": {"csr_signer_api_errors_total"},
    "CA certificates: time to expiry": {"csr_signer_ca_certificate_not_after_timestamp_seconds", "csr_signer_max_lifetime_seconds"},
    "Published CA age": {"csr_signer_ca_published_since_timestamp_seconds"},
}


def promtool_check_exprs(promtool: str, exprs: list[str], tmp_path) -> subprocess.CompletedProcess:
    """promtool parses PromQL when it checks a rule file: one recording rule per expression."""
    rules = [{"record": f"dashboard:expr_{i}", "expr": e} for i, e in enumerate(exprs)]
    path = tmp_path / "dashboard-exprs.rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    return subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True)


def test_every_query_parses_with_promtool(promtool, tmp_path):
    exprs = [e for _, e in dashboard_exprs(dashboard())]
    assert len(exprs) >= 15
    result = promtool_check_exprs(promtool, exprs, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(exprs)} rules found" in result.stdout


def test_promtool_route_rejects_a_broken_query(promtool, tmp_path):
    result = promtool_check_exprs(promtool, ["sum by (signer (rate(csr_signer_requests_total[5m]))"], tmp_path)
    assert result.returncode != 0


def test_required_panels_query_the_right_metrics():
    panels = {p["title"]: p for p in dashboard_panels(dashboard())}
    for title, metrics in REQUIRED_PANELS.items():
        assert title in panels, f"missing panel {title!r}"
        used = {sel.name for t in panels[title]["targets"] for sel in selectors(_sub(t["expr"]))}
        assert metrics <= used, (title, used)


def test_latency_panels_show_p50_p90_p99():
    panels = {p["title"]: p for p in dashboard_panels(dashboard())}
    for title in ("Signing latency", "Approval to issued latency"):
        legends = [t["legendFormat"] for t in panels[title]["targets"]]
        assert legends == ["p50", "p90", "p99"], title
        for t, q in zip(panels[title]["targets"], ("0.5", "0.9", "0.99")):
            assert t["expr"].startswith(f"histogram_quantile({q}, "), t["expr"]


def test_templated_by_datasource_and_signer():
    dash = dashboard()
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    signer = variables["signer"]
    assert signer["type"] == "query" and signer["multi"] and signer["includeAll"] and signer["allValue"] == ".*"
    assert signer["datasource"]["uid"] == "${datasource}"
    for panel in dashboard_panels(dash):
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
            for sel in selectors(_sub(target["expr"])):
                if sel.name in NO_SIGNER_LABEL:
                    continue
                assert 'signer=~"$signer"' in target["expr"], (panel["title"], target["expr"])


# The per-request families (the contract's `kind` label): CSRs and PodCertificateRequests.
KIND_LABELLED = {n for n, (_, labels) in CONTRACT.items() if "kind" in labels}


def test_templated_by_kind_and_every_per_request_query_filters_on_it():
    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    kind = variables["kind"]
    assert kind["type"] == "custom" and kind["multi"] and kind["includeAll"]
    assert set(kind["query"].split(",")) == {"csr", "pcr"} and kind["allValue"] == "csr|pcr"
    seen = set()
    for panel in dashboard_panels(dashboard()):
        for target in panel.get("targets", []):
            for sel in selectors(_sub(target["expr"])):
                family = next((n for n in KIND_LABELLED if sel.name in series_names(n, CONTRACT[n][0])), None)
                if family:
                    seen.add(family)
                    assert 'kind=~"$kind"' in target["expr"], (panel["title"], target["expr"])
    assert seen == KIND_LABELLED


def test_panels_do_not_overlap():
    cells = set()
    for panel in dashboard_panels(dashboard()):
        g = panel["gridPos"]
        assert g["x"] + g["w"] <= 24, panel["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps at {(x, y)}"
                cells.add((x, y))


def test_unique_panel_ids_and_ref_ids():
    panels = dashboard_panels(dashboard())
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    for p in panels:
        refs = [t["refId"] for t in p.get("targets", [])]
        assert len(refs) == len(set(refs)), p["title"]


def test_chart_ships_the_same_dashboard():
    assert CHART_DASHBOARD.read_bytes() == DASHBOARD_FILE.read_bytes(), (
        "charts/csr-signer/files/csr-signer.json and dashboards/csr-signer.json differ: edit dashboards/ and copy")


def test_dashboard_configmap_for_the_grafana_sidecar(rendered_sets):
    assert not [o for o in rendered_sets["defaults"].all("ConfigMap") if o["metadata"]["name"].endswith("-dashboard")]
    cm = rendered_sets["multi-signer-all-on"].one("ConfigMap", "rel-csr-signer-dashboard")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["namespace"] == "monitoring"
    assert cm["metadata"]["annotations"] == {"grafana_folder": "PKI"}
    assert json.loads(cm["data"]["csr-signer.json"]) == dashboard()
    default_ns = render({"grafanaDashboard": {"enabled": True}}).one("ConfigMap", "rel-csr-signer-dashboard")
    assert default_ns["metadata"]["namespace"] == "pki"


def _sub(expr: str) -> str:
    from chart_promql import substitute_grafana_variables

    return substitute_grafana_variables(expr)
