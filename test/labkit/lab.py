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

import yaml

from labkit import examples, netns, saltenv, tunnels
from labkit.mesh import MASTER_ADDRESS, Mesh, MeshNode

BIN = os.path.dirname(sys.executable)


class LabNode(MeshNode):
    def __init__(self, workdir, node_id, addresses):
        super().__init__(workdir, node_id, addresses)
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
        self.minion = _start_daemon(self.launcher(), "salt-minion", self.conf_dir, config)

    def launcher(self):
        """argv prefix that runs a daemon of this node where it lives."""
        return ["ip", "netns", "exec", self.ns.name]


class Lab:
    """The example cluster (labkit.examples.THREE_NODES) on a bridged mesh
    (labkit.mesh), driven by a salt-master."""

    node_class = LabNode

    def __init__(self, nodes=examples.THREE_NODES, vip_holder="controller-0", workdir=None):
        netns.sweep_stale()
        self.workdir = workdir or tempfile.mkdtemp(prefix="ipsec-lab-")
        self.vip_holder = vip_holder
        self.network_options = {}
        # Extra salt-master settings (a reactor; labkit.labkeys: ext_pillar)
        # and top-level ``ipsec`` pillar keys of the example (None: key removed).
        self.master_options = {}
        self.ipsec_overrides = {}
        self.mesh = None
        self.nodes = {}
        self.switch = None
        self.master = None
        self.master_dir = os.path.join(self.workdir, "master")
        self.pillar_dir = os.path.join(self.workdir, "pillar")
        try:
            self.mesh = Mesh(self.workdir, nodes, vip_holder, node_class=self.node_class)
            self.nodes, self.switch = self.mesh.nodes, self.mesh.switch
        except BaseException:
            self.close()
            raise

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
        config.update(self.master_options)
        self.master = _start_daemon(["ip", "netns", "exec", self.switch.name], "salt-master", self.master_dir, config)
        for node in self.nodes.values():
            node.start_minion()
        expected = set(self.nodes)
        if not self.wait(lambda: set(self.salt("*", "test.ping", timeout=5)[1] or {}) >= expected, timeout, 2):
            raise RuntimeError("minions did not answer the master within {}s".format(timeout))

    def add_node(self, node_id, addresses, timeout=90):
        """A node joins the running lab: its namespace on the bridges, its
        pillar (its own pluto), its minion, accepted by the master and
        answering. Its pluto is not started."""
        node = self.mesh.add_node(node_id, addresses)
        self.write_example_pillar()
        node.start_minion()
        if not self.wait(lambda: node_id in (self.salt(node_id, "test.ping", timeout=5)[1] or {}), timeout, 2):
            raise RuntimeError("{} did not answer the master within {}s".format(node_id, timeout))
        return node

    def salt(self, target, function, *args, timeout=120, tgt_type=None):
        """``salt <target> <function> <args>`` on the master: (retcode, {minion: return}).
        tgt_type: "list" for a comma-separated list of minion ids."""
        flags = {None: [], "glob": [], "list": ["-L"]}[tgt_type]
        cmd = ["ip", "netns", "exec", self.switch.name, os.path.join(BIN, "salt"), "-c", self.master_dir,
               "--out=json", "--timeout={}".format(timeout)] + flags + [target, function] + list(args)
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout + 60)
        return result.returncode, saltenv.parse_cli_json(result.stdout)

    def write_example_pillar(self, network_options=None):
        """The example's ``ipsec`` pillar, peers from the mine
        (``ipsec.addresses``), each node pointed at its own pluto.
        network_options: {network: {key: value}} merged into
        ``ipsec:networks`` (kept for later calls; None: keep the last)."""
        if network_options is not None:
            self.network_options = network_options
        common = {
            "ipsec": examples.pillar(inventory=False),
            "mine_functions": {"ipsec.addresses": []},
        }
        for network, options in self.network_options.items():
            common["ipsec"]["networks"][network].update(options)
        for key, value in self.ipsec_overrides.items():
            if value is None:
                common["ipsec"].pop(key, None)
            else:
                common["ipsec"][key] = value
        # The lab's nodes are namespaces: their firewall is theirs to change.
        common["ipsec"]["firewall"] = {"manage": True}
        self.write_pillar(common, lambda node: {"ipsec": {"lookup": node.pluto.lookup()}})

    def deploy(self, log=None):
        """What an operator does: pillar, salt up, ``saltutil.sync_all``,
        ``mine.update``, ``state.apply ipsec``, then every pluto started.
        Returns each node's ``ipsec.plan``. log(step, seconds, data)."""
        self.write_example_pillar()
        self.start_salt()
        plans = None
        for command in (["saltutil.sync_all"], ["mine.update"], ["state.apply", "ipsec"], ["ipsec.plan"]):
            started = time.monotonic()
            rc, data = self.salt("*", *command)
            if log:
                log(" ".join(command), time.monotonic() - started, rc, data)
            if rc != 0 or set(data or {}) != set(self.nodes):
                raise RuntimeError("salt '*' {} failed (rc={}): {}".format(
                    " ".join(command), rc, json.dumps(data, indent=1)[:3000]))
            plans = data
        self.start_plutos()
        return plans

    # --- tunnels ---------------------------------------------------------------

    # What pluto logs when it is told to change something (an add, a
    # delete, a secrets re-read).
    STATE_CHANGING = ("added IKEv2 connection", "terminating SAs", "loading secrets from")

    def sa_serials(self):
        """{node: labkit.tunnels.established_serials} from the formula's own
        ``salt '*' ipsec.status``."""
        rc, data = self.salt("*", "ipsec.status")
        if rc != 0 or set(data or {}) != set(self.nodes):
            raise RuntimeError("salt '*' ipsec.status failed (rc={}): {}".format(rc, str(data)[:2000]))
        return {node_id: tunnels.established_serials(status) for node_id, status in data.items()}

    def settled_serials(self, timeout=40):
        """``sa_serials`` once two captures 3 s apart agree (both ends
        initiate: a duplicate IKE SA can exist for a moment before pluto
        drops it)."""
        previous = {}

        def same():
            current = self.sa_serials()
            done = current == previous.get("v")
            previous["v"] = current
            return done

        self.wait(same, timeout=timeout, interval=3)
        return previous["v"]

    def log_marks(self):
        """Where each pluto's log ends now (for ``told_since``)."""
        return {node_id: len(node.pluto.log()) for node_id, node in self.nodes.items()}

    def told_since(self, marks):
        """{node: [state-changing lines its pluto logged since marks]}.

        Not pluto's own periodic re-orientation: on the VIP holder a client
        conn has both ends local, and now and then (its DDNS/orientation
        check) pluto logs 'two interfaces match "X"' and then terminates
        the SAs X does not have; nobody told it anything."""
        out = {}
        for node_id, node in self.nodes.items():
            lines = node.pluto.log()[marks.get(node_id, 0):].splitlines()
            told, previous = [], ""
            for line in lines:
                own = "terminating SAs" in line and "two interfaces match" in previous and \
                    previous.split('"')[1:2] == line.split('"')[1:2]
                if any(marker in line for marker in self.STATE_CHANGING) and not own:
                    told.append(line)
                previous = line
            out[node_id] = told
        return out

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
        if self.mesh:
            self.mesh.close()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _write_sls(path, data, shebang=True):
    with open(path, "w") as handle:
        if shebang:
            # Plain YAML: Salt logs Jinja-rendered pillar at debug level.
            handle.write("#!yaml\n")
        yaml.safe_dump(data, handle, default_flow_style=False)


def _start_daemon(launcher, program, conf_dir, config):
    """Write ``<conf_dir>/minion|master`` and start the Salt daemon through
    ``launcher`` (``ip netns exec`` or ``nsenter``: both exec it, so the pid
    is the daemon's)."""
    os.makedirs(conf_dir, exist_ok=True)
    with open(os.path.join(conf_dir, program.split("-")[1]), "w") as handle:
        yaml.safe_dump(config, handle)
    return subprocess.Popen(
        launcher + [os.path.join(BIN, program), "-c", conf_dir, "--log-level=quiet"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
