"""A multi-node lab: one namespace per node, one bridge per network.

A "switch" namespace holds a Linux bridge for every network of the example;
each node namespace gets a veth into the bridge of every network it is on,
with its address there (and, on the VIP holder, the VIPs). Every node has an
isolated pluto rooted in its own directory and a salt-call --local minion
configuration that applies the formula from this checkout into that root.

Everything is created under one temporary directory and torn down by
``close()`` (also used as a context manager), whatever state it is in.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import yaml

from labkit import examples, netns, saltenv
from labkit.pluto import Pluto

SALT_CALL = os.path.join(os.path.dirname(sys.executable), "salt-call")


class LabNode:
    def __init__(self, lab, node_id, addresses):
        self.id = node_id
        self.addresses = addresses
        self.root = os.path.join(lab.workdir, node_id)
        self.ns = netns.Namespace(node_id.replace("controller", "ctl").replace("compute", "cmp"))
        self.pluto = Pluto(os.path.join(self.root, "pluto"), self.ns.name)
        self.conf_dir = os.path.join(self.root, "salt")
        self.pillar_dir = os.path.join(self.root, "pillar")

    def configure_salt(self, pillar):
        os.makedirs(self.conf_dir, exist_ok=True)
        config = saltenv.minion_overrides(self.pillar_dir, saltenv.node_grains(sorted(self.addresses.values())))
        config.update({"id": self.id, "root_dir": os.path.join(self.root, "salt-root"), "log_level_logfile": "info"})
        with open(os.path.join(self.conf_dir, "minion"), "w") as handle:
            yaml.safe_dump(config, handle)
        saltenv.write_pillar(self.pillar_dir, pillar)

    def salt_call(self, *args, check=True):
        cmd = [SALT_CALL, "-c", self.conf_dir, "--local", "--out=json", "--log-level=quiet"] + list(args)
        result = subprocess.run(cmd, capture_output=True, text=True)
        data = None
        try:
            data = json.loads(result.stdout)["local"]
        except (ValueError, KeyError, TypeError):
            pass
        if check and result.returncode != 0:
            raise RuntimeError("salt-call {} failed on {} ({}): {}".format(
                " ".join(args), self.id, result.returncode, (result.stdout + result.stderr)[-2000:]))
        return result.returncode, data


class Lab:
    """The example cluster (labkit.examples.THREE_NODES) on a bridged mesh."""

    def __init__(self, nodes=examples.THREE_NODES, vip_holder="controller-0", workdir=None):
        netns.sweep_stale()
        self.workdir = workdir or tempfile.mkdtemp(prefix="ipsec-lab-")
        self.nodes = {}
        self.switch = None
        try:
            self._build(nodes, vip_holder)
        except BaseException:
            self.close()
            raise

    def _build(self, nodes, vip_holder):
        self.switch = netns.Namespace("switch")
        prefixes = {name: net["cidr"].split("/")[1] for name, net in examples.NETWORKS.items()}
        for network in examples.NETWORKS:
            self.switch.exec(["ip", "link", "add", "br-" + network[:10], "type", "bridge"])
            self.switch.exec(["ip", "link", "set", "br-" + network[:10], "up"])
        vips = [net["vip"] for net in examples.NETWORKS.values() if net.get("vip")] + ["198.51.100.101"]
        for node_id, addresses in nodes.items():
            node = LabNode(self, node_id, addresses)
            self.nodes[node_id] = node
            for network, address in sorted(addresses.items()):
                extra = []
                if node_id == vip_holder:
                    extra = ["{}/{}".format(v, "32" if ":" not in v else "128") for v in vips
                             if _in_network(v, network)]
                dev, port = netns.link(node.ns, self.switch, ["{}/{}".format(address, prefixes[network])] + extra, [])
                self.switch.exec(["ip", "link", "set", port, "master", "br-" + network[:10]])

    def apply(self, pillar_for):
        """Configure and apply the formula on every node (salt-call --local)."""
        results = {}
        for node in self.nodes.values():
            node.configure_salt(pillar_for(node))
            results[node.id] = node.salt_call("state.apply", "ipsec")[1]
        return results

    def start_plutos(self):
        for node in self.nodes.values():
            node.pluto.start()

    def wait(self, predicate, timeout=30, interval=0.5):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(interval)
        return predicate()

    def close(self):
        for node in self.nodes.values():
            node.pluto.stop()
            node.ns.close()
        if self.switch:
            self.switch.close()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _in_network(address, network):
    import netaddr

    return netaddr.IPAddress(address) in netaddr.IPNetwork(examples.NETWORKS[network]["cidr"])
