"""The staged CA rotation with the chart (docs/helm.md, "Rotating the CA"): `otherCas` values become config
entries whose files come from certificate-only mounts, each step of the guide rolls the pods, and the guide's
own commands (`csr-signer ca init`, `kubectl create secret|configmap`) and values give pods whose config
`csr-signer check-config` accepts, with the CA keys mounted only where they sign, and that, run one step after
the other on the local API, publish the bundles the guide describes with no gap for a client that trusts only
the bundle."""

from __future__ import annotations

import base64
import json
import os
import re
import shlex
import shutil
import subprocess
import time
from pathlib import Path

import helm_python as helm
import pytest
import yaml

from chart_support import (CHART, ROOT, VALID_OTHER_CA, MountError, find_binary, mount_volumes, multi_signer_values,
                           render)

GUIDE = ROOT / "docs" / "helm.md"
RELEASE, NAMESPACE = "csr-signer", "pki"  # the guide's names
PRIVATE_KEY_NAME = re.compile(r"(^|[-._])key$")

START = {"signers": [{"name": "example.com/mtls", "ca": {"existingSecret": "csr-signer-ca"}}]}
STEP_1 = "step 1: publish the next CA"
STEP_3 = "step 3: the next CA signs, the old one retires"
STEP_3_CONFIGMAP = "step 3 with the old certificate in a ConfigMap"
STEP_5 = "step 5: the old CA is gone"


def section(heading: str) -> str:
    text = GUIDE.read_text()
    start = text.index(heading)
    return text[start:text.index("\n## ", start)]


def guide_steps() -> dict[str, dict]:
    """The rotation's values blocks, by their title line (`# my-values.yaml, <title>`)."""
    steps = {}
    for block in re.findall(r"```yaml\n(.*?)```", section("## 7. Rotating the CA"), re.S):
        title = block.splitlines()[0]
        assert title.startswith("# my-values.yaml, "), title
        steps[title.removeprefix("# my-values.yaml, ")] = yaml.safe_load(block)
    return steps


def shell_commands(text: str, prefix: str) -> list[str]:
    """The commands of the ```sh blocks in `text` that start with `prefix` (continuations joined, comments cut)."""
    out = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s+#\s.*$", "", line).strip()
            if line.startswith(prefix):
                out.append(line)
    return out


def pod_template(values):
    return render(values, name=RELEASE, namespace=NAMESPACE).one("Deployment")["spec"]["template"]


def test_the_guide_has_the_rotation_steps():
    assert list(guide_steps()) == [STEP_1, STEP_3, STEP_5, STEP_3_CONFIGMAP]


@pytest.mark.parametrize("other", [
    VALID_OTHER_CA,
    {"name": "ca-2027", "state": "retiring", "existingConfigMap": "old.ca", "certKey": "ca.crt",
     "chainKey": "root.pem"},
    {"name": "x", "state": "published", "existingSecret": "n", "certKey": "tls.crt", "chainKey": ""},
])
def test_the_schema_accepts_valid_entries(other):
    """The counterpart of the otherCas rejections in test_chart.py: they differ from the first entry in one field."""
    values = {"signers": [{"name": "example.com/a", "ca": {"existingSecret": "x"}, "otherCas": [other]}]}
    with helm.Chart.load(str(CHART)) as chart:
        chart.validate_schema(chart.merge_values(values))
    assert render(values).config()["signers"][0]["otherCas"][0]["name"] == other["name"]


def test_notes_list_the_other_cas_and_warn_when_nothing_publishes_them():
    values = {"signers": [{"name": "example.com/a", "ca": {"existingSecret": "x"}, "otherCas": [
        {"name": "next", "state": "published", "existingSecret": "a-next"},
        {"name": "old", "state": "retiring", "existingConfigMap": "a-old"}]}]}
    notes = render(values).notes
    assert "also trusted, not signing: next (published; certificate from Secret a-next)" in notes
    assert "also trusted, not signing: old (retiring; certificate from ConfigMap a-old)" in notes
    assert "trustBundles.enabled is false" not in notes
    off = render(values | {"trustBundles": {"enabled": False}}).notes
    assert "example.com/a lists otherCas but trustBundles.enabled is false" in off
    assert "trustBundles.enabled is false" not in render({"trustBundles": {"enabled": False}}).notes


