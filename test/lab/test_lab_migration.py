"""Migrating a mesh tripleo-ipsec deployed, through the master (issue 15).

The lab's three nodes start as TripleO left them: in each node's ipsec.d
the node-to-node files TripleO writes (``overcloud-<net>-node-to-node-
private-tunnels.conf`` with conns ``overcloud-private-node-to-node-<net>-
ip-<N>``, their secrets under the name the formula also uses), TripleO's
one cluster-wide PSK, an ipsec.conf that includes ipsec.d; the plutos run
them and the tunnels are up. Then the operator's way, through the master:

- without ``ipsec:adopt_tripleo`` every node refuses, naming the switch and
  TripleO's files; every file is byte-identical and every TripleO SA keeps
  its serial (nothing running is disturbed);
- with it, one ``state.apply ipsec`` per node replaces TripleO's mesh by
  the formula's: every planned tunnel up (``ipsec.verify``), no TripleO
  conn loaded, no TripleO file and no trace of TripleO's PSK left.

TripleO's pacemaker resource and pcs's constraints are adopted in
test/functional/test_migration.py (a file CIB: these lab nodes run no
cluster).
"""

import hashlib
import json
import os

import pytest

import ipsec_status
from labkit import examples, tunnels
from labkit.lab import Lab
from test_lab import recover

TRIPLEO_PSK = "tripleo-psk-9f3b7c1d5e2a8f6b4c0d1e7a3b5c9d2f"
PRIVATE = "private-node-to-node"


def tripleo_conns(node_id):
    """{network: [(conn name, left, right)]} as tripleo-ipsec numbers them:
    per network, its peers in inventory order, from 1."""
    own = examples.THREE_NODES[node_id]
    found = {}
    for network in sorted(examples.NETWORKS):
        if network == "ctlplane" or network not in own:
            continue
        peers = [addrs[network] for other, addrs in sorted(examples.THREE_NODES.items())
                 if other != node_id and network in addrs]
        found[network] = [("overcloud-private-node-to-node-{}-ip-{}".format(network, index), own[network], peer)
                          for index, peer in enumerate(peers, 1)]
    return found


def write_tripleo_node(node):
    pluto = node.pluto
    for network, conns in tripleo_conns(node.id).items():
        conf = "".join(
            "conn {}\n\ttype=tunnel\n\tauthby=secret\n\tleft={}\n\tleftid={}\n\tright={}\n\trightid={}\n"
            "\tfailureshunt=drop\n\tauto=start\n\tikev2=insist\n\tphase2alg=aes_gcm128-null\n\n".format(
                name, left, left, right, right) for name, left, right in conns)
        secrets = "".join('{} {} : PSK "{}"\n'.format(left, right, TRIPLEO_PSK) for _, left, right in conns)
        base = os.path.join(pluto.config_dir, "overcloud-{}-node-to-node-".format(network))
        with open(base + "private-tunnels.conf", "w") as handle:
            handle.write(conf)
        with open(base + "tunnels.secrets", "w") as handle:
            handle.write(secrets)
        os.chmod(base + "tunnels.secrets", 0o600)
    with open(pluto.config_file, "w") as handle:
        handle.write("config setup\n\tuniqueids=no\n\ninclude {}/*.conf\n".format(pluto.config_dir))
    with open(pluto.secrets_file, "w") as handle:
        handle.write("include {}/*.secrets\n".format(pluto.config_dir))


def digests(lab):
    found = {}
    for node in lab.nodes.values():
        etc = os.path.dirname(node.pluto.config_file)
        for base, _, files in os.walk(etc):
            for name in files:
                path = os.path.join(base, name)
                with open(path, "rb") as handle:
                    found[path] = hashlib.sha256(handle.read()).hexdigest()
    return found


def tripleo_serials(lab):
    out = {}
    for node_id, node in lab.nodes.items():
        established = tunnels.established_serials(ipsec_status.parse_status(node.pluto.status()))
        out[node_id] = {name: sas for name, sas in established.items() if PRIVATE in name}
    return out


def all_tripleo_up(lab):
    serials = tripleo_serials(lab)
    return all(set(serials[node_id]) == {name for conns in tripleo_conns(node_id).values()
                                          for name, _, _ in conns} for node_id in lab.nodes) and serials


def settled_tripleo_serials(lab, timeout=60):
    """TripleO's SA serials once two captures 3 s apart agree (both ends
    initiate: a duplicate IKE SA can live a moment before pluto drops it)."""
    seen = {}

    def same():
        current = all_tripleo_up(lab)
        done = bool(current) and current == seen.get("last")
        seen["last"] = current
        return done

    assert lab.wait(same, timeout=timeout, interval=3), seen
    return seen["last"]


@pytest.fixture(scope="module")
def lab():
    with Lab() as built:
        for node in built.nodes.values():
            write_tripleo_node(node)
        built.start_plutos()
        assert built.wait(lambda: all_tripleo_up(built), timeout=90, interval=2), tripleo_serials(built)
        built.write_example_pillar()
        built.start_salt()
        for command in (["saltutil.sync_all"], ["mine.update"]):
            rc, data = built.salt("*", *command)
            assert rc == 0 and set(data) == set(built.nodes), str(data)[:3000]
        yield built


def apply(lab):
    rc, data = lab.salt("*", "state.apply", "ipsec")
    text = json.dumps(data)
    assert TRIPLEO_PSK not in text and examples.PSK not in text
    return rc, data, text


def test_without_the_switch_every_node_refuses_and_nothing_moves(lab):
    before_files, before_sas = digests(lab), settled_tripleo_serials(lab)
    rc, data, text = apply(lab)
    assert rc != 0 and set(data) == set(lab.nodes), text[:3000]
    for node_id, states in data.items():
        told = json.dumps(states)
        assert "ipsec:adopt_tripleo: true" in told, (node_id, told[:3000])
        assert "node-to-node-private-tunnels.conf" in told, (node_id, told[:3000])
    assert digests(lab) == before_files
    assert tripleo_serials(lab) == before_sas


def test_with_the_switch_one_apply_replaces_tripleos_mesh_whole(lab):
    lab.ipsec_overrides["adopt_tripleo"] = True
    lab.write_example_pillar()
    rc, data = lab.salt("*", "saltutil.refresh_pillar", "wait=True")
    assert rc == 0, data
    rc, data, text = apply(lab)
    assert rc == 0, text[:6000]
    rc, plans = lab.salt("*", "ipsec.plan")
    assert rc == 0
    lab.plans = plans
    # Every planned tunnel of every node as planned (IKE level).
    recover(lab)
    for node_id, node in lab.nodes.items():
        loaded = set(ipsec_status.parse_loaded(node.pluto.status()))
        assert loaded == set(plans[node_id]["connections"]), (node_id, loaded)
        etc = os.path.dirname(node.pluto.config_file)
        for base, _, files in os.walk(etc):
            for name in files:
                assert PRIVATE not in name, (node_id, name)
                with open(os.path.join(base, name), "rb") as handle:
                    assert TRIPLEO_PSK.encode() not in handle.read(), (node_id, name)
