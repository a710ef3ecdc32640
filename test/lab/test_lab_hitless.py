"""Hitless apply in the lab: the formula re-applied through the salt-master
on a running mesh changes only what changed in each node's pluto.

Its own lab (labkit.lab: three nodes, peers from the mine, a pluto per
node), in order:
- a re-apply with nothing changed: no state reports a change and no pluto
  receives a state-changing call (its log) nor renegotiates (serials);
- a fourth node (compute-1) joins: ``test=True`` predicts exactly what the
  run then changes; each old node adds exactly its new conns and re-reads
  secrets; every pre-existing IKE SA keeps its serial;
  the new node's tunnels come up;
- the same join replayed in a VM (labkit.labjoin), where every tunnel
  carries ESP: the old nodes re-apply with ``salt-call`` and no
  pre-existing IKE SA or Child SA is renegotiated;
- storage's algorithm changes: only storage's conns are replaced, the
  other networks keep their SAs;
- a bad algorithm override: every node fails at render time naming the
  pillar key, before anything is written or told to pluto.

Evidence is the SA serial numbers pluto reports (``salt '*' ipsec.status``:
a renegotiated SA gets a new one) and each pluto's log.
"""

import hashlib
import json
import os

import pytest

from labkit import examples, labjoin
from labkit.lab import Lab

TUNNEL_STATE = "ipsec-tunnel-files-managed"
JOINING = examples.JOINING
NEW = sorted(JOINING)[0]
UP_TIMEOUT = 120


def verify(lab, level="ike"):
    return lab.salt("*", "ipsec.verify", "level=" + level)


def failures(states):
    """{node: {state id: comment}} of the states that did not succeed."""
    return {node_id: ({k: v["comment"] for k, v in node_states.items() if v["result"] is not True}
                      if isinstance(node_states, dict) else node_states)
            for node_id, node_states in states.items()}


def apply(lab, *args):
    """``salt '*' state.apply ipsec [args]``: (retcode, {node: {state id: state}})."""
    rc, data = lab.salt("*", "state.apply", "ipsec", *args, timeout=300)
    assert isinstance(data, dict) and set(data) == set(lab.nodes), data
    states = {}
    for node_id, returned in data.items():
        if isinstance(returned, dict):
            states[node_id] = {value["__id__"]: dict(value, module=key.split("_|-")[0])
                               for key, value in returned.items()}
        else:
            states[node_id] = returned  # a render error: a list of messages
    return rc, states


def files_digest(lab):
    digest = {}
    for node_id, node in lab.nodes.items():
        etc = os.path.join(node.pluto.root, "etc")
        for folder, _, names in os.walk(etc):
            for name in sorted(names):
                path = os.path.join(folder, name)
                with open(path, "rb") as handle:
                    digest[path] = (hashlib.sha256(handle.read()).hexdigest(), oct(os.stat(path).st_mode))
    return digest


def base_name(conn):
    """A VIP server instance ``name[N]`` belongs to conn ``name``."""
    return conn.split("[", 1)[0]


def network_of(plan, conn):
    return plan["connections"][base_name(conn)]["network"]


def wait_verified(lab):
    last = {}

    def ok():
        last["v"] = verify(lab)
        return last["v"][0] == 0 and set(last["v"][1] or {}) == set(lab.nodes)

    assert lab.wait(ok, timeout=UP_TIMEOUT, interval=2), json.dumps(last["v"], indent=1)[:4000]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    with Lab() as built:
        built.plans = built.deploy()
        built.job = str(tmp_path_factory.mktemp("lab-join"))
        wait_verified(built)
        labjoin.save_files(built, "before", built.job)
        yield built


def test_reapply_without_change_changes_nothing_and_tells_pluto_nothing(lab):
    before = lab.settled_serials()
    marks = lab.log_marks()
    rc, states = apply(lab)
    assert rc == 0, states
    for node_id, node_states in states.items():
        for state_id, state in node_states.items():
            assert state["result"] is True, (node_id, state_id, state["comment"])
            assert state["changes"] == {}, (node_id, state_id, state["changes"])
        assert "pluto has every planned conn" in node_states[TUNNEL_STATE]["comment"]
    assert lab.told_since(marks) == {node_id: [] for node_id in lab.nodes}
    assert lab.settled_serials() == before


