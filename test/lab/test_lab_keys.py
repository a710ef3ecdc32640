"""Per-tunnel keys and rotation in the lab (IKE level): the master derives
the keys (ext_pillar ``ipsec_keys``), minions get only their own.

One lab for the module, in order:
- shared-PSK mode: a rotation to a new PSK with the orchestration keeps
  every SA (same serials), ``ipsec.verify`` passes throughout, pluto is
  told nothing but to re-read secrets;
- switch to derived keys: every tunnel up again;
- compute-0 holds no key of a tunnel between two other nodes, checked by
  trying: controller-1's pluto, given each of compute-0's keys, fails to
  authenticate to controller-0 (its own keys, put back, succeed);
- derived-key rotation as above; then a restarted node re-establishes every
  tunnel with the new keys, a node put back on the old keys fails
  authentication (negative control), and the time from giving it the new
  keys (``rereadsecrets``) to every tunnel up again is measured.
"""

import json
import os
import stat
import time

import pytest

import ipsec_keys
import ipsec_status
from labkit import examples, labkeys, labvm, tunnels
from labkit.labkeys import KeysLab
from test_lab import expected_up, failed, poll, recover, verify

ATTACKER, TARGET, THIEF = "controller-1", "controller-0", "compute-0"


@pytest.fixture(scope="module")
def lab():
    with KeysLab() as built:
        built.set_keys("shared", 1)
        built.plans = built.deploy()
        recover(built)
        yield built


def replan(lab):
    # Minions plan from the pillar they hold in memory: refresh it first.
    rc, data = lab.salt("*", "saltutil.refresh_pillar", "wait=True")
    assert rc == 0, data
    rc, data = lab.salt("*", "ipsec.plan")
    assert rc == 0 and set(data) == set(lab.nodes), str(data)[:2000]
    lab.plans = data


def rotate_and_watch(lab, version):
    """Rotate with the orchestration while verify polls every node.
    Returns (serials before, serials after, polls, pluto lines told)."""
    before = lab.settled_serials()
    marks = lab.log_marks()
    with labkeys.VerifyPoller(lab) as poller:
        time.sleep(1)
        rc, data, text = lab.rotate(version)
        assert rc == 0, text[:6000]
        time.sleep(2)
    after = lab.sa_serials()
    return before, after, poller.results, lab.told_since(marks), text


def assert_hitless(before, after, polls, told):
    assert before and after == before, json.dumps({"before": before, "after": after}, indent=1)[:4000]
    assert len(polls) >= 2 and all(rc == 0 for _, rc, _ in polls), polls
    for node_id, lines in told.items():
        assert lines, "{} was not told to re-read its secrets".format(node_id)
        assert all("loading secrets from" in line for line in lines), (node_id, lines)


def secret_modes(lab):
    return {path: stat.S_IMODE(os.stat(path).st_mode) for node_id in lab.nodes for path in lab.secrets(node_id)}


# ------------------------------------------------------------ shared PSK

def test_shared_psk_rotation_keeps_every_sa_and_verify_passes_throughout(lab):
    lab.set_keys("shared", 2, psk=labkeys.NEW_PSK)
    before, after, polls, told, text = rotate_and_watch(lab, 2)
    assert_hitless(before, after, polls, told)
    for node_id in lab.nodes:
        texts = lab.secrets(node_id).values()
        assert all(labkeys.NEW_PSK in t and examples.PSK not in t for t in texts), node_id
    assert set(secret_modes(lab).values()) == {0o600}
    assert labkeys.NEW_PSK not in text and examples.PSK not in text


# ------------------------------------------------------------ derived keys

@pytest.fixture(scope="module")
def derived(lab):
    lab.set_keys("derived", 3)
    replan(lab)
    rc, data = lab.salt("*", "state.apply", "ipsec")
    assert rc == 0, json.dumps(data, indent=1)[:6000]
    recover(lab)
    return lab


