"""The chart lints and renders with the real Helm library, the schema rejects mistakes, and what it renders
(config file, CA Secret volumes, checksums, NOTES) is what the signer expects."""

from __future__ import annotations

import base64
import copy
import re
from pathlib import Path

import helm_python as helm
import pytest
import yaml

from chart_support import (CHART, NAMESPACE, RELEASE, ROOT, VALID_OTHER_CA, cargo_version, multi_signer_values, render,
                           value_sets)


def test_chart_app_version_is_the_crate_version():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == cargo_version()


@pytest.mark.parametrize("name", ["defaults", "multi-signer-all-on", "minimal-all-off", "network-policy-any-apiserver"])
@pytest.mark.parametrize("kube_version", ["v1.33.0", "v1.37.0"])
def test_lint_strict(name, kube_version, dev_ca):
    values = value_sets(dev_ca)[name]
    report = helm.lint(str(CHART), values, strict=True, namespace=NAMESPACE, kube_version=kube_version)
    assert report["errors"] == [], report
    # Severity 2 = warning, 3 = error; strict lint fails on both.
    assert [m for m in report["messages"] if m["severity"] >= 2] == [], report


def test_defaults_render_the_expected_objects(rendered_sets):
    r = rendered_sets["defaults"]
    assert r.kinds() == sorted([
        "ClusterRole", "ClusterRoleBinding", "ConfigMap", "Deployment", "PodDisruptionBudget", "Role",
        "RoleBinding", "Service", "ServiceAccount",
    ])
    deploy = r.one("Deployment")
    assert deploy["spec"]["replicas"] == 2
    assert r.config()["controller"]["leaderElection"]["enabled"] is True


def test_all_toggles_on_render_every_optional_object(rendered_sets):
    r = rendered_sets["multi-signer-all-on"]
    assert r.kinds() == sorted([
        "ClusterRole", "ClusterRole", "ClusterRole", "ClusterRoleBinding", "ConfigMap", "ConfigMap", "Deployment",
        "NetworkPolicy", "PodDisruptionBudget", "PrometheusRule", "Role", "RoleBinding", "Secret", "Service",
        "ServiceAccount", "ServiceMonitor",
    ])


def test_toggles_off_render_only_the_workload(rendered_sets):
    r = rendered_sets["minimal-all-off"]
    assert r.kinds() == ["ConfigMap", "Deployment", "Service"]
    spec = r.pod_spec()
    assert spec["serviceAccountName"] == "platform-signer"
    assert r.one("Deployment")["spec"]["replicas"] == 1
    assert r.config()["controller"]["leaderElection"]["enabled"] is False


CONFIG_KEYS = {"signers", "controller", "server", "log", "trustBundles", "audit"}
CONTROLLER_KEYS = {"qps", "burst", "workers", "leaderElection", "events"}
LEADER_KEYS = {"enabled", "leaseName", "namespace", "leaseDurationSeconds", "renewDeadlineSeconds", "retryPeriodSeconds"}
CA_KEYS = {"certFile", "keyFile", "chainFile", "passphraseFile"}
OTHER_CA_KEYS = {"name", "state", "certFile", "chainFile"}


def test_config_file_has_the_contract_shape(rendered_sets):
    for name, r in rendered_sets.items():
        cfg = r.config()
        assert set(cfg) == CONFIG_KEYS, name
        assert set(cfg["controller"]) == CONTROLLER_KEYS, name
        assert set(cfg["controller"]["leaderElection"]) == LEADER_KEYS, name
        assert cfg["server"] == {"listen": "0.0.0.0:8080"}, name
        assert set(cfg["log"]) == {"format", "level"}, name
        for signer in cfg["signers"]:
            assert set(signer) <= {"name", "ca", "otherCas", "policy"}, name
            # name only when set in the values (an upgrade must not roll signers without one).
            assert CA_KEYS <= set(signer["ca"]) <= CA_KEYS | {"name"}, name
            for other in signer.get("otherCas", []):
                assert set(other) == OTHER_CA_KEYS, name