def test_other_cas_become_config_entries_backed_by_certificate_only_mounts(rendered_sets, dev_ca):
    r = rendered_sets["multi-signer-all-on"]
    values = multi_signer_values(dev_ca)
    spec = r.pod_spec()
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: m for m in spec["containers"][0]["volumeMounts"]}
    seen = 0
    for i, (signer, cfg) in enumerate(zip(values["signers"], r.config()["signers"])):
        others = signer.get("otherCas", [])
        if not others:
            assert "otherCas" not in cfg and f"other-cas-{i}" not in volumes
            continue
        mount = mounts[f"/etc/csr-signer/other-cas/{i}"]
        assert mount["readOnly"] is True and "subPath" not in mount
        sources = volumes[mount["name"]]["projected"]["sources"]
        assert len(sources) == len(others) == len(cfg["otherCas"])
        for want, got, source in zip(others, cfg["otherCas"], sources):
            directory = f"/etc/csr-signer/other-cas/{i}/{want['name']}"
            assert got == {"name": want["name"], "state": want["state"], "certFile": f"{directory}/ca.crt",
                           "chainFile": f"{directory}/chain.crt" if want.get("chainKey") else None}
            kind = "secret" if "existingSecret" in want else "configMap"
            assert list(source) == [kind]
            assert source[kind]["name"] == want.get("existingSecret", want.get("existingConfigMap"))
            items = [{"key": want.get("certKey", "tls.crt"), "path": f"{want['name']}/ca.crt"}]
            if want.get("chainKey"):
                items.append({"key": want["chainKey"], "path": f"{want['name']}/chain.crt"})
            assert source[kind]["items"] == items
            seen += 1
    assert seen == 3


@pytest.mark.parametrize("name", ["defaults", "multi-signer-all-on", "minimal-all-off"])
def test_no_projected_source_mounts_a_whole_object_or_a_key(name, rendered_sets):
    for volume in rendered_sets[name].pod_spec()["volumes"]:
        for source in volume.get("projected", {}).get("sources", []):
            for ref in source.values():
                assert ref.get("items"), f"{volume['name']} mounts every key of {ref['name']}"
                for item in ref["items"]:
                    assert not PRIVATE_KEY_NAME.search(item["key"]), item


def test_signers_without_other_cas_render_as_before():
    """No otherCas key in the config, no volume, and the same checksum as before the feature: upgrading the chart
    does not roll the pods of a release that does not rotate."""
    explicit = {"signers": [dict(START["signers"][0], otherCas=[])]}
    for values in (START, explicit):
        r = render(values, name=RELEASE, namespace=NAMESPACE)
        assert "otherCas" not in r.config()["signers"][0]
        assert not [v for v in r.pod_spec()["volumes"] if v["name"].startswith("other-cas")]
    assert pod_template(START) == pod_template(explicit)


def test_each_signer_has_its_own_directory():
    values = {"signers": [
        {"name": "example.com/a", "ca": {"existingSecret": "a"},
         "otherCas": [{"name": "next", "state": "published", "existingSecret": "a-next"}]},
        {"name": "example.com/b", "ca": {"existingSecret": "b"},
         "otherCas": [{"name": "next", "state": "published", "existingConfigMap": "b-next"}]},
    ]}
    r = render(values)
    assert [s["otherCas"][0]["certFile"] for s in r.config()["signers"]] == [
        "/etc/csr-signer/other-cas/0/next/ca.crt", "/etc/csr-signer/other-cas/1/next/ca.crt"]