@pytest.fixture(scope="module")
def joined(lab):
    """compute-1 joins the running lab the way an operator adds a node:
    its minion, ``saltutil.sync_all`` there, ``mine.update`` everywhere,
    ``state.apply ipsec`` everywhere, then its pluto starts."""
    before = lab.settled_serials()
    marks = lab.log_marks()
    for node_id, addresses in JOINING.items():
        lab.add_node(node_id, addresses)
    assert lab.salt(NEW, "saltutil.sync_all")[0] == 0
    assert lab.salt("*", "mine.update")[0] == 0
    rc, predicted = apply(lab, "test=True")
    assert rc == 0, json.dumps(failures(predicted), indent=1)
    rc, states = apply(lab)
    assert rc == 0, json.dumps(failures(states), indent=1)
    for node_id in JOINING:
        lab.nodes[node_id].pluto.start()
    rc, plans = lab.salt("*", "ipsec.plan")
    assert rc == 0 and set(plans) == set(lab.nodes)
    wait_verified(lab)
    after = lab.settled_serials()
    labjoin.save_files(lab, "after", lab.job)
    return {"before": before, "after": after, "states": states, "predicted": predicted,
            "told": lab.told_since(marks), "plans": plans}


def new_conns(lab, joined, node_id):
    return sorted(set(joined["plans"][node_id]["connections"]) - set(lab.plans[node_id]["connections"]))


def test_join_adds_only_the_new_tunnels_on_every_old_node(lab, joined):
    for node_id in examples.THREE_NODES:
        added = new_conns(lab, joined, node_id)
        # The node-to-node tunnels to compute-1 on the networks both are
        # on; the VIP conns (right=%any) stay as they are.
        shared = sorted(set(examples.THREE_NODES[node_id]) & set(JOINING[NEW]) - {"ctlplane"})
        assert [joined["plans"][node_id]["connections"][c]["network"] for c in added] == shared
        assert all(joined["plans"][node_id]["connections"][c]["peer"] == NEW for c in added)
        pluto = joined["states"][node_id][TUNNEL_STATE]["changes"]["pluto"]
        assert pluto == {"add": added, "secrets": "re-read"}, (node_id, pluto)
        # Pluto heard exactly that: one add per new conn, one re-read.
        told = joined["told"][node_id]
        assert sorted(line.split('"')[1] for line in told if "added IKEv2 connection" in line) == added, told
        assert any("loading secrets from" in line for line in told), told
        assert not [line for line in told if "terminating SAs" in line], told
    # The new node's pluto was not running: its files only.
    assert "pluto" not in joined["states"][NEW][TUNNEL_STATE]["changes"]


def test_join_test_mode_predicted_exactly_what_the_run_changed(joined):
    """The formula's own states predict the very changes; Salt's (cmd.run,
    file) say in their own test-mode words whether they would change."""
    for node_id, states in joined["states"].items():
        predicted = joined["predicted"][node_id]
        assert set(predicted) == set(states)
        for state_id, state in states.items():
            if state["module"] in ("ipsec", "ipsec_firewall", "ipsec_pacemaker"):
                assert predicted[state_id]["changes"] == state["changes"], (node_id, state_id)
            assert bool(predicted[state_id]["changes"]) == bool(state["changes"]), (node_id, state_id)
            assert predicted[state_id]["result"] is (None if state["changes"] else True), (node_id, state_id)


def test_join_keeps_every_pre_existing_ike_sa(lab, joined):
    for node_id in examples.THREE_NODES:
        before, after = joined["before"][node_id], joined["after"][node_id]
        assert before, node_id
        for conn, sas in before.items():
            assert after.get(conn) == sas, (node_id, conn, "renegotiated", sas, after.get(conn))


def test_join_brings_up_the_new_nodes_tunnels(lab, joined):
    rc, data = verify(lab)
    assert rc == 0
    new_plan = joined["plans"][NEW]
    assert {c["role"] for c in new_plan["connections"].values()} == {"node-to-node", "vip-client"}
    for name, conn in new_plan["connections"].items():
        assert data[NEW]["connections"][name]["ike_sa"], (name, data[NEW]["connections"][name])
    server = data[lab.vip_holder]["connections"]["overcloud-internal_api-vip-tunnel"]
    assert server["clients"][JOINING[NEW]["internal_api"]]["up"], server


# ------------------------------------------------------ the join with ESP

@pytest.fixture(scope="module")
def esp_join(lab, joined):
    old = examples.THREE_NODES
    result, facts = labjoin.run(lab, old, JOINING, lab.plans, joined["plans"], lab.job)
    assert facts, "the VM wrote no facts\n" + result.describe()
    assert "error" not in facts, facts["error"] + "\n" + result.describe()
    assert result.returncode == 0, result.describe()
    return {"result": result, "facts": facts, "report": labjoin.analyse(lab.job, old)}


