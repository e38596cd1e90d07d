"""docs/helm.md: the values and --set flags it shows pass the chart's schema and render, and the object names its
commands use are the ones the chart creates for release csr-signer in namespace pki."""

from __future__ import annotations

import re

import helm_python as helm
import yaml

from chart_support import CHART, ROOT, render

GUIDE = ROOT / "docs" / "helm.md"


def code_blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", GUIDE.read_text(), re.S)


def test_set_flags_in_the_guide_pass_the_schema():
    sets = re.findall(r"--set '?([^' \n]+)'?", GUIDE.read_text())
    assert len(sets) >= 3
    # Helm's own --set parser; one expression holding every flag merges them as repeated --set flags do.
    values = helm.parse_set_string(",".join(sets))
    with helm.Chart.load(str(CHART)) as chart:
        merged = chart.merge_values(values)
        chart.validate_schema(merged)
    assert merged["signers"] == [{"name": "example.com/mtls", "ca": {"existingSecret": "csr-signer-ca"}}]
    assert merged["image"]["repository"] == "registry.example.com/pki/csr-signer"


def test_values_file_in_the_guide_renders():
    blocks = [b for b in code_blocks("yaml") if b.startswith("# my-values.yaml\n")]
    assert len(blocks) == 1
    values = yaml.safe_load(blocks[0])
    r = render(values, name="csr-signer", namespace="pki")
    assert [s["name"] for s in r.config()["signers"]] == ["example.com/mtls", "example.com/web"]
    assert {o["kind"] for o in r.objects} >= {"ServiceMonitor", "PrometheusRule", "Deployment"}


def test_names_used_by_the_guide_exist():
    r = render({"rbac": {"requesterClusterRole": True, "approverClusterRole": True}}, name="csr-signer", namespace="pki")
    text = GUIDE.read_text()
    roles = {o["metadata"]["name"] for o in r.all("ClusterRole")}
    for role in re.findall(r"--clusterrole=(\S+)", text):
        assert role in roles, role
    assert r.one("Deployment")["metadata"]["name"] == "csr-signer"
    assert "deployment/csr-signer" in text
    assert r.config()["controller"]["leaderElection"]["leaseName"] == "csr-signer"
    assert "get lease csr-signer" in text
    assert r.pod_spec()["volumes"][1]["secret"]["secretName"] == "csr-signer-ca"
    assert "create secret tls csr-signer-ca" in text


def test_guide_covers_the_steps():
    text = GUIDE.read_text()
    for needle in ("csr-signer ca init --out", "kubectl -n pki create secret tls", "helm install",
                   "signerName: example.com/mtls", "kubectl certificate approve", "dashboards/csr-signer.json",
                   "tests/chart/run.sh"):
        assert needle in text, needle
