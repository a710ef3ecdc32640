"""Real ESP: a Child SA installed in a kernel and traffic counted through it.

This machine's kernel has no ESP, so the proof (esp_proof.py: two
namespaces, a veth pair, one isolated pluto each, PSK, aes_gcm128-null,
ping) runs in a throwaway qemu VM booted with Debian's own kernel
(labkit.vm); on a kernel that has ESP it runs directly. Never skipped: the
harness installs what it lacks (Debian packages, the cached kernel build).
"""

import json
import os
import subprocess
import sys

import pytest

from labkit import capture, vm

HERE = os.path.dirname(os.path.abspath(__file__))
PROOF = os.path.join(HERE, "esp_proof.py")
CONN = "vm-esp"


@pytest.fixture(scope="module")
def proof(tmp_path_factory, libreswan_each):
    """Run esp_proof.py once per Libreswan install (VM or host) and hand its
    facts to the tests."""
    job = tmp_path_factory.mktemp("esp-proof")
    facts_file = job / "facts.json"
    result = vm.run([sys.executable, PROOF, str(facts_file)], job_dir=str(job), cwd=HERE, timeout=170,
                    env=libreswan_each.env())
    assert facts_file.exists(), "the proof wrote no facts\n" + result.describe()
    facts = json.loads(facts_file.read_text())
    assert "error" not in facts, facts["error"] + "\n" + result.describe()
    facts["_result"] = result
    # Status before the ping, traffic after it (bytes both ways).
    for index, node in enumerate(("a", "b")):
        capture.save(libreswan_each, "vm-esp", node, facts["status"][index],
                     facts["after"]["traffic"][index]["text"])
    return facts


def _why(facts):
    return "\n".join(["where: " + facts["_result"].where, "kernel: " + facts["kernel"],
                      "--- up\n" + json.dumps(facts.get("up"), indent=1)]
                     + ["--- status {}\n{}".format(i, s) for i, s in enumerate(facts.get("status", []))]
                     + ["--- pluto log {}\n{}".format(i, log[-3000:]) for i, log in enumerate(facts.get("logs", []))])


def test_ike_and_child_sa_are_established(proof, libreswan_each):
    assert proof["_result"].where == ("host" if vm.host_has_esp() else "vm")
    assert proof["ipsec_version"] == "Libreswan " + libreswan_each.version
    assert proof["up"]["returncode"] == 0, _why(proof)
    assert "established IKE SA" in proof["up"]["stdout"], _why(proof)
    assert "established Child SA" in proof["up"]["stdout"], _why(proof)
    for status in proof["status"]:
        assert "IKE SAs: total(1)" in status and "authenticated(1)" in status, _why(proof)
        assert "IPsec SAs: total(1), authenticated(1)" in status, _why(proof)
    for side in proof["before"]["traffic"]:
        assert [row["conn"] for row in side["rows"]] == [CONN], side["text"]


def test_kernel_holds_the_esp_states(proof):
    for side in proof["before"]["xfrm"]:
        pairs = sorted((s["src"], s["dst"]) for s in side["states"])
        assert pairs == [("198.51.100.1", "198.51.100.2"), ("198.51.100.2", "198.51.100.1")], side["text"]
        assert {s["aead"] for s in side["states"]} == {"rfc4106(gcm(aes))"}, side["text"]


def test_ping_goes_through_esp(proof):
    assert proof["ping"]["returncode"] == 0, proof["ping"]
    assert " 0% packet loss" in proof["ping"]["stdout"], proof["ping"]
    for before, after in zip(proof["before"]["traffic"], proof["after"]["traffic"]):
        old, new = before["rows"][0], after["rows"][0]
        assert new["in"] > old["in"] and new["out"] > old["out"], (before["text"], after["text"])
    for before, after in zip(proof["before"]["xfrm"], proof["after"]["xfrm"]):
        old = {(s["src"], s["dst"]): s for s in before["states"]}
        for state in after["states"]:
            was = old[(state["src"], state["dst"])]
            # 5 echo requests one way, 5 replies the other: at least 5 packets each.
            assert state["packets"] >= was["packets"] + 5, (before["text"], after["text"])
            assert state["bytes"] > was["bytes"], (before["text"], after["text"])


def test_proof_cleans_up_after_itself(proof):
    assert proof["namespaces_left"] == []
    assert "cleanup_errors" not in proof


# ------------------------------------------------------- the harness itself

def test_vm_returns_exit_code_output_and_files(tmp_path):
    result = vm.run_in_vm(
        'echo out; echo err >&2; uname -r > "$IPSEC_VM_JOB/kernel"; hostname > "$IPSEC_VM_JOB/host";'
        ' touch /usr/share/written-in-the-vm && pwd > "$IPSEC_VM_JOB/pwd"; exit 3',
        job_dir=str(tmp_path), cwd="/etc", timeout=120)
    assert result.returncode == 3, result.describe()
    assert (result.stdout, result.stderr) == ("out\n", "err\n"), result.describe()
    assert (tmp_path / "kernel").read_text().strip() == vm.default_image().version
    assert (tmp_path / "host").read_text().strip() == vm.HOSTNAME
    # The root is writable in the VM (RAM), never on the host.
    assert (tmp_path / "pwd").read_text().strip() == "/etc"
    assert not os.path.exists("/usr/share/written-in-the-vm")


def test_vm_timeout_kills_qemu(tmp_path):
    result = vm.run_in_vm("sleep 600", job_dir=str(tmp_path), timeout=12)
    assert result.timed_out and result.returncode is None
    assert result.elapsed < 60
    assert _qemus_for(tmp_path) == []


def _qemus_for(job_dir):
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open("/proc/{}/cmdline".format(pid), "rb") as handle:
                argv = handle.read().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"qemu-system-x86_64") and any(str(job_dir).encode() in a for a in argv):
            found.append(pid)
    return found


def test_host_esp_probe_leaves_no_namespace():
    assert vm.host_has_esp() in (True, False)
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert "ipft-{}-espprobe".format(os.getpid()) not in left
