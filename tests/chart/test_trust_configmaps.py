"""trustBundles.configMaps in the chart: off by default (no namespace or ConfigMap access), a required namespace
selector, what the values become in the config file, and that the binary accepts or refuses that file the way
the chart's schema cannot (label syntax)."""

from __future__ import annotations

import subprocess

import helm_python as helm
import pytest
import yaml

from chart_support import CHART, NAMESPACE, RELEASE, find_binary, render

FULLNAME = f"{RELEASE}-csr-signer"
SELECTOR = {"matchLabels": {"pki.example.com/trust": "true"}}


def core_rules(role):
    return [r for r in role["rules"] if r["apiGroups"] == [""] and r["resources"] != ["events"]]


def test_off_by_default_with_no_namespace_or_configmap_access():
    r = render(None)
    assert r.config()["trustBundles"]["configMaps"] == {
        "enabled": False, "namespaceSelector": {}, "name": "csr-signer-trust-bundle"}
    assert core_rules(r.one("ClusterRole", FULLNAME)) == []


def test_enabled_passes_selector_and_name_to_the_config():
    r = render({"trustBundles": {"configMaps": {"enabled": True, "name": "team-trust", "namespaceSelector": SELECTOR}}})
    assert r.config()["trustBundles"]["configMaps"] == {
        "enabled": True, "namespaceSelector": SELECTOR, "name": "team-trust"}
    assert [(x["resources"], x["verbs"]) for x in core_rules(r.one("ClusterRole", FULLNAME))] == [
        (["namespaces"], ["list", "watch"]),
        (["configmaps"], ["get", "list", "create", "patch", "delete"]),
    ]


@pytest.mark.parametrize("selector", [{}, {"matchLabels": {}}, {"matchExpressions": []}])
def test_enabled_without_a_selector_does_not_render(selector):
    values = {"trustBundles": {"configMaps": {"enabled": True, "namespaceSelector": selector}}}
    with helm.Chart.load(str(CHART)) as chart:
        with pytest.raises(helm.HelmRenderError) as err:
            chart.render(values, name=RELEASE, namespace=NAMESPACE)
    assert "trustBundles.configMaps.namespaceSelector" in str(err.value)


@pytest.mark.parametrize("config_maps", [
    {"name": "Trust_Bundle"},
    {"namespaceSelector": {"matchExpressions": [{"key": "a", "operator": "Near", "values": ["x"]}]}},
    {"namespaceSelector": {"matchLabel": {"a": "b"}}},
    {"selector": {"matchLabels": {"a": "b"}}},
])
def test_schema_rejects_bad_configmap_values(config_maps):
    with helm.Chart.load(str(CHART)) as chart:
        with pytest.raises(helm.HelmValuesError):
            chart.validate_schema({"trustBundles": {"configMaps": {"enabled": True} | config_maps}})


def _check_config(tmp_path, config_maps):
    binary = find_binary()
    if binary is None:
        pytest.skip("no csr-signer binary in target/release or target/debug (cargo build --bin csr-signer first)")
    made = subprocess.run([str(binary), "ca", "init", "--out", str(tmp_path / "ca")], capture_output=True, text=True,
                          timeout=120)
    assert made.returncode == 0, made.stderr
    config = render({"trustBundles": {"configMaps": config_maps}}).config()
    config["signers"][0]["ca"] = {"certFile": str(tmp_path / "ca" / "ca.crt"),
                                  "keyFile": str(tmp_path / "ca" / "ca.key")}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return subprocess.run([str(binary), "check-config", "--config", str(path)], capture_output=True, text=True,
                          timeout=60)


def test_binary_accepts_the_rendered_configmap_settings(tmp_path):
    result = _check_config(tmp_path, {"enabled": True, "namespaceSelector": {
        "matchLabels": {"pki.example.com/trust": "true"},
        "matchExpressions": [{"key": "environment", "operator": "NotIn", "values": ["dev"]}]}})
    assert result.returncode == 0, result.stdout + result.stderr
    effective = yaml.safe_load(result.stdout)["trustBundles"]["configMaps"]
    assert effective["enabled"] is True and effective["name"] == "csr-signer-trust-bundle"


def test_binary_refuses_a_label_the_apiserver_would_refuse(tmp_path):
    """The schema takes any string as a label value; the binary checks it at load, naming the key."""
    result = _check_config(tmp_path, {"enabled": True, "namespaceSelector": {"matchLabels": {"team": "a b"}}})
    assert result.returncode != 0
    assert "trustBundles.configMaps.namespaceSelector" in result.stderr, result.stderr
