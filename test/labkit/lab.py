"""A multi-node lab: one namespace per node, one bridge per network, and a
real salt-master driving real salt-minions.

A "switch" namespace holds a Linux bridge for every network of the example
(labkit.examples); each node namespace gets a veth into the bridge of every
network it is on, with its address there (and, on the VIP holder, the VIPs).
The salt-master runs in the switch namespace on the control-plane bridge
(unencrypted, as in a real deployment); each node runs a salt-minion in its
namespace, so its grains are the namespace's real addresses, and an
isolated pluto rooted in its own directory. Peers are found through the Salt
mine (``ipsec.addresses``).

``Lab.close()`` (also the context manager's exit) tears everything down in
any state: daemons, plutos, namespaces, files.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import netaddr
import yaml

from labkit import examples, netns, saltenv
from labkit.pluto import Pluto

BIN = os.path.dirname(sys.executable)
MASTER_ADDRESS = "198.51.100.129"


class LabNode:
    def __init__(self, lab, node_id, addresses):
        self.id = node_id
        self.addresses = addresses
        self.root = os.path.join(lab.workdir, node_id)
        self.ns = netns.Namespace(node_id.replace("controller", "ctl").replace("compute", "cmp"))
        self.pluto = Pluto(os.path.join(self.root, "pluto"), self.ns.name)
        self.conf_dir = os.path.join(self.root, "salt")
        self.minion = None

    def start_minion(self):
        os.makedirs(self.conf_dir, exist_ok=True)
        config = {
            "id": self.id,
            "master": MASTER_ADDRESS,
            "root_dir": os.path.join(self.root, "salt-root"),
            "log_level_logfile": "info",
            "acceptance_wait_time": 1,
            "random_reauth_delay": 0,
            "mine_interval": 1,
        }
        with open(os.path.join(self.conf_dir, "minion"), "w") as handle:
            yaml.safe_dump(config, handle)
        self.minion = subprocess.Popen(
            ["ip", "netns", "exec", self.ns.name, os.path.join(BIN, "salt-minion"), "-c", self.conf_dir,
             "--log-level=quiet"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


class Lab:
    """The example cluster (labkit.examples.THREE_NODES) on a bridged mesh."""

    def __init__(self, nodes=examples.THREE_NODES, vip_holder="controller-0", workdir=None):
        netns.sweep_stale()
        self.workdir = workdir or tempfile.mkdtemp(prefix="ipsec-lab-")
        self.nodes = {}
        self.switch = None
        self.master = None
        self.master_dir = os.path.join(self.workdir, "master")
        self.pillar_dir = os.path.join(self.workdir, "pillar")
        try:
            self._build(nodes, vip_holder)
        except BaseException:
            self.close()
            raise

    # --- network -----------------------------------------------------------

    def _build(self, nodes, vip_holder):
        self.switch = netns.Namespace("switch")
        prefixes = {name: net["cidr"].split("/")[1] for name, net in examples.NETWORKS.items()}
        for network in examples.NETWORKS:
            bridge = _bridge(network)
            self.switch.exec(["ip", "link", "add", bridge, "type", "bridge"])
            self.switch.exec(["ip", "link", "set", bridge, "up"])
        self.switch.add_address(_bridge("ctlplane"), "{}/{}".format(MASTER_ADDRESS, prefixes["ctlplane"]))
        vips = [net["vip"] for net in examples.NETWORKS.values() if net.get("vip")] + [examples.REDIS_VIP]
        for node_id, addresses in nodes.items():
            node = LabNode(self, node_id, addresses)
            self.nodes[node_id] = node
            for network, address in sorted(addresses.items()):
                extra = []
                if node_id == vip_holder:
                    extra = ["{}/{}".format(v, 32 if ":" not in v else 128) for v in vips if _in(v, network)]
                _, port = netns.link(node.ns, self.switch, ["{}/{}".format(address, prefixes[network])] + extra, [])
                self.switch.exec(["ip", "link", "set", port, "master", _bridge(network)])

    # --- salt --------------------------------------------------------------

    def write_pillar(self, common, per_node=None):
        """Pillar on the master: ``common`` for every node, plus
        ``per_node(node)`` merged in (each node's own pluto root)."""
        os.makedirs(self.pillar_dir, exist_ok=True)
        top = {"base": {"*": ["common"]}}
        _write_sls(os.path.join(self.pillar_dir, "common.sls"), common)
        for node in self.nodes.values():
            name = "node_" + node.id.replace("-", "_")
            top["base"][node.id] = [name]
            _write_sls(os.path.join(self.pillar_dir, name + ".sls"), per_node(node) if per_node else {})
        _write_sls(os.path.join(self.pillar_dir, "top.sls"), top, shebang=False)

    def start_salt(self, timeout=90):
        os.makedirs(self.master_dir, exist_ok=True)
        config = {
            "interface": MASTER_ADDRESS,
            "root_dir": os.path.join(self.workdir, "master-root"),
            "auto_accept": True,
            "file_roots": {"base": [saltenv.REPO]},
            "pillar_roots": {"base": [self.pillar_dir]},
            "log_level_logfile": "info",
        }
        with open(os.path.join(self.master_dir, "master"), "w") as handle:
            yaml.safe_dump(config, handle)
        self.master = subprocess.Popen(
            ["ip", "netns", "exec", self.switch.name, os.path.join(BIN, "salt-master"), "-c", self.master_dir,
             "--log-level=quiet"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for node in self.nodes.values():
            node.start_minion()
        expected = set(self.nodes)
        if not self.wait(lambda: set(self.salt("*", "test.ping", timeout=5)[1] or {}) >= expected, timeout, 2):
            raise RuntimeError("minions did not answer the master within {}s".format(timeout))

    def salt(self, target, function, *args, timeout=120):
        """``salt <target> <function> <args>`` on the master: (retcode, {minion: return})."""
        cmd = ["ip", "netns", "exec", self.switch.name, os.path.join(BIN, "salt"), "-c", self.master_dir,
               "--out=json", "--static", "--timeout={}".format(timeout), target, function] + list(args)
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout + 60)
        try:
            data = json.loads(result.stdout) if result.stdout.strip() else {}
        except ValueError:
            data = None
        return result.returncode, data

    # --- tunnels ---------------------------------------------------------------

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
        daemons = [self.master] + [node.minion for node in self.nodes.values()]
        for process in daemons:
            if process is not None and process.poll() is None:
                process.terminate()
        for node in self.nodes.values():
            node.pluto.stop()
        deadline = time.monotonic() + 5
        for process in daemons:
            if process is not None:
                try:
                    process.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    pass
        # Whatever is left of this lab (daemon workers, a stubborn pluto)
        # runs from its directory: kill it by that.
        subprocess.run(["pkill", "-9", "-f", self.workdir], capture_output=True)
        for process in daemons:
            if process is not None:
                process.wait(5)
        for node in self.nodes.values():
            node.ns.close()
        if self.switch:
            self.switch.close()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _bridge(network):
    return "br-" + network[:11]


def _in(address, network):
    return netaddr.IPAddress(address) in netaddr.IPNetwork(examples.NETWORKS[network]["cidr"])


def _write_sls(path, data, shebang=True):
    with open(path, "w") as handle:
        if shebang:
            # Plain YAML: Salt logs Jinja-rendered pillar at debug level.
            handle.write("#!yaml\n")
        yaml.safe_dump(data, handle, default_flow_style=False)
