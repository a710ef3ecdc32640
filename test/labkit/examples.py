"""Built-in example clusters (documentation address ranges only).

THREE_NODES: two controllers (cluster nodes sharing the VIPs) and one
compute node, on internal_api (with VIP and the redis VIP), storage (with
VIP; the compute node is not on it), tenant (IPv6) and ctlplane (never
tunneled).

The one place the example's addresses are written: the lab, the demo, the
pacemaker and tunnel tests take networks, node addresses and VIPs from here.
"""

import copy
import ipaddress

PSK = "demo-psk-4f8a1c0e9b7d2a6c5e3f1b8d7a9c0e2f"

NETWORKS = {
    "ctlplane": {"cidr": "198.51.100.128/25"},
    "internal_api": {"cidr": "198.51.100.0/25", "vip": "198.51.100.100"},
    "storage": {"cidr": "203.0.113.0/24", "vip": "203.0.113.100"},
    "tenant": {"cidr": "2001:db8:0:1::/64"},
}

THREE_NODES = {
    "controller-0": {
        "ctlplane": "198.51.100.130",
        "internal_api": "198.51.100.10",
        "storage": "203.0.113.10",
        "tenant": "2001:db8:0:1::10",
    },
    "controller-1": {
        "ctlplane": "198.51.100.131",
        "internal_api": "198.51.100.11",
        "storage": "203.0.113.11",
        "tenant": "2001:db8:0:1::11",
    },
    "compute-0": {
        "ctlplane": "198.51.100.140",
        "internal_api": "198.51.100.20",
        "tenant": "2001:db8:0:1::20",
    },
}
# A node that joins the running example cluster (the lab's hitless apply):
# a second compute node, on internal_api and tenant like compute-0.
JOINING = {
    "compute-1": {
        "ctlplane": "198.51.100.141",
        "internal_api": "198.51.100.21",
        "tenant": "2001:db8:0:1::21",
    },
}
FOUR_NODES = dict(THREE_NODES, **JOINING)
CLUSTER_NODES = ["controller-0", "controller-1"]
REDIS_VIP = "198.51.100.101"
# Every VIP of the example by name: the network VIPs and the redis extra VIP.
VIPS = dict({name: net["vip"] for name, net in NETWORKS.items() if net.get("vip")}, redis=REDIS_VIP)


def host_prefix(address):
    """``address/32`` or ``address/128``: how a VIP sits on its holder."""
    return "{}/{}".format(address, 128 if ":" in address else 32)


def prefix_length(network):
    return ipaddress.ip_network(NETWORKS[network]["cidr"]).prefixlen


def in_network(address, network):
    return ipaddress.ip_address(address) in ipaddress.ip_network(NETWORKS[network]["cidr"])


def node_cidrs(addresses, vips=False):
    """A node's addresses ({network: address}) in CIDR form (its network's
    prefix length), plus every VIP as a host address on the VIP holder."""
    cidrs = ["{}/{}".format(address, prefix_length(net)) for net, address in sorted(addresses.items())]
    return cidrs + ([host_prefix(vip) for vip in VIPS.values()] if vips else [])


def pillar(nodes=THREE_NODES, lookup=None, inventory=True, **extra):
    """The ``ipsec`` pillar of the example (a fresh copy each call)."""
    data = {
        "psk": PSK,
        "networks": copy.deepcopy(NETWORKS),
        "extra_vips": {"redis": {"network": "internal_api", "address": REDIS_VIP}},
        "cluster": {"nodes": list(CLUSTER_NODES)},
    }
    if inventory:
        data["nodes"] = {
            node: {"addresses": {k: v for k, v in addrs.items() if k != "ctlplane"}}
            for node, addrs in nodes.items()
        }
    if lookup:
        data["lookup"] = lookup
    # Tests that do not run in a namespace must not touch the host's
    # firewall; the firewall tests and the lab turn it on.
    data["firewall"] = {"manage": False}
    data.update(copy.deepcopy(extra))
    return data


def own_ips(node, nodes=THREE_NODES):
    return sorted(nodes[node].values())