def test_every_step_of_the_guide_rolls_the_pods():
    steps = guide_steps()
    order = [START, steps[STEP_1], steps[STEP_3], steps[STEP_5]]
    templates = [pod_template(v) for v in order]
    for before, after in zip(templates, templates[1:]):
        assert before["metadata"]["annotations"]["checksum/config"] != after["metadata"]["annotations"]["checksum/config"]
    # Moving the retiring certificate to a ConfigMap keeps the config file as it is (same name, state and paths)
    # but changes where the files come from: the pods roll all the same.
    secret, configmap = pod_template(steps[STEP_3]), pod_template(steps[STEP_3_CONFIGMAP])
    assert secret["metadata"]["annotations"] == configmap["metadata"]["annotations"]
    assert secret != configmap


def _run(argv, cwd, **kw):
    result = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=120, **kw)
    assert result.returncode == 0, f"{argv}: {result.stdout}{result.stderr}"
    return result


def _objects_from_kubectl(commands: list[str], cwd: Path) -> dict[tuple[str, str], dict[str, bytes]]:
    """Runs the guide's `kubectl create` commands client-side only (nothing is sent anywhere) and returns the
    objects they would create."""
    env = {"PATH": os.environ["PATH"], "HOME": str(cwd), "KUBECONFIG": str(cwd / "no-kubeconfig")}
    out = {}
    for command in commands:
        obj = json.loads(_run(shlex.split(command) + ["--dry-run=client", "-o", "json"], cwd, env=env).stdout)
        if obj["kind"] == "Secret":
            data = {k: base64.b64decode(v) for k, v in obj["data"].items()}
        else:
            data = {k: v.encode() for k, v in obj["data"].items()}
        out[(obj["kind"], obj["metadata"]["name"])] = data
    return out


def _check_config(binary, config: Path):
    return subprocess.run([str(binary), "check-config", "--config", str(config)], capture_output=True, text=True,
                          timeout=60)


def _guide_setup(binary: Path, work: Path) -> dict[tuple[str, str], dict[str, bytes]]:
    """Runs the guide's commands in `work`: section 2's CA in service (a root) and its Secret, section 7's next CA
    (an intermediate), its Secret and the ConfigMap for the old certificate (not the in-place replacement of an
    intermediate, piped to kubectl apply: another story). Returns the Secrets and ConfigMaps."""
    work.mkdir()
    rotation = section("## 7. Rotating the CA")
    setup = section("## 2. The CA")
    assert "csr-signer ca init --out ./mtls-ca" in shell_commands(setup, "csr-signer ca init")
    creates = ["kubectl -n pki create secret tls csr-signer-ca --cert=mtls-ca/ca.crt --key=mtls-ca/ca.key"]
    assert creates[0] in shell_commands(setup, "kubectl -n pki create")
    inits = ["csr-signer ca init --out ./mtls-ca"] + shell_commands(rotation, "csr-signer ca init")
    assert len(inits) == 2
    for command in inits:
        _run([str(binary)] + shlex.split(command)[1:], work)
    creates += [c for c in shell_commands(rotation, "kubectl -n pki create") if "|" not in c]
    return _objects_from_kubectl(creates, work)


