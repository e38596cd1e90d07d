"""The pod meets the restricted Pod Security Standard, checked field by field (the control list of
https://kubernetes.io/docs/concepts/security/pod-security-standards/, baseline + restricted), plus a read-only
root filesystem and the token policy."""

from __future__ import annotations

import pytest

from chart_support import render

ALLOWED_VOLUME_TYPES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"}


def containers(spec):
    return spec.get("initContainers", []) + spec["containers"] + spec.get("ephemeralContainers", [])


@pytest.fixture(params=["defaults", "multi-signer-all-on", "minimal-all-off"])
def pod(request, rendered_sets):
    return rendered_sets[request.param].pod_spec()


def test_host_namespaces(pod):
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        assert pod.get(field, False) is False, field


def test_no_privileged_containers(pod):
    for c in containers(pod):
        assert c.get("securityContext", {}).get("privileged", False) is False, c["name"]


def test_capabilities_drop_all_add_none(pod):
    for c in containers(pod):
        caps = c["securityContext"]["capabilities"]
        assert caps["drop"] == ["ALL"], c["name"]
        assert set(caps.get("add", [])) <= {"NET_BIND_SERVICE"}, c["name"]
        assert not caps.get("add"), "the signer binds 8080, it needs no capability"


def test_volume_types(pod):
    for v in pod["volumes"]:
        types = set(v) - {"name"}
        assert types <= ALLOWED_VOLUME_TYPES, v
        assert "hostPath" not in v


def test_no_host_ports(pod):
    for c in containers(pod):
        for port in c.get("ports", []):
            assert port.get("hostPort", 0) == 0, port


def test_apparmor_selinux_proc_sysctls(pod):
    for ctx in [pod.get("securityContext", {})] + [c.get("securityContext", {}) for c in containers(pod)]:
        apparmor = ctx.get("appArmorProfile")
        assert apparmor is None or apparmor["type"] in {"RuntimeDefault", "Localhost"}
        se = ctx.get("seLinuxOptions", {})
        assert se.get("type", "") in {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}
        assert "user" not in se and "role" not in se
        assert ctx.get("procMount", "Default") == "Default"
    assert not pod.get("securityContext", {}).get("sysctls")


def test_seccomp_runtime_default(pod):
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for c in containers(pod):
        profile = c["securityContext"].get("seccompProfile", pod["securityContext"]["seccompProfile"])
        assert profile["type"] in {"RuntimeDefault", "Localhost"}


def test_no_privilege_escalation(pod):
    for c in containers(pod):
        assert c["securityContext"]["allowPrivilegeEscalation"] is False, c["name"]


def test_runs_as_non_root(pod):
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532
    for c in containers(pod):
        ctx = c["securityContext"]
        assert ctx.get("runAsNonRoot", True) is True
        assert ctx.get("runAsUser", pod["securityContext"]["runAsUser"]) != 0
        assert ctx.get("runAsGroup", pod["securityContext"].get("runAsGroup", 1)) != 0


def test_read_only_root_filesystem(pod):
    for c in containers(pod):
        assert c["securityContext"]["readOnlyRootFilesystem"] is True


def test_token_only_for_the_signer_pods(rendered_sets):
    r = rendered_sets["defaults"]
    # The ServiceAccount does not hand out tokens by default; the signer's pod opts in because it calls the API.
    assert r.one("ServiceAccount")["automountServiceAccountToken"] is False
    assert r.pod_spec()["automountServiceAccountToken"] is True


def test_checks_have_teeth():
    """Flip one control and the matching check fails."""
    pod = render(None).pod_spec()
    pod["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
    with pytest.raises(AssertionError):
        test_no_privilege_escalation(pod)
    pod["containers"][0]["securityContext"]["capabilities"]["add"] = ["NET_ADMIN"]
    with pytest.raises(AssertionError):
        test_capabilities_drop_all_add_none(pod)
    pod["volumes"].append({"name": "host", "hostPath": {"path": "/"}})
    with pytest.raises(AssertionError):
        test_volume_types(pod)
