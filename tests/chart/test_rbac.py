"""The rendered RBAC is exactly what the signer needs (k8s-csr-rules.md §4): compared as a whole, not sampled."""

from __future__ import annotations

from chart_support import NAMESPACE, RELEASE, render

FULLNAME = f"{RELEASE}-csr-signer"


def signer_rules(signer_names, trust_bundles=True, config_maps=False, pods=False, approves=()):
    rules = [
        {"apiGroups": ["certificates.k8s.io"], "resources": ["certificatesigningrequests"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["certificates.k8s.io"], "resources": ["certificatesigningrequests/status"], "verbs": ["patch"]},
    ]
    if pods:
        # PodCertificateRequests (src/controller/pcr.rs): watched in every namespace, re-read after a 409 or
        # through v1beta1 for a legacy key, status written by merge patch.
        rules += [
            {"apiGroups": ["certificates.k8s.io"], "resources": ["podcertificaterequests"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": ["certificates.k8s.io"], "resources": ["podcertificaterequests/status"], "verbs": ["patch"]},
        ]
    rules += [
        {"apiGroups": ["certificates.k8s.io"], "resources": ["signers"], "resourceNames": signer_names,
         "verbs": ["sign", "attest"] if trust_bundles else ["sign"]},
    ]
    if approves:
        # Auto-approval (src/controller/approve.rs): "approve" on exactly the signers that approve, the merge
        # patch on /approval, and the SubjectAccessReview that confirms the requester first.
        rules += [
            {"apiGroups": ["certificates.k8s.io"], "resources": ["signers"], "resourceNames": list(approves),
             "verbs": ["approve"]},
            {"apiGroups": ["certificates.k8s.io"], "resources": ["certificatesigningrequests/approval"],
             "verbs": ["patch"]},
            {"apiGroups": ["authorization.k8s.io"], "resources": ["subjectaccessreviews"], "verbs": ["create"]},
        ]
    if trust_bundles:
        # ClusterTrustBundle publishing (src/trust/publish.rs); create is checked inside the apply that creates.
        rules.append({"apiGroups": ["certificates.k8s.io"], "resources": ["clustertrustbundles"],
                      "verbs": ["get", "list", "create", "patch", "delete"]})
    if config_maps:
        # Trust ConfigMaps (src/trust/configmaps.rs): the selected namespaces are listed and watched; a ConfigMap
        # is read before it is applied or deleted, ours are listed, create is checked inside the creating apply.
        rules.append({"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list", "watch"]})
        rules.append({"apiGroups": [""], "resources": ["configmaps"],
                      "verbs": ["get", "list", "create", "patch", "delete"]})
    # The controller records core v1 Events (src/controller/events.rs), create only. That these are exactly
    # the verbs the signer uses is judged on the real apiserver by tests/real_chart_rbac.rs.
    rules.append({"apiGroups": [""], "resources": ["events"], "verbs": ["create"]})
    return rules


def lease_rules(lease_name):
    return [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "resourceNames": [lease_name], "verbs": ["get", "update"]},
    ]


def assert_no_wildcards(role):
    for rule in role["rules"]:
        for field in ("apiGroups", "resources", "verbs", "resourceNames"):
            for value in rule.get(field, []):
                assert "*" not in value, (role["metadata"]["name"], rule)


def test_signer_cluster_role_is_exact_for_the_default_signer():
    r = render(None)
    role = r.one("ClusterRole", FULLNAME)
    assert role["rules"] == signer_rules(["example.com/mtls"])
    assert_no_wildcards(role)


def test_signer_cluster_role_names_every_configured_signer_and_nothing_else(rendered_sets):
    r = rendered_sets["multi-signer-all-on"]
    role = r.one("ClusterRole", FULLNAME)
    assert role["rules"] == signer_rules(["example.com/mtls", "example.com/web", "internal.example.org/spiffe"],
                                         config_maps=True)
    assert_no_wildcards(role)


def test_without_trust_bundles_there_is_no_attest_and_no_bundle_access():
    r = render({"trustBundles": {"enabled": False}})
    role = r.one("ClusterRole", FULLNAME)
    assert role["rules"] == signer_rules(["example.com/mtls"], trust_bundles=False)
    assert r.config()["trustBundles"]["enabled"] is False


def test_pod_certificate_access_only_when_a_signer_signs_pods():
    signers = [{"name": "example.com/mtls", "ca": {"existingSecret": "a"}},
               {"name": "example.com/pods", "ca": {"existingSecret": "b"},
                "podCertificates": {"enabled": True}}]
    r = render({"signers": signers})
    role = r.one("ClusterRole", FULLNAME)
    assert role["rules"] == signer_rules(["example.com/mtls", "example.com/pods"], pods=True)
    assert_no_wildcards(role)
    # The signer's config carries the setting that makes the engine sign pods.
    assert r.config()["signers"][1]["podCertificates"] == {"enabled": True}
    assert "podCertificates" not in r.config()["signers"][0]
    # Configured but off, or absent: no access to PodCertificateRequests.
    signers[1]["podCertificates"]["enabled"] = False
    role = render({"signers": signers}).one("ClusterRole", FULLNAME)
    assert role["rules"] == signer_rules(["example.com/mtls", "example.com/pods"])


def test_approval_rights_only_for_the_signers_that_auto_approve():
    rule = {"name": "team-a", "serviceAccountNamespaces": ["team-a"]}
    signers = [{"name": "example.com/mtls", "ca": {"existingSecret": "a"}},
               {"name": "example.com/auto", "ca": {"existingSecret": "b"},
                "autoApprove": {"enabled": True, "rules": [rule]}}]
    r = render({"signers": signers})
    role = r.one("ClusterRole", FULLNAME)
    assert role["rules"] == signer_rules(["example.com/mtls", "example.com/auto"], approves=["example.com/auto"])
    assert_no_wildcards(role)
    assert r.config()["signers"][1]["autoApprove"] == {"enabled": True, "rules": [rule]}
    assert "autoApprove" not in r.config()["signers"][0]
    signers[1]["autoApprove"]["enabled"] = False
    role = render({"signers": signers}).one("ClusterRole", FULLNAME)
    assert role["rules"] == signer_rules(["example.com/mtls", "example.com/auto"])


def test_trust_configmaps_alone_grant_namespaces_and_configmaps_but_no_attest():
    r = render({"trustBundles": {"enabled": False, "configMaps": {
        "enabled": True, "namespaceSelector": {"matchLabels": {"trust": "yes"}}}}})
    role = r.one("ClusterRole", FULLNAME)
    assert role["rules"] == signer_rules(["example.com/mtls"], trust_bundles=False, config_maps=True)


def test_sign_is_never_unrestricted():
    for values in (None, {"signers": [{"name": "a.example/x", "ca": {"existingSecret": "s"}}]}):
        r = render(values)
        for role in r.all("ClusterRole") + r.all("Role"):
            for rule in role["rules"]:
                if "sign" in rule["verbs"] or "approve" in rule["verbs"]:
                    assert rule["resources"] == ["signers"]
                    assert rule.get("resourceNames"), rule
                    assert "resourceName" not in rule


def test_bindings_point_at_the_service_account(rendered_sets):
    r = rendered_sets["defaults"]
    sa = r.one("ServiceAccount")
    subject = {"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": NAMESPACE}
    crb = r.one("ClusterRoleBinding", FULLNAME)
    assert crb["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": FULLNAME}
    assert crb["subjects"] == [subject]
    rb = r.one("RoleBinding")
    assert rb["metadata"]["namespace"] == NAMESPACE
    assert rb["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": f"{FULLNAME}-leader-election"}
    assert rb["subjects"] == [subject]
    assert r.pod_spec()["serviceAccountName"] == sa["metadata"]["name"]


def test_lease_role_is_namespaced_and_limited_to_our_lease(rendered_sets):
    for name, r in rendered_sets.items():
        if name == "minimal-all-off":
            continue
        role = r.one("Role")
        assert role["metadata"]["namespace"] == NAMESPACE
        lease = r.config()["controller"]["leaderElection"]["leaseName"]
        assert role["rules"] == lease_rules(lease), name
        assert_no_wildcards(role)


def test_opt_in_roles_are_off_by_default(rendered_sets):
    names = {role["metadata"]["name"] for role in rendered_sets["defaults"].all("ClusterRole")}
    assert names == {FULLNAME}


def test_requester_and_approver_roles(rendered_sets):
    r = rendered_sets["multi-signer-all-on"]
    requester = r.one("ClusterRole", f"{FULLNAME}-requester")
    assert requester["rules"] == [
        {"apiGroups": ["certificates.k8s.io"], "resources": ["certificatesigningrequests"],
         "verbs": ["create", "get", "list", "watch"]},
    ]
    approver = r.one("ClusterRole", f"{FULLNAME}-approver")
    assert approver["rules"] == [
        {"apiGroups": ["certificates.k8s.io"], "resources": ["certificatesigningrequests"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["certificates.k8s.io"], "resources": ["certificatesigningrequests/approval"], "verbs": ["update"]},
        {"apiGroups": ["certificates.k8s.io"], "resources": ["signers"],
         "resourceNames": ["example.com/mtls", "example.com/web", "internal.example.org/spiffe"], "verbs": ["approve"]},
    ]
    assert_no_wildcards(requester)
    assert_no_wildcards(approver)


def test_rbac_off_renders_no_rbac(rendered_sets):
    r = rendered_sets["minimal-all-off"]
    assert not [o for o in r.objects if o["apiVersion"].startswith("rbac.authorization.k8s.io/")]