def test_derived_keys_every_tunnel_up_with_its_own_key(derived):
    lab = derived
    for node_id in lab.nodes:
        tokens = {}
        for text in lab.secrets(node_id).values():
            tokens.update(labkeys.psk_tokens(text))
        assert tokens and labkeys.NEW_PSK not in tokens.values()
        assert set(tokens.values()) == labkeys.keys_in(lab.issued(node_id)), node_id
    assert lab.plans[THIEF]["connections"]["overcloud-internal_api-node-to-vip-tunnel"]["keywords"]["leftid"] == \
        "@overcloudinternal_apicluster-compute-0"


def _attack_targets(lab):
    """controller-1's conns to controller-0 (node to node, VIP clients)."""
    plan = lab.plans[ATTACKER]
    return sorted(name for name, conn in plan["connections"].items()
                  if (conn["role"] == "node-to-node" and conn["peer"] == TARGET) or conn["role"] == "vip-client")


def _refused(lab, marks, names):
    """Conns of ``names`` an authentication failure was logged for (either end)."""
    text = "\n".join(lab.nodes[n].pluto.log()[marks[n]:] for n in (ATTACKER, TARGET))
    lines = [line for line in text.splitlines() if "authentication failed" in line.lower()
             or "AUTHENTICATION_FAILED" in line]
    return {name for name in names if any('"{}"'.format(name) in line for line in lines)}


def _established_with_attacker(lab, marks):
    addresses = set(examples.THREE_NODES[ATTACKER].values())
    lines = lab.nodes[TARGET].pluto.log()[marks[TARGET]:].splitlines()
    return [line for line in lines if "established" in line and any(a in line for a in addresses)]


def test_compute0_keys_do_not_authenticate_controller1_to_controller0(derived):
    lab = derived
    stolen = labkeys.keys_in(lab.issued(THIEF))
    for text in lab.secrets(THIEF).values():
        stolen |= set(labkeys.psk_tokens(text).values())
    assert len(stolen) == 6, "compute-0: 4 node-to-node keys and 2 VIP client keys"
    # The master's derivation, recomputed here from its secret.
    expected = ipsec_keys.issue(lab.plans[THIEF], lab.master_secret().encode(), 3)
    assert stolen == labkeys.keys_in(expected)
    assert lab.master_secret() not in json.dumps(lab.issued(THIEF))
    targets = _attack_targets(lab)
    assert len(targets) == 6, targets  # 3 networks + 3 VIPs
    attacker = lab.nodes[ATTACKER].pluto
    own = lab.secrets(ATTACKER)
    try:
        attacker.stop()
        for index, key in enumerate(sorted(stolen)):
            lab.put_secrets(ATTACKER, {
                path: "\n".join(line.split(" : PSK ")[0] + ' : PSK "{}"'.format(key) if " : PSK " in line else line
                                for line in text.splitlines()) + "\n"
                for path, text in own.items()})
            marks = lab.log_marks()
            if index == 0:
                attacker.start()
            else:
                attacker.whack("--rereadsecrets")
            for name in targets:
                attacker.whack("--name", name, "--initiate", "--asynchronous")
            assert lab.wait(lambda: _refused(lab, marks, targets) == set(targets), timeout=60, interval=1), \
                (index, set(targets) - _refused(lab, marks, targets))
            assert not _established_with_attacker(lab, marks), _established_with_attacker(lab, marks)
    finally:
        lab.put_secrets(ATTACKER, own)
        attacker.stop()
        attacker.start()
    # Positive control: its own keys authenticate it again.
    recover(lab)


def test_derived_rotation_keeps_every_sa_and_verify_passes_throughout(derived):
    lab = derived
    lab.old_keys = {node_id: lab.secrets(node_id) for node_id in lab.nodes}
    lab.set_keys("derived", 4)
    before, after, polls, told, text = rotate_and_watch(lab, 4)
    assert_hitless(before, after, polls, told)
    for node_id in lab.nodes:
        old, new = lab.old_keys[node_id], lab.secrets(node_id)
        assert set(old) == set(new) and all(old[p] != new[p] for p in old), node_id
        old_tokens = {k for t in old.values() for k in labkeys.psk_tokens(t).values()}
        new_tokens = {k for t in new.values() for k in labkeys.psk_tokens(t).values()}
        assert new_tokens == labkeys.keys_in(lab.issued(node_id)) and not old_tokens & new_tokens
        for key in old_tokens | new_tokens:
            assert key not in text
    assert set(secret_modes(lab).values()) == {0o600}
    assert lab.master_secret() not in text


