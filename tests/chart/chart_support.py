"""Shared helpers for the chart, alert and dashboard tests: the chart, a renderer built on the real Helm
library (helm-python-sdk), and the value sets the tests render."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import helm_python as helm
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "csr-signer"
RELEASE = "rel"
NAMESPACE = "pki"


class Rendered:
    """One render of the chart: the manifests by template, parsed into Kubernetes objects."""

    def __init__(self, manifests: dict[str, str]):
        self.manifests = manifests
        self.objects: list[dict[str, Any]] = []
        for template, text in manifests.items():
            if template.endswith("NOTES.txt"):
                continue
            for doc in yaml.safe_load_all(text):
                if doc:
                    doc.setdefault("__template__", template)
                    self.objects.append(doc)

    @property
    def notes(self) -> str:
        return next(v for k, v in self.manifests.items() if k.endswith("NOTES.txt"))

    def clean_objects(self) -> list[dict[str, Any]]:
        """The objects without the test's bookkeeping key (what would be sent to the API server)."""
        out = []
        for obj in self.objects:
            obj = dict(obj)
            obj.pop("__template__", None)
            out.append(obj)
        return out

    def kinds(self) -> list[str]:
        return sorted(o["kind"] for o in self.objects)

    def all(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def one(self, kind: str, name: str | None = None) -> dict[str, Any]:
        found = [o for o in self.all(kind) if name is None or o["metadata"]["name"] == name]
        assert len(found) == 1, f"expected one {kind} {name or ''}, found {[o['metadata']['name'] for o in found]}"
        return found[0]

    def config_text(self) -> str:
        found = [cm for cm in self.all("ConfigMap") if "config.yaml" in cm.get("data", {})]
        assert len(found) == 1, found
        return found[0]["data"]["config.yaml"]

    def config(self) -> dict[str, Any]:
        return yaml.safe_load(self.config_text())

    def pod_spec(self) -> dict[str, Any]:
        return self.one("Deployment")["spec"]["template"]["spec"]


class MountError(Exception):
    """What makes the kubelet leave a pod in ContainerCreating: a missing Secret/ConfigMap or key."""


def mount_volumes(r: Rendered, objects: dict[tuple[str, str], dict[str, bytes]], root: Path) -> Path:
    """Lays out the container's volumeMounts under `root` as the kubelet would, from `objects` ({("Secret" or
    "ConfigMap", name): {key: bytes}}): a secret/configMap volume gets every key of its object, or only its
    `items` (key -> path); a projected volume the items of each source; files get the volume's defaultMode.
    Writes the rendered config file with its /etc/csr-signer/ paths moved under `root` and returns its path."""
    spec = r.pod_spec()
    volumes = {v["name"]: v for v in spec["volumes"]}

    def files(kind: str, ref: dict[str, Any]) -> dict[str, bytes]:
        name = ref.get("name") or ref.get("secretName")
        if (kind, name) not in objects:
            raise MountError(f"{kind} {name} does not exist")
        data = objects[(kind, name)]
        if "items" not in ref:
            return dict(data)
        out = {}
        for item in ref["items"]:
            if item["key"] not in data:
                raise MountError(f"{kind} {name} has no key {item['key']}")
            out[item["path"]] = data[item["key"]]
        return out

    for m in spec["containers"][0]["volumeMounts"]:
        v = volumes[m["name"]]
        target = root / m["mountPath"].lstrip("/")
        if "subPath" in m:
            continue  # the config file, written below with its paths moved
        if "secret" in v:
            laid, mode = files("Secret", v["secret"]), v["secret"].get("defaultMode", 0o644)
        elif "configMap" in v:
            laid, mode = files("ConfigMap", v["configMap"]), v["configMap"].get("defaultMode", 0o644)
        elif "projected" in v:
            laid, mode = {}, v["projected"].get("defaultMode", 0o644)
            for source in v["projected"]["sources"]:
                (kind, ref), = [(k, source[k]) for k in ("secret", "configMap") if k in source]
                laid |= files("Secret" if kind == "secret" else "ConfigMap", ref)
        else:
            target.mkdir(parents=True, exist_ok=True)  # emptyDir and the like
            continue
        for path, data in laid.items():
            f = target / path
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_bytes(data)
            f.chmod(mode)
    config = root / "config.yaml"
    config.write_text(r.config_text().replace("/etc/csr-signer/", f"{root}/etc/csr-signer/"))
    return config


def render(values: dict[str, Any] | None = None, name: str = RELEASE, namespace: str = NAMESPACE) -> Rendered:
    with helm.Chart.load(str(CHART)) as chart:
        return Rendered(chart.render(values, name=name, namespace=namespace))


def multi_signer_values(ca: dict[str, str]) -> dict[str, Any]:
    """Three signers (existing Secret with a published next CA, created from values with a chain, existing with
    chain + passphraseKey and two retiring CAs from a ConfigMap and a Secret), every optional object switched on."""
    return {
        "fullnameOverride": "",
        "replicaCount": 3,
        "image": {"repository": "registry.example.com/pki/csr-signer", "digest": "sha256:" + "ab" * 32},
        "imagePullSecrets": [{"name": "regcred"}],
        "signers": [
            {"name": "example.com/mtls", "ca": {"existingSecret": "mtls-ca"},
             "otherCas": [{"name": "next", "state": "published", "existingSecret": "mtls-ca-next",
                           "chainKey": "chain.crt"}]},
            {
                "name": "example.com/web",
                "ca": {"create": True, "certificate": ca["certificate"], "key": ca["key"], "chain": ca["root"]},
                "policy": {"note": "passed through verbatim"},
            },
            {
                "name": "internal.example.org/spiffe",
                "ca": {"existingSecret": "spiffe-ca", "chainKey": "ca-chain.crt", "passphraseKey": "passphrase",
                       "name": "ca-2025"},
                "otherCas": [{"name": "previous", "state": "retiring", "existingConfigMap": "spiffe-ca-previous",
                              "certKey": "ca.crt", "chainKey": "ca-chain.crt"},
                             {"name": "old-2024", "state": "retiring", "existingSecret": "spiffe-ca-2024"}],
            },
        ],
        "controller": {"workers": 8, "qps": 20.5, "burst": 40,
                       "leaderElection": {"enabled": True, "leaseName": "pki-signer"}},
        "log": {"format": "text", "level": "debug"},
        "trustBundles": {"configMaps": {"enabled": True, "name": "pki-trust", "namespaceSelector": {
            "matchLabels": {"pki.example.com/trust": "true"},
            "matchExpressions": [{"key": "environment", "operator": "In", "values": ["prod", "staging"]}]}}},
        "rbac": {"create": True, "requesterClusterRole": True, "approverClusterRole": True},
        "serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
        "prometheusRule": {"enabled": True, "labels": {"release": "kube-prometheus-stack"},
                           "runbookBaseUrl": "https://wiki.example.com/csr-signer/runbook"},
        "grafanaDashboard": {"enabled": True, "namespace": "monitoring",
                             "annotations": {"grafana_folder": "PKI"}},
        "networkPolicy": {
            "enabled": True,
            "apiServer": {"cidrs": ["10.0.0.1/32", "fd00::1/128"], "ports": [6443]},
            "metrics": {"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]},
        },
        "podDisruptionBudget": {"enabled": True, "maxUnavailable": 1},
        "topologySpreadConstraints": [{
            "maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "DoNotSchedule",
            "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "csr-signer"}},
        }],
        "priorityClassName": "system-cluster-critical",
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "pki", "operator": "Exists", "effect": "NoSchedule"}],
    }


