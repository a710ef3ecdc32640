"""Unit tests of the pure plan (_utils/ipsec_plan.py): topology, names,
keywords per Libreswan major version, and every validation case."""

import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from salt.exceptions import SaltInvocationError

import ipsec_plan
from labkit import examples


def plan_for(node, pillar=None, major=4, nodes=examples.THREE_NODES, mine=None, ips=None):
    conf = pillar if pillar is not None else examples.pillar(nodes)
    return ipsec_plan.build_plan(
        conf,
        node_id=node,
        own_ips=ips if ips is not None else examples.own_ips(node, nodes),
        major=major,
        config_dir="/etc/ipsec.d",
        cluster_node=node in examples.CLUSTER_NODES,
        mine_data=mine,
    )


def conns(plan, role=None):
    return {n for n, c in plan["connections"].items() if role is None or c["role"] == role}


# --- topology -------------------------------------------------------------

def test_three_nodes_three_networks_full_mesh_and_vips():
    plan = plan_for("controller-0")
    assert conns(plan, "node-to-node") == {
        "overcloud-internal_api-198.51.100.10-198.51.100.11",
        "overcloud-internal_api-198.51.100.10-198.51.100.20",
        "overcloud-storage-203.0.113.10-203.0.113.11",
        "overcloud-tenant-2001:db8:0:1::10-2001:db8:0:1::11",
        "overcloud-tenant-2001:db8:0:1::10-2001:db8:0:1::20",
    }
    assert conns(plan, "vip-server") == {
        "overcloud-internal_api-vip-tunnel", "overcloud-storage-vip-tunnel", "overcloud-redis-vip-tunnel",
    }
    assert conns(plan, "vip-client") == {
        "overcloud-internal_api-node-to-vip-tunnel", "overcloud-storage-node-to-vip-tunnel",
        "overcloud-redis-node-to-vip-tunnel",
    }
    assert set(plan["vips"]) == {"internal_api", "storage", "redis"}
    redis = plan["vips"]["redis"]
    assert redis == {
        "network": "internal_api",
        "address": "198.51.100.101",
        "resource": "tripleo-ipsec-redis",
        "vip_resource": "ip-198.51.100.101",
        "tunnel": "overcloud-redis-vip-tunnel",
        "fallback_tunnel": "overcloud-redis-node-to-vip-tunnel",
    }


def test_both_ends_of_every_tunnel_derive_the_same_name():
    plans = {node: plan_for(node) for node in examples.THREE_NODES}
    pairs = {}
    for node, plan in plans.items():
        for name, conn in plan["connections"].items():
            if conn["role"] == "node-to-node":
                pairs.setdefault(name, set()).add(node)
    assert pairs and all(len(ends) == 2 for ends in pairs.values()), pairs
    # 3 nodes on internal_api and tenant (3 pairs each), 2 on storage (1 pair)
    assert len(pairs) == 7


def test_compute_node_gets_clients_only_and_no_storage():
    plan = plan_for("compute-0")
    assert conns(plan, "vip-server") == set()
    assert plan["vips"] == {}
    assert conns(plan, "vip-client") == {
        "overcloud-internal_api-node-to-vip-tunnel", "overcloud-redis-node-to-vip-tunnel",
    }
    assert not any(c["network"] == "storage" for c in plan["connections"].values())


def test_vip_keywords_follow_tripleo():
    plan = plan_for("controller-1")
    server = plan["connections"]["overcloud-internal_api-vip-tunnel"]["keywords"]
    client = plan["connections"]["overcloud-internal_api-node-to-vip-tunnel"]["keywords"]
    assert server["left"] == "198.51.100.100" and server["right"] == "%any"
    assert server["leftid"] == "@internal_apivip" and server["rightid"] == "@overcloudinternal_apicluster"
    assert server["auto"] == "add" and server["dpdaction"] == "hold"
    assert client["left"] == "198.51.100.11" and client["right"] == "198.51.100.100"
    assert client["leftid"] == "@overcloudinternal_apicluster" and client["rightid"] == "@internal_apivip"
    assert client["auto"] == "start" and client["dpdaction"] == "restart"
    for kw in (server, client):
        assert kw["authby"] == "secret" and kw["failureshunt"] == "drop" and kw["esp"] == "aes_gcm128-null"


