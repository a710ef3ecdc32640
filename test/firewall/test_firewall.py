"""Firewall states against the real nft and iptables, inside namespaces.

salt-call runs inside the node's namespace (labkit.saltenv.call_in_netns),
so every rule it writes lives and dies with the namespace.
"""

import time

import pytest

from labkit import netns, saltenv
from labkit.pluto import Pluto

PSK = "firewall-test-psk-6b1e0c3a9d8f7e2b4a5c"
NODES = {
    "fw-a": {"internal_api": "198.51.100.1", "tenant": "2001:db8:0:1::1", "ctlplane": "198.51.100.129"},
    "fw-b": {"internal_api": "198.51.100.2", "tenant": "2001:db8:0:1::2", "ctlplane": "198.51.100.130"},
}


def pillar(layout, firewall):
    return {
        "psk": PSK,
        "networks": {
            "ctlplane": {"cidr": "198.51.100.128/25"},
            "internal_api": {"cidr": "198.51.100.0/25"},
            "tenant": {"cidr": "2001:db8:0:1::/64"},
        },
        "nodes": {n: {"addresses": {k: v for k, v in a.items() if k != "ctlplane"}} for n, a in NODES.items()},
        "cluster": {"detect": False},
        "conn_options": {"retransmit-timeout": "60s"},
        "lookup": layout.lookup(),
        "firewall": firewall,
    }


class FwNode:
    def __init__(self, node_id, ns, layout, factory):
        self.id, self.ns, self.layout, self.factory = node_id, ns, layout, factory
        self.cli = factory.salt_call_cli(timeout=180)

    def call(self, *args):
        return saltenv.call_in_netns(self.cli, self.ns.name, *args)

    def apply(self, *args):
        rc, data, output = self.call("state.apply", "ipsec", *args)
        assert isinstance(data, dict), output
        return rc, {v["__id__"]: v for v in data.values()}

    def set_pillar(self, firewall):
        saltenv.write_pillar(self.factory.pillar_dir, pillar(self.layout, firewall))


@pytest.fixture
def fw_node(salt_node, namespace_factory, tmp_path):
    def make(node_id, firewall):
        ns = namespace_factory(node_id)
        layout = Pluto(tmp_path / node_id, ns.name)
        factory = salt_node(node_id, sorted(NODES[node_id].values()), pillar(layout, firewall))
        return FwNode(node_id, ns, layout, factory)

    return make


def nft(ns, *args):
    return ns.exec(["nft"] + list(args), check=False)


def test_nftables_present_idempotent_predicted_and_cleaned(fw_node):
    node = fw_node("fw-a", {"manage": True})
    node.ns.add_stub(["198.51.100.1/25", "2001:db8:0:1::1/64", "198.51.100.129/25"])
    # An unrelated table of the host's own must survive everything below.
    nft(node.ns, "add", "table", "inet", "host_fw")
    nft(node.ns, "add", "chain", "inet", "host_fw", "input", "{ type filter hook input priority 0 ; }")
    nft(node.ns, "add", "rule", "inet", "host_fw", "input", "tcp", "dport", "22", "accept")

    predicted = node.apply("test=True")[1]["ipsec-firewall-managed"]
    assert predicted["result"] is None and len(predicted["changes"]["add"]) == 16
    assert nft(node.ns, "list", "table", "inet", "ipsec_formula").returncode != 0, "test=True wrote rules"

    rc, states = node.apply()
    assert rc == 0
    assert states["ipsec-firewall-managed"]["changes"]["add"] == predicted["changes"]["add"]
    listing = nft(node.ns, "list", "table", "inet", "ipsec_formula").stdout
    for expected in ("ip saddr 198.51.100.0/25 udp dport 500 accept",
                     "ip saddr 198.51.100.0/25 udp dport 4500 accept",
                     "ip daddr 198.51.100.0/25 meta l4proto esp accept",
                     "ip6 saddr 2001:db8:0:1::/64 meta l4proto ah accept",
                     "ip6 daddr 2001:db8:0:1::/64 udp dport 500 accept"):
        assert expected in listing
    assert "198.51.100.128/25" not in listing, "the control plane is not tunneled"

    rc, states = node.apply()
    assert rc == 0 and states["ipsec-firewall-managed"]["changes"] == {}

    # A rule added by hand to the formula's table is drift: replaced.
    nft(node.ns, "add", "rule", "inet", "ipsec_formula", "input", "tcp", "dport", "80", "accept")
    drift = node.apply("test=True")[1]["ipsec-firewall-managed"]
    assert drift["result"] is None and drift["changes"]["remove"] == ["foreign rule in chain input"]
    node.apply()
    assert "dport 80" not in nft(node.ns, "list", "table", "inet", "ipsec_formula").stdout

    rc, data, output = node.call("state.single", "ipsec_firewall.absent", "name=fw")
    assert rc == 0, output
    assert nft(node.ns, "list", "table", "inet", "ipsec_formula").returncode != 0
    assert "tcp dport 22 accept" in nft(node.ns, "list", "table", "inet", "host_fw").stdout


