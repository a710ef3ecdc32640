"""The lab's network without Salt: a "switch" namespace with one bridge per
network, one namespace per node with a veth into the bridge of every network
it is on (its address there and, on the VIP holder, the VIPs), and an
isolated pluto per node rooted at ``<workdir>/<node>/pluto``.

labkit.lab builds its mesh with this and adds Salt on top; the lab's VM
phase (labkit.labvm) rebuilds the very same mesh inside a VM and starts the
plutos on the files the formula wrote on the host. Only light imports here:
Python under emulation is slow to import.
"""

import os

from labkit import examples, netns
from labkit.pluto import Pluto

MASTER_ADDRESS = "198.51.100.129"


def bridge(network):
    return "br-" + network[:11]


class MeshNode:
    def __init__(self, workdir, node_id, addresses):
        self.id = node_id
        self.addresses = addresses
        self.root = os.path.join(workdir, node_id)
        self.ns = netns.Namespace(node_id.replace("controller", "ctl").replace("compute", "cmp"))
        self.pluto = Pluto(os.path.join(self.root, "pluto"), self.ns.name)
        self.devs = {}  # network -> this node's veth on that network's bridge

    def vip_dev(self, vip):
        """The node's device on the network of ``vip``."""
        for network, dev in self.devs.items():
            if examples.in_network(vip, network):
                return dev
        raise KeyError(vip)

    def add_vip(self, vip):
        self.ns.add_address(self.vip_dev(vip), examples.host_prefix(vip))

    def del_vip(self, vip):
        self.ns.exec(["ip", "addr", "del", examples.host_prefix(vip), "dev", self.vip_dev(vip)])

    def has_address(self, address):
        out = self.ns.exec(["ip", "-o", "addr", "show", "to", address], check=False).stdout
        return bool(out.strip())


class Mesh:
    """Namespaces and bridges of ``nodes`` (labkit.examples.THREE_NODES by
    default). ``node_class(workdir, node_id, addresses)`` makes the nodes.
    Call close() (also on failure: the constructor cleans up itself)."""

    def __init__(self, workdir, nodes=examples.THREE_NODES, vip_holder="controller-0", node_class=MeshNode):
        self.workdir = workdir
        self.nodes = {}
        self.switch = None
        try:
            self._build(nodes, vip_holder, node_class)
        except BaseException:
            self.close()
            raise

    def _build(self, nodes, vip_holder, node_class):
        self.switch = netns.Namespace("switch")
        self.vip_holder = vip_holder
        self.node_class = node_class
        for network in examples.NETWORKS:
            self.switch.exec(["ip", "link", "add", bridge(network), "type", "bridge"])
            self.switch.exec(["ip", "link", "set", bridge(network), "up"])
        self.switch.add_address(bridge("ctlplane"), "{}/{}".format(MASTER_ADDRESS, examples.prefix_length("ctlplane")))
        for node_id, addresses in nodes.items():
            self.add_node(node_id, addresses)

    def add_node(self, node_id, addresses):
        """A node joins: its namespace, a veth into the bridge of every
        network it is on (the VIPs too on the VIP holder). Returns it."""
        node = self.node_class(self.workdir, node_id, addresses)
        self.nodes[node_id] = node
        for network, address in sorted(addresses.items()):
            extra = []
            if node_id == self.vip_holder:
                extra = [examples.host_prefix(v) for v in examples.VIPS.values() if examples.in_network(v, network)]
            dev, port = netns.link(node.ns, self.switch, examples.node_cidrs({network: address}) + extra, [])
            node.devs[network] = dev
            self.switch.exec(["ip", "link", "set", port, "master", bridge(network)])
        return node

    def namespaces(self):
        return ([self.switch.name] if self.switch else []) + [node.ns.name for node in self.nodes.values()]

    def close(self):
        for node in self.nodes.values():
            node.ns.close()
        if self.switch:
            self.switch.close()
            self.switch = None