def test_the_guide_rotation_is_accepted_by_the_binary(tmp_path):
    """Every step of the guide, with CAs from `csr-signer ca init` and Secrets/ConfigMaps from the guide's kubectl
    commands, laid out as the kubelet mounts them: `check-config` loads every CA (it reads the otherCas files),
    the mounted certificates are the right ones (openssl verifies the next CA against its mounted root), and no
    CA key is under other-cas/ although the Secrets mounted there hold one."""
    binary = find_binary()
    if binary is None:
        pytest.skip("no csr-signer binary in target/release or target/debug (cargo build --bin csr-signer first)")
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl not found: the guide's `kubectl create` commands make the Secrets")
    work = tmp_path / "work"
    objects = _guide_setup(binary, work)
    assert set(objects) == {("Secret", "csr-signer-ca"), ("Secret", "csr-signer-ca-2"),
                            ("ConfigMap", "csr-signer-ca-previous")}
    assert b"PRIVATE KEY" in objects[("Secret", "csr-signer-ca-2")]["tls.key"]
    assert b"PRIVATE KEY" in objects[("Secret", "csr-signer-ca")]["tls.key"]
    old, new = work / "mtls-ca", work / "mtls-ca-2"

    steps = guide_steps()
    expected_files = {
        STEP_1: {"next/ca.crt": new / "ca.crt", "next/chain.crt": new / "root.crt"},
        STEP_3: {"previous/ca.crt": old / "ca.crt"},
        STEP_3_CONFIGMAP: {"previous/ca.crt": old / "ca.crt"},
        STEP_5: {},
    }
    for n, (title, values) in enumerate(steps.items()):
        r = render(values, name=RELEASE, namespace=NAMESPACE)
        root = tmp_path / f"pod-{n}"
        config = mount_volumes(r, objects, root)
        result = _check_config(binary, config)
        assert result.returncode == 0, f"{title}: {result.stdout}{result.stderr}"
        effective = yaml.safe_load(result.stdout)["signers"][0]
        wanted = [(o["name"], o["state"]) for o in values["signers"][0].get("otherCas", [])]
        assert [(o["name"], o["state"]) for o in effective.get("otherCas") or []] == wanted, title
        others = root / "etc/csr-signer/other-cas/0"
        mounted = {str(p.relative_to(others)): p for p in others.rglob("*") if p.is_file()} if others.exists() else {}
        assert {k: v.read_bytes() for k, v in mounted.items()} == \
            {k: v.read_bytes() for k, v in expected_files[title].items()}, title
        signing = root / "etc/csr-signer/ca/0"
        assert (signing / "tls.key").read_bytes() == ((new if title != STEP_1 else old) / "ca.key").read_bytes()
        if title == STEP_1:
            _run(["openssl", "verify", "-CAfile", "next/chain.crt", "next/ca.crt"], others)

    # Once the retiring certificate is in the ConfigMap (and after step 5), the old Secret, key included, can go;
    # with the Secret variant of step 3 a pod would not start without it.
    without_old = {k: v for k, v in objects.items() if k != ("Secret", "csr-signer-ca")}
    for title in (STEP_3_CONFIGMAP, STEP_5):
        mount_volumes(render(steps[title], name=RELEASE, namespace=NAMESPACE), without_old, tmp_path / "gone" / title[:6])
    with pytest.raises(MountError, match="Secret csr-signer-ca does not exist"):
        mount_volumes(render(steps[STEP_3], name=RELEASE, namespace=NAMESPACE), without_old, tmp_path / "gone" / "3s")


def test_check_config_reads_the_other_ca_files(tmp_path):
    """The check above has teeth: a missing or wrong otherCas file stops check-config naming the key."""
    binary = find_binary()
    if binary is None:
        pytest.skip("no csr-signer binary in target/release or target/debug (cargo build --bin csr-signer first)")
    _run([str(binary), "ca", "init", "--out", "old"], tmp_path)
    _run([str(binary), "ca", "init", "--out", "next"], tmp_path)
    pem = {d: {"tls.crt": (tmp_path / d / "ca.crt").read_bytes(), "tls.key": (tmp_path / d / "ca.key").read_bytes()}
           for d in ("old", "next")}
    values = {"signers": [{"name": "example.com/mtls", "ca": {"existingSecret": "old"},
                           "otherCas": [{"name": "next", "state": "published", "existingSecret": "next"}]}]}
    r = render(values)
    objects = {("Secret", "old"): pem["old"], ("Secret", "next"): pem["next"]}
    config = mount_volumes(r, objects, tmp_path / "ok")
    assert _check_config(binary, config).returncode == 0
    cert = tmp_path / "ok/etc/csr-signer/other-cas/0/next/ca.crt"
    cert.unlink()
    result = _check_config(binary, config)
    assert result.returncode != 0 and "signers[0].otherCas[0].certFile" in result.stderr, result.stderr
    # What a whole-Secret mount with certKey pointing at the key would give the signer: refused, never loaded.
    objects[("Secret", "next")] = {"tls.crt": pem["next"]["tls.key"]}
    config = mount_volumes(r, objects, tmp_path / "key")
    result = _check_config(binary, config)
    assert result.returncode != 0 and "signers[0].otherCas[0].certFile" in result.stderr, result.stderr