def test_esp_join_old_nodes_apply_only_the_new_conns(lab, joined, esp_join):
    facts = esp_join["facts"]
    assert all(v["result"] for v in facts["before_verdicts"].values()), facts["before_verdicts"]
    for node_id, call in facts["apply"].items():
        assert call["returncode"] == 0, call
        states = call["states"]
        assert all(state["result"] is True for state in states.values()), states
        pluto = states[TUNNEL_STATE]["changes"]["pluto"]
        assert pluto == {"add": new_conns(lab, joined, node_id), "secrets": "re-read"}, (node_id, pluto)
    # The inventory pillar in the VM plans what the mine did on the host.
    assert facts["files_differ"] == {node_id: [] for node_id in examples.THREE_NODES}


def test_esp_join_keeps_every_ike_and_child_sa(esp_join):
    for node_id, node in esp_join["report"].items():
        # Every node-to-node and VIP tunnel had its Child SA before.
        assert node["before"] and all(sas["child"] for sas in node["before"].values()), (node_id, node["before"])
        # No SA a node had is gone: none was renegotiated.
        assert node["lost"] == {}, (node_id, node["lost"])
        # Every tunnel is exactly as it was: one IKE SA and one Child SA
        # (one end initiates: no crossed negotiations left a second pair).
        assert node["crossed"] == [] and node["added"] == {}, (node_id, node["crossed"], node["added"])


def test_esp_join_every_tunnel_carries_traffic_before_and_after(lab, joined, esp_join):
    facts = esp_join["facts"]
    assert all(v["result"] for v in facts["joined_verdicts"].values()), facts["joined_verdicts"]
    for phase, nodes in (("traffic_before", examples.THREE_NODES), ("traffic_after", lab.nodes)):
        udp = facts[phase]["udp"]
        assert set(udp) == set(nodes), phase
        for node_id, sends in udp.items():
            for send in sends:
                assert send["sent"] > 0 and send["echoed"] == send["sent"], (phase, node_id, send)
    labels = {send["label"] for send in facts["traffic_after"]["udp"][NEW]}
    assert set(joined["plans"][NEW]["connections"]) <= labels
    # One end of each tunnel initiates: no node holds two IKE or Child SAs
    # for one tunnel (crossed negotiations), before or after the join.
    for node_id, node in esp_join["report"].items():
        assert node["crossed"] == [], (node_id, node["crossed"])


# -------------------------------------------- algorithm change, bad input

def test_algorithm_change_replaces_only_that_networks_conns(lab, joined):
    before = lab.settled_serials()
    lab.write_example_pillar({"storage": {"algorithm": "aes_gcm256-null"}})
    rc, states = apply(lab)
    assert rc == 0, json.dumps(failures(states), indent=1)
    plans = joined["plans"]
    for node_id, node_states in states.items():
        storage = sorted(n for n, c in plans[node_id]["connections"].items() if c["network"] == "storage")
        changes = node_states[TUNNEL_STATE]["changes"]
        if storage:
            assert changes["pluto"] == {"replace": storage}, (node_id, changes["pluto"])
        else:
            assert changes == {}, (node_id, changes)
        # The VIP holder's replaced client conn is not initiated: both of
        # its ends are local there (its server conn serves the VIP).
        held = "not initiated while this node holds their VIP: overcloud-storage-node-to-vip-tunnel"
        assert (held in node_states[TUNNEL_STATE]["comment"]) == (node_id == lab.vip_holder), node_states
    wait_verified(lab)
    after = lab.settled_serials()
    renegotiated = 0
    for node_id, conns in before.items():
        for conn, sas in conns.items():
            if network_of(plans[node_id], conn) != "storage":
                assert after[node_id].get(conn) == sas, (node_id, conn, "renegotiated")
            elif plans[node_id]["connections"][base_name(conn)]["role"] == "node-to-node":
                assert after[node_id][conn] != sas, (node_id, conn, "not replaced")
                renegotiated += 1
    assert renegotiated == 2  # controller-0 <-> controller-1, seen from both ends


def test_bad_override_fails_everywhere_before_anything_is_touched(lab, joined):
    before, digest, marks = lab.settled_serials(), files_digest(lab), lab.log_marks()
    try:
        lab.write_example_pillar({"storage": {"algorithm": "aes_gcm128-sha1"}})
        rc, states = apply(lab)
        assert rc != 0
        for node_id, returned in states.items():
            text = json.dumps(returned)
            assert "ipsec:networks:storage:algorithm: Libreswan rejects 'aes_gcm128-sha1'" in text, (node_id, text)
            assert examples.PSK not in text
        assert files_digest(lab) == digest
        assert lab.told_since(marks) == {node_id: [] for node_id in lab.nodes}
        assert lab.settled_serials() == before
    finally:
        lab.write_example_pillar({"storage": {"algorithm": "aes_gcm256-null"}})
