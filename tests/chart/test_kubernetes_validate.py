"""Every rendered manifest validates with `kubernetes-validate --strict` against Kubernetes 1.33 and 1.37
(1.37 is the newest schema set kubernetes-validate 1.37.0 ships)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from chart_support import render, value_sets

KUBERNETES_VERSIONS = ["1.33.0", "1.37.0"]
# prometheus-operator CRDs: kubernetes-validate has no schema for them (it says WARN, not ERROR). Their
# content is checked by the alert and chart tests instead.
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}


def kubernetes_validate(path: Path) -> subprocess.CompletedProcess:
    args = [sys.executable, "-m", "kubernetes_validate", "--strict"]
    for v in KUBERNETES_VERSIONS:
        args += ["-k", v]
    return subprocess.run(args + [str(path)], capture_output=True, text=True)


def test_validator_supports_the_versions():
    from kubernetes_validate import utils

    versions = utils.all_versions()
    for v in KUBERNETES_VERSIONS:
        assert any(x.startswith(v.rsplit(".", 1)[0] + ".") for x in versions), (v, versions)


@pytest.mark.parametrize("name", ["defaults", "multi-signer-all-on", "minimal-all-off", "network-policy-any-apiserver"])
def test_rendered_manifests_validate_strict(name, dev_ca, tmp_path):
    rendered = render(value_sets(dev_ca)[name])
    objects = rendered.clean_objects()
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump_all(objects, sort_keys=False))
    result = kubernetes_validate(path)
    assert result.returncode == 0, result.stdout + result.stderr
    # Every built-in object passed a schema for each version (an unknown kind would only WARN and exit 0).
    passed = set(re.findall(r"^INFO .* passed for resource (\S+) against version (\S+)$", result.stdout, re.M))
    expected = {
        (f"{o['kind'].lower()}/{o['metadata']['name']}", v.rsplit(".", 1)[0])
        for o in objects if o["kind"] not in CRD_KINDS for v in KUBERNETES_VERSIONS
    }
    assert expected and passed == expected, result.stdout
    for line in result.stdout.splitlines():
        if line.startswith("WARN"):
            assert any(f"kind {kind} " in line for kind in CRD_KINDS), line


def test_validator_catches_the_resource_name_pitfall(tmp_path):
    """The v1.18-era docs' `resourceName:` (singular) must be rejected: dropped silently, it grants `sign` on every
    signer (k8s-csr-rules.md §4.1). Shows this check has teeth."""
    role = render(None).one("ClusterRole")
    role.pop("__template__")
    rule = next(r for r in role["rules"] if r["resources"] == ["signers"])
    rule["resourceName"] = rule.pop("resourceNames")
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(role))
    result = kubernetes_validate(path)
    assert result.returncode != 0
    assert "resourceName" in result.stdout