class _Cluster:
    """`csr-signer dev --no-signer`: the project's local Kubernetes API (CSRs, Leases, ClusterTrustBundles), on
    which the signer pods of each step run one after the other as a rolling update would leave them."""

    def __init__(self, binary: Path, work: Path):
        self.binary, self.work = binary, work
        self.kubeconfig = work / "kubeconfig"
        self.env = {"PATH": os.environ["PATH"], "HOME": str(work), "KUBECONFIG": str(self.kubeconfig)}
        self.api = subprocess.Popen([str(binary), "dev", "--no-signer", "--port", "0", "--kubeconfig-out",
                                     str(self.kubeconfig), "--state-dir", str(work / "dev-state")],
                                    cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.pod: subprocess.Popen | None = None
        self.pod_log = None
        try:
            self.wait_for(lambda: self.kubeconfig.exists() and self.kubectl("create", "namespace", "pki", check=False)
                          .returncode == 0, "the local API")
        except BaseException:
            self.close()
            raise

    def kubectl(self, *args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(["kubectl", *args], cwd=self.work, env=self.env, input=stdin, capture_output=True,
                                text=True, timeout=60)
        assert not check or result.returncode == 0, f"kubectl {args}: {result.stderr}"
        return result

    def shell(self, command: str) -> str:
        return subprocess.run(["bash", "-o", "pipefail", "-c", command], cwd=self.work, env=self.env,
                              capture_output=True, text=True, timeout=60).stdout.strip()

    @staticmethod
    def wait_for(condition, what: str, seconds: float = 30):
        deadline = time.monotonic() + seconds
        while not condition():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.2)

    def run_pod(self, config: Path, name: str):
        """Replaces the running signer with one on `config`, as the rollout of a step does."""
        self.stop_pod()
        env = self.env | {"POD_NAME": name, "POD_NAMESPACE": "pki"}
        self.pod_log = open(self.work / f"{name}.log", "w")
        self.pod = subprocess.Popen([str(self.binary), "run", "--config", str(config), "--kubeconfig",
                                     str(self.kubeconfig), "--listen", "127.0.0.1:0"], cwd=self.work, env=env,
                                    stdout=self.pod_log, stderr=subprocess.STDOUT)

    def stop_pod(self):
        if self.pod is not None:
            self.pod.terminate()
            self.pod.wait(timeout=30)
            self.pod = None
            self.pod_log.close()

    def close(self):
        self.stop_pod()
        self.api.terminate()
        self.api.wait(timeout=30)

    def bundle(self) -> set[str]:
        pem = self.kubectl("get", "clustertrustbundle", "example.com:mtls:live", "-o",
                           "jsonpath={.spec.trustBundle}", check=False).stdout
        return {_pem_body(b) for b in re.findall(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", pem, re.S)}

    def issue(self, name: str) -> Path:
        """A CSR from a team, approved; returns the file holding what the signer wrote (leaf, then intermediates)."""
        subprocess.run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                        "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", "/O=team-a"],
                       cwd=self.work, check=True, capture_output=True)
        request = base64.b64encode((self.work / f"{name}.csr").read_bytes()).decode()
        self.kubectl("apply", "-f", "-", stdin=json.dumps({
            "apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest", "metadata": {"name": name},
            "spec": {"signerName": "example.com/mtls", "request": request, "expirationSeconds": 3600,
                     "usages": ["digital signature", "client auth"]}}))
        self.kubectl("certificate", "approve", name)
        out = self.work / f"{name}.crt"

        def issued():
            data = self.kubectl("get", "csr", name, "-o", "jsonpath={.status.certificate}").stdout
            if data:
                out.write_bytes(base64.b64decode(data))
            return bool(data)
        self.wait_for(issued, f"the certificate of {name}")
        return out

    def verifies(self, certificate: Path) -> bool:
        """openssl, trusting only the published bundle, with the intermediates the signer sent."""
        bundle = self.work / "bundle.pem"
        bundle.write_text(self.kubectl("get", "clustertrustbundle", "example.com:mtls:live", "-o",
                                       "jsonpath={.spec.trustBundle}").stdout)
        return subprocess.run(["openssl", "verify", "-CAfile", str(bundle), "-untrusted", str(certificate),
                               str(certificate)], capture_output=True).returncode == 0


def _pem_body(pem: str) -> str:
    return "".join(pem.strip().splitlines()[1:-1])


def test_the_guide_rotation_on_a_running_signer(tmp_path):
    """The guide's steps, each run as the pods it renders (its config and mounted files) on the local API: the
    published bundle is what the guide says (its own `grep -c` command included), and a client trusting only the
    bundle accepts the certificates issued before and after the switch until the old CA's entry is removed."""
    binary = find_binary()
    if binary is None:
        pytest.skip("no csr-signer binary in target/release or target/debug (cargo build --bin csr-signer first)")
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl not found: the guide's `kubectl create` commands make the Secrets")
    if subprocess.run([str(binary), "dev", "--help"], capture_output=True).returncode != 0:
        pytest.skip(f"{binary} is built without the `dev` feature (the local API)")
    work = tmp_path / "work"
    objects = _guide_setup(binary, work)
    old_root = _pem_body((work / "mtls-ca/ca.crt").read_text())
    new_root = _pem_body((work / "mtls-ca-2/root.crt").read_text())
    count = next(c for c in shell_commands(section("## 7. Rotating the CA"), "kubectl get clustertrustbundle")
                 if "grep -c" in c)
    steps = guide_steps()
    plan = [("start", START, {old_root}), ("step-1", steps[STEP_1], {old_root, new_root}),
            ("step-3", steps[STEP_3], {old_root, new_root}), ("step-5", steps[STEP_5], {new_root})]
    cluster = _Cluster(binary, work)
    try:
        issued = {}
        for name, values, roots in plan:
            config = mount_volumes(render(values, name=RELEASE, namespace=NAMESPACE), objects, tmp_path / name)
            cluster.run_pod(config, name)
            cluster.wait_for(lambda: cluster.bundle() == roots, f"the bundle of {name}")
            assert cluster.shell(count) == str(len(roots)), name
            issued[name] = cluster.issue(f"app-{name}")
            verified = {n for n, crt in issued.items() if cluster.verifies(crt)}
            if name == "step-5":
                # The old CA's entry removed: its certificates no longer verify (why the guide waits for step 4).
                assert verified == {"step-3", "step-5"}, name
            else:
                assert verified == set(issued), name
        # Who signed (openssl, anchored on one CA certificate): the old CA until the switch, the new one after.
        def signed_by(ca: str) -> set[str]:
            return {n for n, crt in issued.items() if subprocess.run(
                ["openssl", "verify", "-partial_chain", "-CAfile", ca, str(crt)], cwd=work,
                capture_output=True).returncode == 0}
        assert signed_by("mtls-ca/ca.crt") == {"start", "step-1"}
        assert signed_by("mtls-ca-2/ca.crt") == {"step-3", "step-5"}
    finally:
        cluster.close()