def test_files_and_secrets_by_tripleo_names():
    plan = plan_for("controller-0")
    d = "/etc/ipsec.d/overcloud-"
    assert set(plan["files"]) == {
        d + "internal_api-node-to-node-tunnels.conf", d + "internal_api-node-to-node-tunnels.secrets",
        d + "storage-node-to-node-tunnels.conf", d + "storage-node-to-node-tunnels.secrets",
        d + "tenant-node-to-node-tunnels.conf", d + "tenant-node-to-node-tunnels.secrets",
        d + "internal_api-vip-tunnels.conf", d + "internal_api-vip-tunnels.secrets",
        d + "storage-vip-tunnels.conf", d + "storage-vip-tunnels.secrets",
        d + "redis-vip-tunnels.conf", d + "redis-vip-tunnels.secrets",
    }
    modes = {meta["kind"]: meta["mode"] for meta in plan["files"].values()}
    assert modes == {"conf": "0640", "secrets": "0600"}
    ids = {tuple(s["ids"]) for s in plan["secrets"]}
    assert ("198.51.100.10", "198.51.100.20") in ids
    assert ("@redisvip", "@overcloudrediscluster") in ids
    assert all(s["psk"] == ipsec_plan.REDACTED for s in plan["secrets"])


def test_plan_is_json_and_psk_free_and_deterministic():
    first = plan_for("controller-0")
    text = json.dumps(first, sort_keys=True)
    assert examples.PSK not in text
    shuffled = examples.pillar()
    items = list(shuffled["nodes"].items())
    random.Random(4).shuffle(items)
    shuffled["nodes"] = dict(items)
    second = plan_for("controller-0", shuffled, ips=list(reversed(examples.own_ips("controller-0"))))
    assert json.dumps(second, sort_keys=False) == json.dumps(first, sort_keys=False)


def test_skip_list_and_default_ctlplane():
    plan = plan_for("controller-0")
    assert plan["networks"]["ctlplane"]["skipped"] is True
    assert not any(c["network"] == "ctlplane" for c in plan["connections"].values())
    pillar = examples.pillar(skip_networks=["ctlplane", "storage"])
    plan = plan_for("controller-0", pillar)
    assert not any(c["network"] in ("ctlplane", "storage") for c in plan["connections"].values())
    assert "storage" not in plan["vips"]

@pytest.mark.parametrize("skip", [None, [], ["storage"], ["storage_mgmt"]])
def test_control_plane_is_never_tunneled(skip):
    """skip_networks adds to the control plane, never replaces it (TripleO
    guide: every network except the control plane)."""
    pillar = examples.pillar(skip_networks=skip)
    pillar["networks"]["storage_mgmt"] = {"cidr": "2001:db8:0:2::/64"}
    pillar["networks"]["ctlplane"]["vip"] = "198.51.100.129"
    for node in ("controller-0", "compute-0"):
        plan = plan_for(node, pillar)
        assert plan["control_plane"] == "ctlplane"
        assert plan["networks"]["ctlplane"]["tunneled"] is False
        assert plan["networks"]["ctlplane"]["control_plane"] is True
        assert not any(c["network"] == "ctlplane" for c in plan["connections"].values())
        assert "ctlplane" not in plan["vips"] and "ctlplane" not in plan["firewall"]["networks"]


def test_control_plane_key_names_another_network():
    plan = plan_for("controller-0", examples.pillar(control_plane="storage"))
    assert plan["networks"]["storage"]["tunneled"] is False
    assert not any(c["network"] == "storage" for c in plan["connections"].values())
    # ctlplane is then an ordinary network: skip it explicitly if wanted.
    assert plan["networks"]["ctlplane"]["skipped"] is False


def test_skip_networks_takes_extra_vips_and_names_unknown_ones():
    plan = plan_for("controller-0", examples.pillar(skip_networks=["redis"]))
    assert not any("redis" in name for name in plan["connections"])
    assert any("internal_api-vip" in name for name in plan["connections"])
    with pytest.raises(SaltInvocationError, match=r"^ipsec:skip_networks: 'nova' is neither a network"):
        plan_for("controller-0", examples.pillar(skip_networks=["nova"]))


def test_ipv6_network():
    plan = plan_for("compute-0")
    conn = plan["connections"]["overcloud-tenant-2001:db8:0:1::11-2001:db8:0:1::20"]
    assert conn["keywords"]["left"] == "2001:db8:0:1::20"
    assert conn["keywords"]["right"] == "2001:db8:0:1::11"
    assert conn["network"] == "tenant"


