"""Fixtures for the chart, alert and dashboard tests: promtool, a throwaway CA made with the openssl CLI, and
the chart rendered with each value set."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from chart_support import Rendered, render, value_sets


@pytest.fixture(scope="session")
def promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool not found: run tests/chart/run.sh (installs Debian's prometheus package)"
    return path


@pytest.fixture(scope="session")
def dev_ca(tmp_path_factory) -> dict[str, str]:
    """A real root + intermediate made with the openssl CLI: PEM strings for the intermediate (certificate, key) and its root."""
    d = tmp_path_factory.mktemp("ca")

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, cwd=d, capture_output=True)

    ext = d / "ext.cnf"
    ext.write_text(
        "[ca]\nbasicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n"
        "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid:always\n"
    )
    run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "root.key",
        "-out", "root.crt", "-days", "30", "-subj", "/CN=test root", "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    run("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "int.key",
        "-out", "int.csr", "-subj", "/CN=test intermediate")
    run("x509", "-req", "-in", "int.csr", "-CA", "root.crt", "-CAkey", "root.key", "-CAcreateserial",
        "-out", "int.crt", "-days", "20", "-extfile", str(ext), "-extensions", "ca")
    return {
        "certificate": (d / "int.crt").read_text(),
        "key": (d / "int.key").read_text(),
        "root": (d / "root.crt").read_text(),
        "dir": str(d),
    }


@pytest.fixture(scope="session")
def rendered_sets(dev_ca) -> dict[str, Rendered]:
    return {name: render(values) for name, values in value_sets(dev_ca).items()}
