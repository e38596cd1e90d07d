"""Alert rules: promtool accepts them, promtool unit tests cover every alert firing and not firing, the chart
ships the same file, and every alert has a summary, a description and a runbook section."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from chart_support import CHART, ROOT, render
from chart_promql import RULES_FILE, alert_rules, metric_names

TESTS_DIR = ROOT / "alerts" / "tests"
CHART_RULES = CHART / "files" / "csr-signer-rules.yaml"
RUNBOOK = ROOT / "docs" / "runbook.md"
REPO_RUNBOOK_URL = "https://github.com/csr-signer/csr-signer/blob/main/docs/runbook.md"

# What the issue asks for, and the metric each alert must be built on.
REQUIRED_ALERTS = {
    "CsrSignerCaExpiringSoon": ("warning", "csr_signer_ca_not_after_timestamp_seconds"),
    "CsrSignerCaExpiryImminent": ("critical", "csr_signer_ca_not_after_timestamp_seconds"),
    "CsrSignerApprovedNotIssued": ("critical", "csr_signer_oldest_approved_not_issued_seconds"),
    "CsrSignerHighFailureRatio": ("warning", "csr_signer_requests_total"),
    "CsrSignerIssuanceLatencyHigh": ("warning", "csr_signer_issuance_latency_seconds_bucket"),
    "CsrSignerNoLeader": ("critical", "csr_signer_leader"),
    "CsrSignerTargetDown": ("warning", "up"),
    "CsrSignerAuditTrailFailing": ("critical", "csr_signer_audit_write_errors_total"),
    "CsrSignerTrustBundleMissingAnchor": ("critical", "csr_signer_trust_bundle_missing_anchor"),
    "CsrSignerTrustBundlePublishFailing": ("warning", "csr_signer_trust_bundle_errors_total"),
    "CsrSignerCaExpiresWithinMaxLifetime": ("warning", "csr_signer_max_lifetime_seconds"),
    "CsrSignerRotationStuckInPublished": ("warning", "csr_signer_ca_published_since_timestamp_seconds"),
}


def promtool_run(promtool: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([promtool, *args], capture_output=True, text=True, cwd=cwd)


def test_promtool_check_rules(promtool):
    result = promtool_run(promtool, "check", "rules", str(RULES_FILE))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


def test_promtool_unit_tests_pass(promtool):
    tests = sorted(str(p) for p in TESTS_DIR.glob("*.yaml"))
    assert tests
    result = promtool_run(promtool, "test", "rules", *tests)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_required_alerts_exist_with_their_metric_and_severity():
    rules = {r["alert"]: r for r in alert_rules()}
    assert set(rules) == set(REQUIRED_ALERTS)
    for name, (severity, metric) in REQUIRED_ALERTS.items():
        assert rules[name]["labels"]["severity"] == severity, name
        assert metric in metric_names(rules[name]["expr"]), name


def test_every_alert_is_unit_tested_firing_and_not_firing():
    firing, silent = set(), set()
    for path in TESTS_DIR.glob("*.yaml"):
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                (firing if check.get("exp_alerts") else silent).add(check["alertname"])
    names = {r["alert"] for r in alert_rules()}
    assert names - firing == set(), "alerts without a firing test"
    assert names - silent == set(), "alerts without a not-firing test"


def _copy_alerts(tmp_path: Path, rules: list[dict]) -> Path:
    """The alerts directory in tmp_path, with the rules replaced; returns the tests dir."""
    alerts = tmp_path / "alerts"
    shutil.copytree(TESTS_DIR, alerts / "tests")
    (alerts / "csr-signer-rules.yaml").write_text(yaml.safe_dump({"groups": [{"name": "csr-signer", "rules": rules}]}))
    return alerts / "tests"


def _assert_unit_tests_catch(promtool: str, tmp_path: Path, rules: list[dict], alert: str) -> None:
    tests = _copy_alerts(tmp_path, rules)
    # The mutant itself is valid: the failure below comes from an expectation, not from a broken file.
    check = promtool_run(promtool, "check", "rules", str(tests.parent / "csr-signer-rules.yaml"))
    assert check.returncode == 0, check.stdout + check.stderr
    result = promtool_run(promtool, "test", "rules", *sorted(str(p) for p in tests.glob("*.yaml")))
    assert result.returncode != 0
    assert f"alertname: {alert}," in result.stderr, result.stderr


@pytest.mark.parametrize("alert", sorted(REQUIRED_ALERTS))
def test_unit_tests_fail_when_an_alert_never_fires(alert, promtool, tmp_path):
    """Mutation check: an alert whose expression can never be true must make the promtool tests fail."""
    rules = alert_rules()
    for rule in rules:
        if rule["alert"] == alert:
            rule["expr"] = "vector(1) > 2"
    _assert_unit_tests_catch(promtool, tmp_path, rules, alert)


@pytest.mark.parametrize("alert", sorted(REQUIRED_ALERTS))
def test_unit_tests_fail_when_an_alert_fires_too_eagerly(alert, promtool, tmp_path):
    """Mutation check: with its threshold and "for" removed, each alert must trip a not-firing case."""
    rules = alert_rules()
    for rule in rules:
        if rule["alert"] == alert:
            rule.pop("for", None)
            # Keep the labels the expression produces, drop every comparison: the alert fires on any sample.
            rule["expr"] = {
                "CsrSignerCaExpiringSoon": "min by (signer) (csr_signer_ca_not_after_timestamp_seconds) - time()",
                "CsrSignerCaExpiryImminent": "min by (signer) (csr_signer_ca_not_after_timestamp_seconds) - time()",
                "CsrSignerApprovedNotIssued": "max by (signer, kind) (csr_signer_oldest_approved_not_issued_seconds)",
                "CsrSignerHighFailureRatio": "sum by (signer, kind) (csr_signer_requests_total)",
                "CsrSignerIssuanceLatencyHigh": "sum by (signer, kind) (csr_signer_issuance_latency_seconds_bucket)",
                "CsrSignerNoLeader": "max(csr_signer_leader) or absent(csr_signer_leader)",
                "CsrSignerTrustBundleMissingAnchor": "max by (signer) (csr_signer_trust_bundle_missing_anchor)",
                "CsrSignerTrustBundlePublishFailing": "sum by (signer, reason) (csr_signer_trust_bundle_errors_total)",
                "CsrSignerTargetDown": 'up{job="csr-signer"}',
                "CsrSignerAuditTrailFailing": "sum by (event) (csr_signer_audit_write_errors_total)",
                "CsrSignerCaExpiresWithinMaxLifetime":
                    'min by (signer) (csr_signer_ca_certificate_not_after_timestamp_seconds{state="active"}) - time()',
                "CsrSignerRotationStuckInPublished":
                    "time() - max by (signer, ca) (csr_signer_ca_published_since_timestamp_seconds)",
            }[alert]
    _assert_unit_tests_catch(promtool, tmp_path, rules, alert)


def test_alerts_have_summary_description_and_runbook():
    headings = runbook_anchors()
    for rule in alert_rules():
        ann = rule["annotations"]
        assert ann.get("summary") and ann.get("description"), rule["alert"]
        url = ann["runbook_url"]
        base, anchor = url.split("#", 1)
        assert base == REPO_RUNBOOK_URL, url
        assert anchor == rule["alert"].lower(), url
        assert anchor in headings, f"docs/runbook.md has no section for {rule['alert']}"


def runbook_anchors() -> set[str]:
    """GitHub-style anchors of the runbook's headings."""
    anchors = set()
    for line in RUNBOOK.read_text().splitlines():
        m = re.match(r"^#{1,6}\s+(.*)$", line)
        if m:
            text = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower())
            anchors.add(text.replace(" ", "-"))
    return anchors