def test_ipv6_addresses_are_canonicalised():
    nodes = {
        "a": {"tenant": "2001:DB8:0:1:0:0:0:A"},
        "b": {"tenant": "2001:db8:0:1::b"},
    }
    pillar = examples.pillar(nodes)
    plan = plan_for("b", pillar, nodes=nodes, ips=["2001:db8:0:1::b"])
    assert conns(plan, "node-to-node") == {"overcloud-tenant-2001:db8:0:1::a-2001:db8:0:1::b"}


def test_mine_sourced_peers():
    pillar = examples.pillar(inventory=False)
    mine = {
        node: {k: v for k, v in addrs.items() if k != "ctlplane"}
        for node, addrs in examples.THREE_NODES.items()
    }
    mine["stale-node"] = {"internal_api": "203.0.113.99"}  # outside: ignored with a warning
    plan = plan_for("controller-0", pillar, mine=mine)
    assert plan["peer_source"] == "mine"
    assert conns(plan) == conns(plan_for("controller-0"))
    assert any("stale-node" in w for w in plan["warnings"])


def test_own_address_excludes_vips_held_by_this_node():
    ips = examples.own_ips("controller-0") + ["198.51.100.100", "198.51.100.101"]
    plan = plan_for("controller-0", ips=ips)
    assert plan["addresses"]["internal_api"] == "198.51.100.10"


def test_node_not_on_any_network_gets_no_connections():
    plan = plan_for("outsider", ips=["2001:db8:ffff::1"])
    assert plan["connections"] == {} and plan["files"] == {}


# --- keywords per Libreswan version ---------------------------------------

def test_keywords_libreswan_5():
    plan = plan_for("controller-0", major=5)
    n2n = plan["connections"]["overcloud-internal_api-198.51.100.10-198.51.100.11"]["keywords"]
    client = plan["connections"]["overcloud-internal_api-node-to-vip-tunnel"]["keywords"]
    assert n2n["keyexchange"] == "ikev2" and "ikev2" not in n2n and n2n["esp"] == "aes_gcm128-null"
    assert "dpdaction" not in client and "dpdtimeout" not in client
    assert client["dpddelay"] == "5" and client["retransmit-timeout"] == "15s"


def test_keywords_libreswan_3():
    plan = plan_for("controller-0", major=3)
    n2n = plan["connections"]["overcloud-internal_api-198.51.100.10-198.51.100.11"]["keywords"]
    assert n2n["ikev2"] == "insist" and n2n["phase2alg"] == "aes_gcm128-null" and "esp" not in n2n


def test_algorithm_and_options_overrides():
    pillar = examples.pillar(
        algorithm="aes_gcm256-null",
        ike_algorithm="aes256-sha2_512",
        conn_options={"ikelifetime": "4h", "retransmit-timeout": None, "rekey": True},
    )
    pillar["networks"]["storage"]["algorithm"] = "aes256-sha2_512"
    pillar["networks"]["storage"]["conn_options"] = {"mtu": 1400}
    plan = plan_for("controller-0", pillar)
    api = plan["connections"]["overcloud-internal_api-198.51.100.10-198.51.100.11"]["keywords"]
    storage = plan["connections"]["overcloud-storage-203.0.113.10-203.0.113.11"]["keywords"]
    assert api["esp"] == "aes_gcm256-null" and api["ike"] == "aes256-sha2_512"
    assert api["ikelifetime"] == "4h" and api["rekey"] == "yes" and "retransmit-timeout" not in api
    assert storage["esp"] == "aes256-sha2_512" and storage["mtu"] == "1400" and storage["ikelifetime"] == "4h"
    assert "mtu" not in api


def test_unknown_keys_warned():
    pillar = examples.pillar(algoritm="x")
    pillar["networks"]["storage"]["vpi"] = "203.0.113.5"
    plan = plan_for("controller-0", pillar)
    assert "ipsec:algoritm: unknown key, ignored (typo?)" in plan["warnings"]
    assert "ipsec:networks:storage:vpi: unknown key, ignored (typo?)" in plan["warnings"]


# --- validation -----------------------------------------------------------

def _with(mutate):
    pillar = examples.pillar()
    mutate(pillar)
    return pillar