def test_config_reflects_values(rendered_sets):
    cfg = rendered_sets["multi-signer-all-on"].config()
    assert [s["name"] for s in cfg["signers"]] == ["example.com/mtls", "example.com/web", "internal.example.org/spiffe"]
    assert cfg["controller"]["workers"] == 8
    assert cfg["controller"]["qps"] == 20.5
    assert cfg["controller"]["burst"] == 40
    assert cfg["controller"]["leaderElection"]["leaseName"] == "pki-signer"
    assert cfg["controller"]["leaderElection"]["namespace"] == NAMESPACE
    assert cfg["log"] == {"format": "text", "level": "debug"}
    assert cfg["signers"][1]["policy"] == {"note": "passed through verbatim"}
    assert "policy" not in cfg["signers"][0]
    assert cfg["signers"][2]["ca"]["name"] == "ca-2025"
    assert "name" not in cfg["signers"][0]["ca"], "the binary's default applies"
    # Default lease name is the release's full name.
    assert rendered_sets["defaults"].config()["controller"]["leaderElection"]["leaseName"] == f"{RELEASE}-csr-signer"


def test_audit_file_is_off_by_default_and_on_a_writable_volume_when_enabled(rendered_sets):
    cfg = rendered_sets["defaults"].config()
    assert cfg["audit"] == {"file": None, "maxSizeMegabytes": 100, "maxBackups": 10}
    assert "/var/lib/csr-signer/audit" not in _mounts(rendered_sets["defaults"])
    r = render({"audit": {"enabled": True, "maxSizeMegabytes": 20, "maxBackups": 3,
                          "volume": {"ephemeral": {"volumeClaimTemplate": {"spec": {
                              "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}}}}})
    assert r.config()["audit"] == {"file": "/var/lib/csr-signer/audit/audit.jsonl", "maxSizeMegabytes": 20,
                                   "maxBackups": 3}
    mount = _mounts(r)["/var/lib/csr-signer/audit"]
    assert not mount["_mount"].get("readOnly"), "the signer appends to it"
    assert "ephemeral" in mount
    assert render({"audit": {"enabled": True}}).pod_spec()["volumes"][-1] == {"name": "audit", "emptyDir": {}}


def _mounts(r):
    spec = r.pod_spec()
    container = spec["containers"][0]
    volumes = {v["name"]: v for v in spec["volumes"]}
    return {m["mountPath"]: volumes[m["name"]] | {"_mount": m} for m in container["volumeMounts"]}


def test_every_file_in_the_config_comes_from_the_right_secret(rendered_sets):
    r = rendered_sets["multi-signer-all-on"]
    cfg = r.config()
    mounts = _mounts(r)
    expected_secret = ["mtls-ca", f"{RELEASE}-csr-signer-ca-1", "spiffe-ca"]
    for i, signer in enumerate(cfg["signers"]):
        ca = signer["ca"]
        for key in ("certFile", "keyFile", "chainFile", "passphraseFile"):
            path = ca[key]
            if path is None:
                continue
            directory, filename = path.rsplit("/", 1)
            volume = mounts[directory]
            assert volume["secret"]["secretName"] == expected_secret[i], path
            assert volume["_mount"]["readOnly"] is True
            assert "subPath" not in volume["_mount"], "a subPath mount would never see a rotated Secret"
            assert volume["secret"]["defaultMode"] == 0o440
    assert cfg["signers"][0]["ca"]["chainFile"] is None
    assert cfg["signers"][1]["ca"]["chainFile"] == "/etc/csr-signer/ca/1/chain.crt"
    assert cfg["signers"][2]["ca"]["chainFile"] == "/etc/csr-signer/ca/2/ca-chain.crt"
    assert cfg["signers"][2]["ca"]["passphraseFile"] == "/etc/csr-signer/ca/2/passphrase"
    # The config itself is mounted where the args point.
    container = r.pod_spec()["containers"][0]
    assert container["args"][:3] == ["run", "--config", "/etc/csr-signer/config.yaml"]
    assert mounts["/etc/csr-signer/config.yaml"]["configMap"]["name"] == f"{RELEASE}-csr-signer"


def test_created_secret_holds_the_given_ca(rendered_sets, dev_ca):
    r = rendered_sets["multi-signer-all-on"]
    secret = r.one("Secret")
    assert secret["type"] == "kubernetes.io/tls"
    assert secret["metadata"]["name"] == f"{RELEASE}-csr-signer-ca-1"
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert data == {"tls.crt": dev_ca["certificate"], "tls.key": dev_ca["key"], "chain.crt": dev_ca["root"]}
    # The default (existing Secret) never puts key material in the release.
    assert rendered_sets["defaults"].all("Secret") == []


def test_container_args_and_env():
    r = render({"log": {"format": "json"}})
    c = r.pod_spec()["containers"][0]
    assert c["args"] == ["run", "--config", "/etc/csr-signer/config.yaml", "--log-format", "json"]
    env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in c["env"]}
    assert env == {"POD_NAME": "metadata.name", "POD_NAMESPACE": "metadata.namespace"}
    assert c["ports"] == [{"name": "http-metrics", "containerPort": 8080, "protocol": "TCP"}]
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http-metrics"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http-metrics"}
    assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]
    assert c["image"] == f"ghcr.io/csr-signer/csr-signer:{cargo_version()}"


def test_image_digest_wins_over_tag(rendered_sets):
    c = rendered_sets["multi-signer-all-on"].pod_spec()["containers"][0]
    assert c["image"] == "registry.example.com/pki/csr-signer@sha256:" + "ab" * 32


def test_topology_spread_default_and_override(rendered_sets):
    default = rendered_sets["defaults"].pod_spec()["topologySpreadConstraints"]
    assert default == [{
        "maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "ScheduleAnyway",
        "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "csr-signer", "app.kubernetes.io/instance": RELEASE}},
    }]
    custom = rendered_sets["multi-signer-all-on"].pod_spec()["topologySpreadConstraints"]
    assert custom[0]["topologyKey"] == "topology.kubernetes.io/zone"


def _checksum(values):
    return render(values).one("Deployment")["spec"]["template"]["metadata"]["annotations"]["checksum/config"]


def test_config_checksum_rolls_pods_only_when_config_changes():
    base = _checksum(None)
    assert re.fullmatch(r"[0-9a-f]{64}", base)
    assert _checksum({"controller": {"workers": 9}}) != base
    assert _checksum({"signers": [{"name": "example.com/other", "ca": {"existingSecret": "csr-signer-ca"}}]}) != base
    # Not part of the config file: no restart.
    assert _checksum({"resources": {"requests": {"cpu": "1"}}}) == base


def test_created_ca_change_rolls_pods(dev_ca):
    values = multi_signer_values(dev_ca)
    before = render(values).one("Deployment")["spec"]["template"]["metadata"]["annotations"]["checksum/ca"]
    changed = copy.deepcopy(values)
    changed["signers"][1]["ca"]["chain"] = ""
    after = render(changed).one("Deployment")["spec"]["template"]["metadata"]["annotations"]["checksum/ca"]
    assert before != after


def test_service_and_pdb(rendered_sets):
    r = rendered_sets["defaults"]
    svc = r.one("Service")
    assert svc["spec"]["ports"] == [{"name": "http-metrics", "port": 8080, "targetPort": "http-metrics", "protocol": "TCP"}]
    selector = r.one("Deployment")["spec"]["selector"]["matchLabels"]
    assert svc["spec"]["selector"] == selector
    pdb = r.one("PodDisruptionBudget")
    assert pdb["spec"] == {"maxUnavailable": 1, "selector": {"matchLabels": selector}}


def test_service_monitor(rendered_sets):
    r = rendered_sets["multi-signer-all-on"]
    sm = r.one("ServiceMonitor")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    service_labels = r.one("Service")["metadata"]["labels"]
    assert sm["spec"]["selector"]["matchLabels"].items() <= service_labels.items()
    assert sm["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    endpoint = sm["spec"]["endpoints"][0]
    assert endpoint["port"] == "http-metrics" and endpoint["path"] == "/metrics"
    # The alert rules select up{job="csr-signer"}.
    assert {"action": "replace", "targetLabel": "job", "replacement": "csr-signer"} in endpoint["relabelings"]


def test_network_policy(rendered_sets):
    r = rendered_sets["multi-signer-all-on"]
    np = r.one("NetworkPolicy")["spec"]
    assert np["policyTypes"] == ["Ingress", "Egress"]
    assert np["podSelector"]["matchLabels"] == r.one("Deployment")["spec"]["selector"]["matchLabels"]
    assert np["ingress"] == [{
        "ports": [{"port": "http-metrics", "protocol": "TCP"}],
        "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}],
    }]
    dns, api = np["egress"]
    assert sorted((p["port"], p["protocol"]) for p in dns["ports"]) == [(53, "TCP"), (53, "UDP")]
    assert dns["to"][0]["podSelector"] == {"matchLabels": {"k8s-app": "kube-dns"}}
    assert api == {"ports": [{"port": 6443, "protocol": "TCP"}],
                   "to": [{"ipBlock": {"cidr": "10.0.0.1/32"}}, {"ipBlock": {"cidr": "fd00::1/128"}}]}
    # No CIDRs configured: API ports to any destination, nothing else.
    any_api = rendered_sets["network-policy-any-apiserver"].one("NetworkPolicy")["spec"]["egress"][1]
    assert any_api == {"ports": [{"port": 443, "protocol": "TCP"}, {"port": 6443, "protocol": "TCP"}]}


def test_notes_tell_a_team_how_to_request_a_certificate(rendered_sets):
    notes = rendered_sets["multi-signer-all-on"].notes
    assert "signerName: example.com/mtls" in notes
    assert f"--clusterrole={RELEASE}-csr-signer-requester" in notes
    assert f"--clusterrole={RELEASE}-csr-signer-approver" in notes
    assert "kubectl certificate approve" in notes
    for name in ("example.com/mtls", "example.com/web", "internal.example.org/spiffe"):
        assert name in notes
    # The CSR manifest embedded in NOTES is valid YAML with the right signerName.
    block = notes.split("cat <<YAML | kubectl apply -f -\n", 1)[1].split("     YAML", 1)[0]
    csr = yaml.safe_load(block.replace("$(base64 -w0 < app.csr)", "cmVxdWVzdA=="))
    assert csr["kind"] == "CertificateSigningRequest" and csr["spec"]["signerName"] == "example.com/mtls"
    assert "rbac.requesterClusterRole=true" in rendered_sets["defaults"].notes


BAD_VALUES = {
    "wrong type": {"replicaCount": "two"},
    "unknown top-level key": {"replicas": 2},
    "unknown nested key": {"controller": {"worker": 4}},
    "signerName without a path": {"signers": [{"name": "example.com", "ca": {"existingSecret": "x"}}]},
    "signer without a CA": {"signers": [{"name": "example.com/mtls"}]},
    "no signers": {"signers": []},
    "create without certificate": {"signers": [{"name": "example.com/a", "ca": {"create": True, "key": "k"}}]},
    "existing Secret missing": {"signers": [{"name": "example.com/a", "ca": {"existingSecret": ""}}]},
    "bad log format": {"log": {"format": "xml"}},
    "bad interval": {"serviceMonitor": {"enabled": True, "interval": "30 seconds"}},
    "bad CIDR": {"networkPolicy": {"apiServer": {"cidrs": ["kubernetes.default"]}}},
    "policy not an object": {"signers": [{"name": "example.com/a", "ca": {"existingSecret": "x"}, "policy": "strict"}]},
    **{f"otherCas: {case}": {"signers": [{"name": "example.com/a", "ca": {"existingSecret": "x"},
                                          "otherCas": [VALID_OTHER_CA | other]}]}
       for case, other in {
           "unknown key": {"keyFile": "/ca/tls.key"},
           "state active": {"state": "active"},
           "state capitalised": {"state": "Published"},
           "name upper case": {"name": "Next"},
           "name with a dot": {"name": "ca.next"},
           "name ending in a dash": {"name": "next-"},
           "name of 64 characters": {"name": "n" * 64},
           "empty name": {"name": ""},
           "Secret and ConfigMap": {"existingConfigMap": "c"},
           "empty Secret name": {"existingSecret": ""},
           "certKey the private key": {"certKey": "tls.key"},
           "chainKey a private key": {"chainKey": "ca.key"},
           "certKey empty": {"certKey": ""},
           "certKey not a Secret key": {"certKey": "a/b"},
       }.items()},
    "otherCas: no source": {"signers": [{"name": "example.com/a", "ca": {"existingSecret": "x"},
                                         "otherCas": [{"name": "next", "state": "published"}]}]},
    "otherCas: no state": {"signers": [{"name": "example.com/a", "ca": {"existingSecret": "x"},
                                        "otherCas": [{"name": "next", "existingSecret": "n"}]}]},
    "otherCas not a list": {"signers": [{"name": "example.com/a", "ca": {"existingSecret": "x"},
                                         "otherCas": {"name": "next", "state": "published", "existingSecret": "n"}}]},
}


@pytest.mark.parametrize("case", sorted(BAD_VALUES))
def test_schema_rejects_bad_values(case):
    values = BAD_VALUES[case]
    with helm.Chart.load(str(CHART)) as chart:
        with pytest.raises(helm.HelmValuesError):
            chart.validate_schema(values)
        # An install renders through the same check.
        with pytest.raises(helm.HelmValuesError):
            chart.render(values, name=RELEASE, namespace=NAMESPACE)
    report = helm.lint(str(CHART), values, strict=True)
    assert report["errors"], f"lint accepted {case}"


def test_bad_values_file_is_rejected(tmp_path):
    """A values file as a user would write it (YAML, typo'd key, string replica count)."""
    text = "replicaCount: three\nsigner:\n  - name: example.com/mtls\n"
    values = helm.values_from_yaml(text)
    with helm.Chart.load(str(CHART)) as chart:
        with pytest.raises(helm.HelmValuesError) as err:
            chart.render(values, name=RELEASE, namespace=NAMESPACE)
    assert "replicaCount" in str(err.value) and "signer" in str(err.value)


def test_shipped_values_file_passes_the_schema():
    values = helm.values_from_yaml((CHART / "values.yaml").read_text())
    with helm.Chart.load(str(CHART)) as chart:
        chart.validate_schema(values)


@pytest.mark.parametrize("values, message", [
    ({"controller": {"leaderElection": {"enabled": False}}}, "requires controller.leaderElection.enabled"),
    ({"signers": [{"name": "example.com/a", "ca": {"existingSecret": "x"}},
                  {"name": "example.com/a", "ca": {"existingSecret": "y"}}]}, "configured twice"),
    ({"signers": [{"name": "example.com/a", "ca": {"create": True, "certificate": "-----BEGIN CERTIFICATE-----",
                                                   "key": "-----BEGIN PRIVATE KEY-----", "passphraseKey": "p"}}]},
     "passphraseKey needs an existing Secret"),
    ({"signers": [{"name": "example.com/a", "ca": {"existingSecret": "x"},
                   "otherCas": [{"name": "old", "state": "retiring", "existingSecret": "a"},
                                {"name": "old", "state": "published", "existingConfigMap": "b"}]}]},
     'signers[0].otherCas[1].name: "old" is listed twice'),
    ({"signers": [{"name": "example.com/a", "ca": {"existingSecret": "x"},
                   "otherCas": [{"name": "old", "state": "retiring", "existingSecret": "a", "chainKey": "tls.crt"}]}]},
     'certKey and chainKey name the same key "tls.crt"'),
    ({"signers": [{"name": "example.com/a", "ca": {"existingSecret": "x", "name": "ca-2027"},
                   "otherCas": [{"name": "ca-2027", "state": "retiring", "existingSecret": "a"}]}]},
     'signers[0].otherCas[0].name: "ca-2027" is the signing CA\'s name (ca.name)'),
    ({"signers": [{"name": "example.com/a", "ca": {"existingSecret": "x"},
                   "otherCas": [{"name": "active", "state": "retiring", "existingSecret": "a"}]}]},
     'signers[0].otherCas[0].name: "active" is the signing CA\'s name (ca.name)'),
])
def test_templates_refuse_unsafe_combinations(values, message):
    with helm.Chart.load(str(CHART)) as chart:
        with pytest.raises(helm.HelmRenderError) as err:
            chart.render(values, name=RELEASE, namespace=NAMESPACE)
    assert message in str(err.value)


def test_values_and_schema_cover_the_same_keys():
    """No undocumented knob (a schema key missing from values.yaml) and no unchecked one (the reverse)."""
    import json

    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    def walk(v, s, path):
        missing = []
        if not isinstance(v, dict) or s.get("type") != "object" or "properties" not in s:
            return missing
        for key in v:
            if key not in s["properties"]:
                missing.append(f"{path}{key} (in values.yaml, not in the schema)")
            else:
                missing += walk(v[key], s["properties"][key], f"{path}{key}.")
        for key in s["properties"]:
            if key not in v and key != "global":
                missing.append(f"{path}{key} (in the schema, not in values.yaml)")
        return missing

    assert walk(values, schema, "") == []


def test_packaged_chart_carries_the_rules_and_dashboard(tmp_path):
    """`helm package` output (what a repository serves) still renders the alert rules and the dashboard."""
    archive = helm.package(str(CHART), destination=str(tmp_path))
    assert archive.endswith(f"csr-signer-{yaml.safe_load((CHART / 'Chart.yaml').read_text())['version']}.tgz")
    with helm.Chart.load_archive(Path(archive).read_bytes()) as chart:
        out = chart.render({"prometheusRule": {"enabled": True}, "grafanaDashboard": {"enabled": True}},
                           name=RELEASE, namespace=NAMESPACE)
    rule = yaml.safe_load(out["csr-signer/templates/prometheusrule.yaml"])
    assert rule["spec"] == yaml.safe_load((ROOT / "alerts" / "csr-signer-rules.yaml").read_text())
    dash = yaml.safe_load(out["csr-signer/templates/grafana-dashboard.yaml"])
    assert '"uid": "csr-signer"' in dash["data"]["csr-signer.json"]