# An otherCas entry the schema accepts (test_rotation.py checks); each rejected case in test_chart.py differs
# from it in one field.
VALID_OTHER_CA: dict[str, Any] = {"name": "next", "state": "published", "existingSecret": "n"}

MINIMAL_VALUES: dict[str, Any] = {
    # Everything optional off: one replica without leader election, bring-your-own ServiceAccount and RBAC.
    "replicaCount": 1,
    "controller": {"leaderElection": {"enabled": False}},
    "serviceAccount": {"create": False, "name": "platform-signer"},
    "rbac": {"create": False},
    "podDisruptionBudget": {"enabled": False},
    "serviceMonitor": {"enabled": False},
    "prometheusRule": {"enabled": False},
    "grafanaDashboard": {"enabled": False},
    "networkPolicy": {"enabled": False},
}


def value_sets(ca: dict[str, str]) -> dict[str, dict[str, Any] | None]:
    return {
        "defaults": None,
        "multi-signer-all-on": multi_signer_values(ca),
        "minimal-all-off": copy.deepcopy(MINIMAL_VALUES),
        "network-policy-any-apiserver": {"networkPolicy": {"enabled": True}},
    }





def cargo_version() -> str:
    import tomllib

    return tomllib.loads((ROOT / "Cargo.toml").read_text())["package"]["version"]


def find_binary() -> Path | None:
    """$CSR_SIGNER_BIN, else target/release, else target/debug."""
    explicit = os.environ.get("CSR_SIGNER_BIN")
    if explicit:
        assert os.access(explicit, os.X_OK), f"CSR_SIGNER_BIN={explicit} is not an executable"
        return Path(explicit)
    for profile in ("release", "debug"):
        candidate = ROOT / "target" / profile / "csr-signer"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None