INVALID = [
    ("missing psk", lambda p: p.pop("psk"), "ipsec:psk: is missing"),
    ("short psk", lambda p: p.update(psk="short"), "ipsec:psk: is too short (5 characters"),
    ("psk not a string", lambda p: p.update(psk=12345678901234567890123456789012345), "ipsec:psk: must be a string"),
    ("no networks", lambda p: p.pop("networks"), "ipsec:networks: is missing or empty"),
    ("invalid cidr", lambda p: p["networks"]["storage"].update(cidr="203.0.113.0/33"), "ipsec:networks:storage:cidr:"),
    ("cidr without prefix", lambda p: p["networks"]["storage"].update(cidr="203.0.113.0"), "ipsec:networks:storage:cidr:"),
    ("cidr host bits", lambda p: p["networks"]["storage"].update(cidr="203.0.113.7/24"),
     "ipsec:networks:storage:cidr: 203.0.113.7/24 has host bits set; did you mean 203.0.113.0/24?"),
    ("vip outside", lambda p: p["networks"]["storage"].update(vip="198.51.100.50"),
     "ipsec:networks:storage:vip: 198.51.100.50 is outside the network 203.0.113.0/24"),
    ("vip not an address", lambda p: p["networks"]["storage"].update(vip="203.0.113.x"), "ipsec:networks:storage:vip:"),
    ("extra vip unknown network", lambda p: p["extra_vips"]["redis"].update(network="nope"),
     "ipsec:extra_vips:redis:network: 'nope' is not a network"),
    ("extra vip outside", lambda p: p["extra_vips"]["redis"].update(address="203.0.113.5"),
     "ipsec:extra_vips:redis:address: 203.0.113.5 is outside"),
    ("extra vip named like a network", lambda p: p["extra_vips"].update(storage=p["extra_vips"].pop("redis")),
     "ipsec:extra_vips:storage: has the name of a network"),
    ("overlapping networks", lambda p: p["networks"].update(extra={"cidr": "198.51.100.64/26"}),
     "ipsec:networks: internal_api (198.51.100.0/25) overlaps extra (198.51.100.64/26)"),
    ("duplicate node address", lambda p: p["nodes"]["compute-0"]["addresses"].update(internal_api="198.51.100.11"),
     "address 198.51.100.11 of node"),
    ("node address equals vip", lambda p: p["nodes"]["compute-0"]["addresses"].update(internal_api="198.51.100.100"),
     "ipsec:nodes:compute-0:addresses:internal_api: address 198.51.100.100 of node compute-0 is already used by VIP internal_api"),
    ("node listed without address", lambda p: p["nodes"]["compute-0"]["addresses"].update(storage=None),
     "ipsec:nodes:compute-0:addresses:storage: node compute-0 is listed on storage but has no address there"),
    ("node address outside its network", lambda p: p["nodes"]["compute-0"]["addresses"].update(storage="198.51.100.30"),
     "ipsec:nodes:compute-0:addresses:storage: node compute-0 has no address on storage"),
    ("node on unknown network", lambda p: p["nodes"]["compute-0"]["addresses"].update(mgmt="198.51.100.7"),
     "ipsec:nodes:compute-0:addresses:mgmt: 'mgmt' is not a network"),
    ("inventory disagrees with grains", lambda p: p["nodes"]["controller-0"]["addresses"].update(internal_api="198.51.100.9"),
     "ipsec:nodes:controller-0:addresses:internal_api: 198.51.100.9 is not an address of this node"),
    ("unknown skip network", lambda p: p.update(skip_networks=["ctlplane", "stroage"]),
     "ipsec:skip_networks: 'stroage' is neither a network"),
    ("algorithm injection", lambda p: p.update(algorithm="aes\nconn evil"), "ipsec:algorithm:"),
    ("network algorithm injection", lambda p: p["networks"]["storage"].update(algorithm="aes gcm"),
     "ipsec:networks:storage:algorithm:"),
    ("option value injection", lambda p: p.update(conn_options={"ikelifetime": "8h\n\tauto=ignore"}),
     "ipsec:conn_options:ikelifetime:"),
    ("option key injection", lambda p: p.update(conn_options={"auto=add\nconn x": "y"}), "ipsec:conn_options:"),
    ("reserved option", lambda p: p.update(conn_options={"right": "198.51.100.1"}),
     "ipsec:conn_options:right: is set by the formula"),
    ("unknown keyword", lambda p: p.update(conn_options={"leftsubnet": "0.0.0.0/0"}),
     "ipsec:conn_options:leftsubnet: is not a keyword the formula can override (known: "),
    ("typed value", lambda p: p.update(conn_options={"rekey": "8h"}),
     "ipsec:conn_options:rekey: '8h' is not a valid value (one of yes, no)"),
    ("silently accepted by checkconfig", lambda p: p["networks"]["storage"].update(conn_options={"mtu": "abc"}),
     "ipsec:networks:storage:conn_options:mtu: 'abc' is not a valid value"),
    ("proposal as option", lambda p: p.update(conn_options={"ike": "aes"}),
     "ipsec:conn_options:ike: proposals are set with ipsec:algorithm"),
    ("config setup value", lambda p: p.update(config_setup={"uniqueids": "maybe"}),
     "ipsec:config_setup:uniqueids: 'maybe' is not a valid value"),
    ("bad network name", lambda p: p["networks"].update({"my net": {"cidr": "2001:db8:5::/64"}}), "ipsec:networks:"),
    ("bad prefix", lambda p: p.update(prefix="over cloud"), "ipsec:prefix:"),
    ("networks not a mapping", lambda p: p.update(networks=["a"]), "ipsec:networks: must be a mapping"),
    ("bad vip resource template", lambda p: p.update(pacemaker={"vip_resource": "ip-{addr}"}),
     "ipsec:pacemaker:vip_resource: may only use"),
]


