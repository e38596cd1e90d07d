"""The Dockerfile cannot be built here (no Docker engine): check its structure, that what it builds exists in
Cargo.toml, and that the subcommand and flags it and the chart pass exist in the binary's --help."""

from __future__ import annotations

import json
import re
import subprocess
import tomllib

import pytest

from chart_support import ROOT, find_binary, mount_volumes, render

DOCKERFILE = ROOT / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            op, _, rest = line.partition(" ")
            out.append((op.upper(), rest.strip()))
    return out


def arg_defaults() -> dict[str, str]:
    return dict(rest.split("=", 1) for op, rest in instructions() if op == "ARG" and "=" in rest)


def stages() -> list[tuple[str, str]]:
    """(resolved base image, stage name) per FROM."""
    args = arg_defaults()
    out = []
    for op, rest in instructions():
        if op == "FROM":
            m = re.fullmatch(r"(\S+)(?:\s+AS\s+(\S+))?", rest, re.I)
            image = re.sub(r"\$\{(\w+)\}", lambda g: args[g.group(1)], m.group(1))
            out.append((image, m.group(2) or ""))
    return out


def final_stage() -> list[tuple[str, str]]:
    ins = instructions()
    last_from = max(i for i, (op, _) in enumerate(ins) if op == "FROM")
    return ins[last_from:]


def test_multi_stage_rust_builder_and_distroless_nonroot_runtime():
    s = stages()
    assert len(s) == 2
    assert s[0] == ("rust:1-bookworm", "builder")
    assert s[1][0].startswith("gcr.io/distroless/cc-debian12") and s[1][0].endswith(":nonroot")


def test_runtime_runs_as_uid_65532_with_the_binary_as_entrypoint():
    final = dict((op, rest) for op, rest in final_stage())
    assert final["USER"] == "65532:65532"
    assert json.loads(final["ENTRYPOINT"]) == ["/csr-signer"]
    assert json.loads(final["CMD"])[0] == "run"
    assert "--from=builder /out/csr-signer /csr-signer" in final["COPY"]


def test_builds_the_crates_binary_with_existing_features():
    cargo = tomllib.loads((ROOT / "Cargo.toml").read_text())
    run = next(rest for op, rest in instructions() if op == "RUN" and "cargo build" in rest)
    assert "--release" in run and "--locked" in run
    bin_name = re.search(r"--bin (\S+)", run).group(1)
    assert bin_name in [b["name"] for b in cargo.get("bin", [])]
    features = arg_defaults()["CARGO_FEATURES"].split(",")
    for feature in features:
        assert feature in cargo["features"], feature


def test_the_image_leaves_out_the_local_api():
    """The image is built without the `dev` feature: no fake apiserver, no fault injection in production. The
    dependency graph of exactly the Dockerfile's build command (resolved by cargo, nothing compiled) has no
    local API crate."""
    run = next(rest for op, rest in instructions() if op == "RUN" and "cargo build" in rest)
    assert "--no-default-features" in run
    features = arg_defaults()["CARGO_FEATURES"]
    assert "dev" not in features.split(",")
    tree = subprocess.run(
        ["cargo", "tree", "--locked", "-e", "normal", "--no-default-features", "--features", features,
         "--prefix", "none", "--format", "{p}"],
        cwd=ROOT, capture_output=True, text=True, check=True).stdout
    packages = {line.split()[0] for line in tree.splitlines() if line.strip()}
    assert "csr-signer" in packages
    assert "localapi" not in packages, "the image's build pulls in the local API"
    # And the default build (what `cargo run -- dev` uses) does have it, so the check above can fail.
    default = subprocess.run(["cargo", "tree", "--locked", "-e", "normal", "--prefix", "none", "--format", "{p}"],
                             cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert "localapi" in {line.split()[0] for line in default.splitlines() if line.strip()}


def test_dockerignore_keeps_what_cargo_needs():
    ignored = [l.strip() for l in (ROOT / ".dockerignore").read_text().splitlines() if l.strip() and not l.startswith("#")]
    assert "target" in ignored and ".git" in ignored
    for needed in ("src", "crates", "Cargo.toml", "Cargo.lock", "benches"):
        assert needed not in ignored


def _help(binary, *args) -> str:
    result = subprocess.run([str(binary), *args, "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_entrypoint_and_chart_flags_exist_in_the_binary():
    binary = find_binary()
    if binary is None:
        pytest.skip("no csr-signer binary in target/release or target/debug (cargo build --bin csr-signer first)")
    top = _help(binary)
    # The subcommands the image, the chart and the docs use.
    for sub in ("run", "check-config", "ca"):
        assert re.search(rf"^\s+{re.escape(sub)}\b", top, re.M), f"subcommand {sub} missing from --help"
    assert re.search(r"(^|\s)--out\b", _help(binary, "ca", "init"), re.M), "docs use `csr-signer ca init --out DIR`"
    run_help = _help(binary, "run")
    cmd = json.loads(dict(final_stage())["CMD"])
    chart_args = render(None).pod_spec()["containers"][0]["args"]
    assert cmd[0] == chart_args[0] == "run"
    for flag in [a for a in cmd + chart_args if a.startswith("--")] + ["--kubeconfig", "--listen"]:
        assert re.search(rf"(^|\s){re.escape(flag)}\b", run_help, re.M), f"{flag} missing from `csr-signer run --help`"
    assert "json" in run_help, "--log-format json must be an accepted value"


def test_chart_config_and_secret_are_accepted_by_the_binary(tmp_path):
    """End to end without a cluster: `csr-signer ca init` makes a CA, the chart turns it into a Secret and a config
    file, the Secret's keys are laid out as the kubelet mounts them, and `csr-signer check-config` accepts it."""
    binary = find_binary()
    if binary is None:
        pytest.skip("no csr-signer binary in target/release or target/debug (cargo build --bin csr-signer first)")
    import base64

    import yaml

    ca_out = tmp_path / "ca-init"
    made = subprocess.run([str(binary), "ca", "init", "--out", str(ca_out), "--intermediate"],
                          capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    key_pem = (ca_out / "ca.key").read_text()
    values = {"signers": [{"name": "example.com/mtls", "ca": {
        "create": True, "certificate": (ca_out / "ca.crt").read_text(), "key": key_pem}}]}
    r = render(values)
    secret = r.one("Secret")
    config = mount_volumes(r, {("Secret", secret["metadata"]["name"]):
                               {k: base64.b64decode(v) for k, v in secret["data"].items()}}, tmp_path)
    result = subprocess.run([str(binary), "check-config", "--config", str(config)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert yaml.safe_load(result.stdout)["signers"][0]["name"] == "example.com/mtls"
    body = "".join(key_pem.strip().splitlines()[1:-1])
    assert body[:40] not in (result.stdout + result.stderr).replace("\n", ""), "check-config printed the CA key"