def _ike_up(pluto, count=1):
    """At least ``count`` established IKE SAs (one per planned tunnel)."""
    return pluto.status().count("(established IKE SA)") >= count


def _wait(predicate, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.3)
    return False


def test_iptables_rules_let_a_peer_negotiate_through_a_drop_policy(fw_node, pluto_factory):
    a = fw_node("fw-a", {"manage": True, "backend": "iptables"})
    b = fw_node("fw-b", {"manage": False})
    netns.link(a.ns, b.ns, ["198.51.100.1/25", "2001:db8:0:1::1/64"], ["198.51.100.2/25", "2001:db8:0:1::2/64"])
    # The host firewall of node a drops everything it does not allow.
    for tool in ("iptables", "ip6tables"):
        a.ns.exec([tool, "-P", "INPUT", "DROP"])
        a.ns.exec([tool, "-A", "INPUT", "-i", "lo", "-j", "ACCEPT"])
    a.ns.exec(["ip6tables", "-A", "INPUT", "-p", "ipv6-icmp", "-j", "ACCEPT"])  # neighbour discovery

    rc, states = a.apply()
    assert rc == 0, {k: v["comment"] for k, v in states.items() if v["result"] is not True}
    assert len(states["ipsec-firewall-managed"]["changes"]["add"]) == 16
    assert b.apply()[0] == 0
    v4 = a.ns.exec(["iptables", "-S", "INPUT"]).stdout.splitlines()
    assert v4[1] == "-A INPUT -s 198.51.100.0/25 -p udp -m udp --dport 500 -m comment --comment ipsec-formula -j ACCEPT"
    assert "-A INPUT -i lo -j ACCEPT" in v4, "the host's own rules stay"
    assert a.apply()[1]["ipsec-firewall-managed"]["changes"] == {}

    # Both ends initiate (auto=start); a's policy drops all inbound but
    # loopback, so a's replies and b's requests pass only through the
    # formula's rules.
    pluto_b = pluto_factory(b.layout.root, b.ns.name)
    pluto_a = pluto_factory(a.layout.root, a.ns.name)
    pluto_a.start()
    pluto_b.start()
    # Both tunnels, IPv4 and IPv6.
    assert _wait(lambda: _ike_up(pluto_a, 2) and _ike_up(pluto_b, 2), 20), pluto_b.status()[-3000:]

    # Negative control: without the formula's rules the same peers cannot
    # negotiate through a's drop policy.
    rc, data, output = a.call("state.single", "ipsec_firewall.absent", "name=fw", "backend=iptables")
    assert rc == 0, output
    assert "ipsec-formula" not in a.ns.exec(["iptables", "-S"]).stdout
    assert "-A INPUT -i lo -j ACCEPT" in a.ns.exec(["iptables", "-S"]).stdout
    pluto_a.stop()
    pluto_b.stop()
    pluto_a.start()
    pluto_b.start()
    assert not _wait(lambda: _ike_up(pluto_b), 8), "negotiated although a drops IKE: {}\n{}\n{}".format(
        pluto_b.status()[-1500:], a.ns.exec(["iptables", "-S"]).stdout, a.ns.exec(["ip6tables", "-S"]).stdout)