@pytest.mark.parametrize("mutate,message", [(m, msg) for _, m, msg in INVALID], ids=[i for i, _, _ in INVALID])
def test_invalid_pillar_names_the_key(mutate, message):
    with pytest.raises(SaltInvocationError) as info:
        plan_for("controller-0", _with(mutate))
    assert message in str(info.value)
    assert examples.PSK not in str(info.value)


def test_cluster_parsing():
    assert ipsec_plan.parse_cluster({}) == ("detect", True)
    assert ipsec_plan.parse_cluster({"cluster": {"nodes": ["a"]}}) == ("nodes", ["a"])
    assert ipsec_plan.parse_cluster({"cluster": {"grain": "roles:controller"}}) == ("grain", "roles:controller")
    assert ipsec_plan.parse_cluster({"cluster": {"detect": False}}) == ("none", None)
    with pytest.raises(SaltInvocationError, match="ipsec:cluster:nodes: must be a list"):
        ipsec_plan.parse_cluster({"cluster": {"nodes": "a"}})
    with pytest.raises(SaltInvocationError, match="ipsec:cluster:grain:"):
        ipsec_plan.parse_cluster({"cluster": {"grain": "roles"}})


def test_algorithm_sources_name_their_keys():
    pillar = examples.pillar(ike_algorithm="aes256-sha2_512")
    pillar["networks"]["storage"]["algorithm"] = "aes256-sha2_512"
    assert ipsec_plan.algorithm_sources(pillar) == [
        ("algorithm (default)", "esp", "aes_gcm128-null"),
        ("ike_algorithm", "ike", "aes256-sha2_512"),
        ("networks:storage:algorithm", "esp", "aes256-sha2_512"),
    ]


def test_node_addresses_for_the_mine():
    pillar = examples.pillar()
    ips = examples.own_ips("controller-0") + ["198.51.100.100", "10.0.0.1", "not-an-ip"]
    assert ipsec_plan.node_addresses(pillar, ips) == {
        "ctlplane": "198.51.100.130",
        "internal_api": "198.51.100.10",
        "storage": "203.0.113.10",
        "tenant": "2001:db8:0:1::10",
    }


def test_pillar_example_is_valid_and_every_key_is_known():
    """pillar.example stays in step with the code: it plans without error
    and without an unknown-key warning."""
    import os

    import yaml

    path = os.path.join(os.path.dirname(__file__), "..", "..", "pillar.example")
    with open(path) as handle:
        conf = yaml.safe_load(handle)["ipsec"]
    plan = ipsec_plan.build_plan(conf, "controller-0", ["198.51.100.10", "203.0.113.10", "2001:db8:0:1::10"],
                                 cluster_node=True, mine_data={"compute-0": {"internal_api": "198.51.100.20"}})
    assert plan["warnings"] == []
    assert plan["vips"] and plan["firewall"]["manage"] is True


@pytest.mark.parametrize("manage,cluster_node,running,expected", [
    (None, True, True, True), (None, True, False, False), (None, False, True, False),
    (False, True, True, False), (True, True, False, True),
])
def test_vip_resources_managed_by_default_where_pacemaker_runs(manage, cluster_node, running, expected):
    """TripleO set up the resource agents whenever pacemaker ran; an explicit
    ipsec:pacemaker:manage wins."""
    pillar = examples.pillar()
    if manage is not None:
        pillar["pacemaker"] = {"manage": manage}
    plan = ipsec_plan.build_plan(pillar, "controller-0", examples.own_ips("controller-0"),
                                 cluster_node=cluster_node, pacemaker_running=running)
    assert plan["pacemaker"]["manage"] is expected