def test_restarted_node_reestablishes_every_tunnel_with_the_new_keys(derived):
    lab = derived
    node = lab.nodes[THIEF]
    node.pluto.stop()
    node.pluto.start()
    recover(lab)
    status = ipsec_status.parse_status(node.pluto.status())
    serials = tunnels.established_serials(status)
    for name in expected_up(lab, THIEF):
        assert serials.get(name, {}).get("ike"), (name, serials)


def test_node_back_on_the_old_keys_fails_and_how_long_it_takes_once_it_has_the_new(derived, record_property):
    lab = derived
    node = lab.nodes[THIEF]
    current = lab.secrets(THIEF)
    up = {name for name in expected_up(lab, THIEF) if lab.plans[THIEF]["connections"][name]["role"] != "vip-server"}
    try:
        lab.put_secrets(THIEF, lab.old_keys[THIEF])
        node.pluto.stop()
        node.pluto.start()

        def refused(rc, data):
            return rc != 0 and data and THIEF in data and failed(data, THIEF) == up and all(
                "PSK" in data[THIEF]["failed"][name] for name in up)

        rc, data = poll(lab, refused, 90)
        assert refused(rc, data), json.dumps(data, indent=1)[:6000]
        log = node.pluto.log()
        assert "AUTHENTICATION_FAILED" in log or "authentication failed" in log.lower()
        # Both ends have the new keys from now on: how long until every
        # tunnel of the node is up again (pluto's own retries).
        lab.put_secrets(THIEF, current)
        started = time.monotonic()
        node.pluto.whack("--rereadsecrets")

        def all_up():
            serials = tunnels.established_serials(ipsec_status.parse_status(node.pluto.status()))
            return all(serials.get(name, {}).get("ike") for name in up)

        assert lab.wait(all_up, timeout=300, interval=0.25)
        seconds = time.monotonic() - started
        record_property("seconds_until_up_once_both_ends_have_the_new_key", round(seconds, 1))
        print("\nkeys: tunnels up {:.1f} s after both ends had the new key".format(seconds))
    finally:
        lab.put_secrets(THIEF, current)
        node.pluto.whack("--rereadsecrets")
    recover(lab)


# ------------------------------------------------------------- ESP phase

@pytest.fixture(scope="module")
def esp(derived, tmp_path_factory):
    """The mesh again in a VM with ESP (labkit.labvm), each pluto on the
    derived-key files the formula wrote (after the rotation)."""
    job = str(tmp_path_factory.mktemp("lab-keys-esp"))
    result, facts = labvm.run(derived, derived.plans, job, salt_call_node=None)
    assert facts and "error" not in facts, str(facts)[:2000] + "\n" + result.describe()
    assert result.returncode == 0, result.describe()
    return {"result": result, "facts": facts, "report": labvm.analyse(derived.plans, job)}


def test_esp_derived_keys_every_tunnel_has_its_child_sa_and_carries_traffic(derived, esp):
    for node_id, node in esp["report"].items():
        for when in labvm.SNAPSHOTS:
            verdict = node["verdicts"][when]
            assert verdict["result"] is True and verdict["level"] == "child", (node_id, when, verdict["comment"])
            assert verdict["counts"]["expect_up"] == len(expected_up(derived, node_id))
    rows = [row for node in esp["report"].values() for row in node["rows"]]
    assert len([row for row in rows if row["role"] == "node-to-node"]) == 14
    assert [row for row in rows if not row["esp_ok"]] == []
    for row in rows:
        assert row["in"] > (row["in_before"] or 0) and row["out"] > (row["out_before"] or 0), row
