"""The master's ext_pillar (_pillar/ipsec_keys.py): where its secret may come
from (a root-only file, or gpg with a real keyring), and what a minion gets
when something is wrong (an error, never secret material)."""

import importlib.util
import os
import subprocess

import pytest

import ipsec_keys
import ipsec_plan
from labkit import examples, saltenv

SECRET = b"ext-pillar-master-secret-0123456789abcdef"


@pytest.fixture
def ext():
    spec = importlib.util.spec_from_file_location("ipsec_keys_pillar",
                                                  os.path.join(saltenv.REPO, "_pillar", "ipsec_keys.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.__opts__ = {"grains": {}}
    module.__utils__ = {
        "ipsec_keys.parse_keys": ipsec_keys.parse_keys,
        "ipsec_keys.issue": ipsec_keys.issue,
        "ipsec_plan.build_plan": ipsec_plan.build_plan,
        "ipsec_plan.parse_cluster": ipsec_plan.parse_cluster,
    }
    return module


def derived_pillar():
    pillar = examples.pillar(keys={"mode": "derived", "version": 7})
    del pillar["psk"]
    return {"ipsec": pillar}


def secret_file(tmp_path, mode=0o600, content=SECRET):
    path = tmp_path / "secret"
    path.write_bytes(content + b"\n")
    path.chmod(mode)
    return str(path)


def test_issues_the_minions_keys_from_a_root_only_file(ext, tmp_path):
    out = ext.ext_pillar("compute-0", derived_pillar(), secret_file=secret_file(tmp_path))
    issued = out["ipsec"]["keys"]["issued"]
    plan = ipsec_plan.build_plan(derived_pillar()["ipsec"], "compute-0", examples.own_ips("compute-0"),
                                 require_psk=False)
    assert issued == ipsec_keys.issue(plan, SECRET, 7)


def test_shared_mode_gets_nothing(ext, tmp_path):
    assert ext.ext_pillar("compute-0", {"ipsec": examples.pillar()}, secret_file=secret_file(tmp_path)) == {}
    assert ext.ext_pillar("compute-0", {}, secret_file=secret_file(tmp_path)) == {}


@pytest.mark.parametrize("mode, content, message", [
    (0o644, SECRET, "must belong to the master's user and be readable by it only"),
    (0o640, SECRET, "it is 0640"),
    (0o600, b"s3cr3t-but-brief", "too short"),
], ids=["world-readable", "group-readable", "short"])
def test_bad_secret_file_gives_an_error_without_the_secret(ext, tmp_path, mode, content, message):
    out = ext.ext_pillar("compute-0", derived_pillar(), secret_file=secret_file(tmp_path, mode, content))
    issued = out["ipsec"]["keys"]["issued"]
    assert set(issued) == {"version", "error"} and message in issued["error"]
    assert content.decode() not in issued["error"]


def test_missing_file_or_two_sources_refused(ext, tmp_path):
    out = ext.ext_pillar("compute-0", derived_pillar(), secret_file=str(tmp_path / "absent"))
    assert "No such file" in out["ipsec"]["keys"]["issued"]["error"]
    out = ext.ext_pillar("compute-0", derived_pillar(), secret_file="x", secret_gpg="y")
    assert "exactly one of secret_file or secret_gpg" in out["ipsec"]["keys"]["issued"]["error"]


def test_cluster_detection_cannot_run_on_the_master(ext, tmp_path):
    pillar = derived_pillar()
    del pillar["ipsec"]["cluster"]
    out = ext.ext_pillar("controller-0", pillar, secret_file=secret_file(tmp_path))
    assert "ipsec:cluster: derived keys need ipsec:cluster:nodes or ipsec:cluster:grain" in \
        out["ipsec"]["keys"]["issued"]["error"]


@pytest.fixture
def keyrings(tmp_path):
    """Fresh gpg homes; the gpg-agent each one starts is stopped after."""
    homes = []

    def make(name):
        home = tmp_path / name
        home.mkdir(mode=0o700)
        homes.append(home)
        return home

    yield make
    for home in homes:
        subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], capture_output=True, timeout=30,
                       check=False)


def test_secret_from_gpg_decrypted_on_the_master(ext, keyrings):
    home = keyrings("gpgkeys")
    gpg = ["gpg", "--homedir", str(home), "--batch", "--quiet", "--pinentry-mode", "loopback", "--passphrase", ""]
    subprocess.run(gpg + ["--quick-gen-key", "ipsec-formula test <keys@example.invalid>", "default", "default",
                          "never"], check=True, capture_output=True, timeout=120)
    armored = subprocess.run(gpg + ["--armor", "--trust-model", "always", "--encrypt", "-r",
                                    "keys@example.invalid"], input=SECRET, check=True, capture_output=True,
                             timeout=60).stdout.decode()
    out = ext.ext_pillar("compute-0", derived_pillar(), secret_gpg=armored, gpg_keydir=str(home))
    plan = ipsec_plan.build_plan(derived_pillar()["ipsec"], "compute-0", examples.own_ips("compute-0"),
                                 require_psk=False)
    assert out["ipsec"]["keys"]["issued"] == ipsec_keys.issue(plan, SECRET, 7)
    # Another keyring cannot decrypt it: an error, no keys.
    other = keyrings("other")
    out = ext.ext_pillar("compute-0", derived_pillar(), secret_gpg=armored, gpg_keydir=str(other))
    assert "gpg could not decrypt it" in out["ipsec"]["keys"]["issued"]["error"]