# ------------------------------------------------------ one initiator per tunnel

def n2n(plan):
    return {n: c for n, c in plan["connections"].items() if c["role"] == "node-to-node"}


@settings(max_examples=40, deadline=None)
@given(hosts=st.sets(st.integers(1, 99), min_size=2, max_size=9),
       v6=st.sets(st.integers(1, 2 ** 32 - 1), min_size=9, max_size=9), major=st.sampled_from([3, 4, 5]))
def test_every_tunnel_has_exactly_one_initiator_both_ends_agree(hosts, v6, major):
    v6 = sorted(v6)
    nodes = {"node-{}".format(host): {"internal_api": "198.51.100.{}".format(host),
                                      "tenant": "2001:db8:0:1::{:x}:{:x}".format(v6[i] >> 16, v6[i] & 0xffff)}
             for i, host in enumerate(sorted(hosts))}
    ends = {}
    for node in nodes:
        plan = plan_for(node, nodes=nodes, major=major)
        for name, conn in n2n(plan).items():
            ends.setdefault(name, []).append((conn["keywords"]["auto"], conn["initiator"],
                                              conn["keywords"]["left"]))
    assert len(ends) == 2 * len(nodes) * (len(nodes) - 1) // 2
    for name, pair in ends.items():
        assert len(pair) == 2, (name, pair)
        assert sorted(auto for auto, _, _ in pair) == ["add", "start"], (name, pair)
        (auto_a, init_a, left_a), (_, init_b, _) = pair
        assert init_a == init_b, (name, pair)
        # The initiator is the end whose auto is start: the lower address.
        starter = left_a if auto_a == "start" else pair[1][2]
        assert starter == init_a == min((p[2] for p in pair), key=ipsec_plan._address_order)


@pytest.mark.parametrize("major", [3, 4, 5])
def test_one_keying_try_per_attempt_on_every_initiating_conn_of_4x(major):
    """4.x, a keying attempt timing out both retries and schedules a revival:
    two Child SAs for one conn. Every auto=start conn (node-to-node
    initiator, VIP client) of every node has keyingtries=1 on 4.x; no
    answering conn has it, and no other release gets it."""
    seen = set()
    for node in examples.THREE_NODES:
        for name, conn in plan_for(node, major=major)["connections"].items():
            keywords = conn["keywords"]
            seen.add((conn["role"], keywords["auto"]))
            want = "1" if major == 4 and keywords["auto"] == "start" else None
            assert keywords.get("keyingtries") == want, (node, name, keywords)
    assert {("node-to-node", "start"), ("node-to-node", "add"), ("vip-client", "start"),
            ("vip-server", "add")} <= seen, seen


def test_an_auto_override_applies_to_both_ends_and_names_no_initiator():
    pillar = examples.pillar(networks=dict(examples.NETWORKS, storage=dict(examples.NETWORKS["storage"],
                                                                               conn_options={"auto": "start"})))
    for node in ("controller-0", "controller-1"):
        for name, conn in n2n(plan_for(node, pillar=pillar)).items():
            if conn["network"] == "storage":
                assert conn["keywords"]["auto"] == "start" and conn["initiator"] is None
            else:
                assert conn["initiator"] == min(conn["keywords"]["left"], conn["keywords"]["right"],
                                                key=ipsec_plan._address_order)


@pytest.mark.parametrize("major, initiator, responder", [
    (4, {"dpdaction": "restart", "dpddelay": "5", "retransmit-timeout": "15s", "keyingtries": "1"},
     {"dpdaction": "clear", "dpddelay": "5", "retransmit-timeout": "15s"}),
    (5, {"dpddelay": "5", "retransmit-timeout": "15s"}, {"dpddelay": "5", "retransmit-timeout": "15s"}),
])
def test_node_to_node_liveness_per_release(major, initiator, responder):
    for node, want in (("controller-0", initiator), ("compute-0", responder)):
        conn = n2n(plan_for(node, major=major))["overcloud-internal_api-198.51.100.10-198.51.100.20"]
        got = {k: v for k, v in conn["keywords"].items() if k.startswith(("dpd", "retransmit", "keyingtries"))}
        assert got == want, (node, got)