def test_runbook_sections_explain_meaning_diagnosis_and_fix():
    text = RUNBOOK.read_text()
    for name in REQUIRED_ALERTS:
        section = text.split(f"## {name}\n", 1)[1].split("\n## ", 1)[0]
        for part in ("Meaning", "Diagnosis", "Fix"):
            assert f"**{part}**" in section, (name, part)
        assert "```" in section, f"{name}: no commands to run"


def test_chart_ships_the_same_rules_file():
    assert CHART_RULES.read_bytes() == RULES_FILE.read_bytes(), (
        "charts/csr-signer/files/csr-signer-rules.yaml and alerts/csr-signer-rules.yaml differ: edit the "
        "alerts/ file and copy it into the chart")


def test_rendered_prometheus_rule_is_the_rules_file():
    r = render({"prometheusRule": {"enabled": True}})
    rule = r.one("PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["spec"] == yaml.safe_load(RULES_FILE.read_text())


def test_runbook_base_url_is_configurable(rendered_sets):
    rule = rendered_sets["multi-signer-all-on"].one("PrometheusRule")
    urls = [r["annotations"]["runbook_url"] for g in rule["spec"]["groups"] for r in g["rules"]]
    assert urls and all(u.startswith("https://wiki.example.com/csr-signer/runbook#") for u in urls)
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
