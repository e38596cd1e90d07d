"""Renders the chart with the real Helm library and prints the chosen kinds as one JSON v1 List, so tests in
other languages can apply exactly what `helm install` would create (used by the real-apiserver tests to give
the signer the chart's RBAC).

    python render.py --release R --namespace NS --signer example.com/mtls [--signer ...] \
        [--lease-name L] [--no-trust-bundles] [--config-maps] [--pod-certificates] [--kind ClusterRole ...]
"""

from __future__ import annotations

import argparse
import sys

import json

from chart_support import render


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--release", required=True)
    p.add_argument("--namespace", required=True)
    p.add_argument("--signer", action="append", required=True)
    p.add_argument("--lease-name", default=None)
    p.add_argument("--no-trust-bundles", action="store_true", help="render with trustBundles.enabled=false")
    p.add_argument("--config-maps", action="store_true",
                   help="render with trustBundles.configMaps enabled (namespaces labelled csr-signer-test/trust=yes)")
    p.add_argument("--pod-certificates", action="store_true",
                   help="every signer signs PodCertificateRequests (podCertificates.enabled=true)")
    p.add_argument("--auto-approve", action="store_true",
                   help="every signer approves its own CSRs (autoApprove.enabled=true, one rule)")
    p.add_argument("--kind", action="append",
                   default=None, help="kinds to print (default: ServiceAccount and the RBAC kinds)")
    a = p.parse_args()
    kinds = a.kind or ["ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"]
    values = {
        "signers": [{"name": s, "ca": {"existingSecret": "unused"},
                     **({"podCertificates": {"enabled": True}} if a.pod_certificates else {}),
                     **({"autoApprove": {"enabled": True, "rules": [{"name": "team-a", "serviceAccountNamespaces": ["team-a"]}]}}
                        if a.auto_approve else {})}
                    for s in a.signer],
        "controller": {"leaderElection": {"enabled": True, **({"leaseName": a.lease_name} if a.lease_name else {})}},
        "trustBundles": {
            "enabled": not a.no_trust_bundles,
            **({"configMaps": {"enabled": True, "namespaceSelector": {"matchLabels": {"csr-signer-test/trust": "yes"}}}}
               if a.config_maps else {}),
        },
    }
    objects = [o for o in render(values, name=a.release, namespace=a.namespace).clean_objects() if o["kind"] in kinds]
    # A v1 List, so `kubectl apply -f -` takes it as it is.
    json.dump({"apiVersion": "v1", "kind": "List", "items": objects}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
