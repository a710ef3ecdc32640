"""The lab with a live pacemaker cluster: three controllers run corosync and
pacemaker (labkit.cluster), IPaddr2 holds the example's VIPs, and the
formula, applied through the lab's salt-master, creates the VIP tunnel
resources through the DC. Issue #16.

Each controller runs in its network namespace and in a mount namespace of
its own (the cluster node's): its minion and its pluto are started there
(nsenter), so the pacemaker CLI the formula calls reaches its cluster, the
agent the formula installs under /usr/lib/ocf is that node's, and its pluto
root is seen at the same path on every controller (COMMON, a bind mount of
the node's own root): one set of agent parameters in the CIB fits every
node, as on a real cluster. compute-0 is a client only, as in the example.

The lab only: stonith-enabled=false (a real cluster fences), and
resource-stickiness=100 so that a node coming back does not pull its VIPs
back (what operators set).
"""

import os
import subprocess
import xml.etree.ElementTree as ET

from labkit import examples, failover, lab, pcmk, waiting
from labkit.cluster import TOKEN_MS, Cluster
from labkit.pluto import Pluto

CONTROLLERS = ("controller-0", "controller-1", "controller-2")
NODES = dict(examples.THREE_NODES, **{"controller-2": {
    "ctlplane": "198.51.100.132",
    "internal_api": "198.51.100.12",
    "storage": "203.0.113.12",
    "tenant": "2001:db8:0:1::12",
}})


class ClusterPluto(Pluto):
    """A controller's pluto: run inside its cluster node's namespaces with
    the paths every controller shares (COMMON); its files are read through
    the node's own root from here."""

    def __init__(self, real_root, common, netns, node):
        super().__init__(real_root, netns)
        self.real_root = real_root
        self.node = node  # the labkit.cluster.Node
        self.common = common
        for attr in ("config_file", "secrets_file", "config_dir", "nss_dir", "rundir", "ctlsocket", "logfile"):
            setattr(self, attr, getattr(self, attr).replace(real_root, common, 1))
        self.root = common

    def _cmd(self, cmd):
        return self.node.prefix() + cmd

    def real(self, path):
        """Where a path of pluto's command line is, seen from here."""
        return path.replace(self.common, self.real_root, 1)

    def kill(self):
        """A power cut for pluto: SIGKILL, nothing said to its peers."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


class ClusterLabNode(lab.LabNode):
    """A lab node whose minion starts inside its cluster node's namespaces
    once ``cluster_node`` is set (controllers)."""

    cluster_node = None

    def launcher(self):
        return super().launcher() if self.cluster_node is None else self.cluster_node.prefix()


class ClusterLab(lab.Lab):
    node_class = ClusterLabNode

    def __init__(self, workdir=None, token=TOKEN_MS):
        super().__init__(nodes=NODES, vip_holder=None, workdir=workdir)
        self.common = os.path.join(self.workdir, "controller")
        os.makedirs(self.common, exist_ok=True)
        self.ipsec_overrides["cluster"] = {"nodes": list(CONTROLLERS)}
        # First apply without pacemaker (pluto is not up yet: the agent's
        # start would fail); deploy() turns it on for the second.
        self.ipsec_overrides["pacemaker"] = {"manage": False}
        self.cluster = Cluster(
            os.path.join(self.workdir, "cluster"),
            {node: (self.nodes[node].ns.name, NODES[node]["ctlplane"]) for node in CONTROLLERS},
            binds={node: [(os.path.join(self.nodes[node].root, "pluto"), self.common)] for node in CONTROLLERS},
            ocf=True, token=token)

    # --- the cluster ---------------------------------------------------------

    def start_cluster(self, timeout=120, vips=True):
        """The cluster up, its options set, each controller's pluto object
        moved into its node's namespaces; with ``vips`` the VIP resources
        created (without: they come with a configuration loaded later)."""
        self.cluster.start()
        if not self.cluster.wait_online(timeout):
            raise RuntimeError("the cluster did not form: " + self.crm("controller-0", "crm_mon", "-1").stdout)
        for node in CONTROLLERS:
            lab_node = self.nodes[node]
            lab_node.cluster_node = self.cluster.nodes[node]
            lab_node.pluto = ClusterPluto(lab_node.pluto.root, self.common, lab_node.ns.name,
                                          self.cluster.nodes[node])
        dc = CONTROLLERS[0]
        self.crm(dc, "crm_attribute", "-t", "crm_config", "-n", "stonith-enabled", "-v", "false", check=True)
        self.crm(dc, "crm_attribute", "-t", "rsc_defaults", "-n", "resource-stickiness", "-v", "100", check=True)
        for address in sorted(examples.VIPS.values()) if vips else ():
            self.crm(dc, "cibadmin", "--create", "-o", "resources", "--xml-text", pcmk.vip_primitive(address),
                     check=True)

    def crm(self, node, *cmd, check=False, timeout=60):
        return self.cluster.run(node, list(cmd), check=check, timeout=timeout)

    def any_up(self):
        return next(n for n, node in self.cluster.nodes.items() if node.process is not None)

    def locate(self, resource, via=None):
        """The node ``resource`` runs on (None: nowhere or unknown)."""
        out = self.crm(via or self.any_up(), "crm_resource", "--locate", "-r", resource).stdout
        return out.split("running on:")[-1].strip() if "running on:" in out else None

    def dc(self):
        """The cluster's designated controller (the node whose state changes the CIB)."""
        out = self.crm(self.any_up(), "crm_mon", "-1", "--output-as=text", check=True).stdout
        for line in out.splitlines():
            if "Current DC:" in line:
                return line.split("Current DC:", 1)[1].split()[0]
        raise RuntimeError("no DC: " + out)

    def configuration(self, via=None):
        """The CIB's configuration section (resources, constraints, options)."""
        return self.crm(via or self.any_up(), "cibadmin", "--query", "--scope", "configuration", check=True).stdout

    def failed_actions(self, via=None):
        out = self.crm(via or self.any_up(), "crm_mon", "-1", "--output-as=text").stdout
        return out.split("Failed Resource Actions:")[1].strip() if "Failed Resource Actions:" in out else ""

    def controllers_alive(self):
        return [n for n in CONTROLLERS if self.cluster.nodes[n].process is not None]

    def cluster_alive(self, node):
        """False only for a controller whose power is cut."""
        return node not in CONTROLLERS or self.cluster.nodes[node].process is not None

    def power_cut(self, node):
        """Everything of the controller at once: corosync, pacemaker, pluto,
        minion SIGKILLed; its links down (the VIPs IPaddr2 gave it stay
        configured but reach nobody, as after fencing)."""
        lab_node = self.nodes[node]
        self.cluster.nodes[node].kill()  # pluto and the minion run in its namespaces too
        for process in (lab_node.pluto.process, lab_node.minion):
            if process is not None:
                process.wait(10)
        for dev in lab_node.devs.values():
            lab_node.ns.exec(["ip", "link", "set", dev, "down"])

    def power_on(self, node, timeout=120):
        """The controller boots again: no VIP address left, links up, its
        cluster node, pluto (on its files) and minion started."""
        lab_node = self.nodes[node]
        for address in examples.VIPS.values():
            if lab_node.has_address(address):
                lab_node.del_vip(address)
        for network, dev in lab_node.devs.items():
            lab_node.ns.exec(["ip", "link", "set", dev, "up"])
            # The kernel drops IPv6 addresses with the link: the network
            # config gives them back at boot.
            address = NODES[node][network]
            if not lab_node.has_address(address):
                for cidr in examples.node_cidrs({network: address}):
                    lab_node.ns.add_address(dev, cidr)
        self.cluster.nodes[node].start()
        if not self.cluster.wait_online(timeout, names=[node]):
            raise RuntimeError("{} did not rejoin the cluster".format(node))
        lab_node.pluto.clear_run_state()
        lab_node.pluto.start(timeout=60)
        lab_node.start_minion()

    def sabotage_agent(self, node, old, new):
        """Replace ``old`` by ``new`` in the agent the formula installed on
        ``node`` (a negative control; the next state.apply restores it)."""
        path = os.path.join(self.cluster.nodes[node].root, "ocf", "ipsec-formula", "vip-tunnel")
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
        if text.count(old) != 1:
            raise ValueError("{!r} is not once in {}".format(old, path))
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text.replace(old, new))

    # --- salt ----------------------------------------------------------------

    def deploy(self, log=None):
        """Cluster up, VIPs placed, then the operator's two applies: the
        formula without pacemaker (files), plutos started, then with
        pacemaker management on (the DC creates the tunnel resources).

        The second apply goes to the DC first, alone, so a first
        deployment's race is certain, not left to load: the DC creates the
        tunnel resources before the other controllers have the agent, and
        their probes record "not installed", which bans the resources from
        them. Their own states must clean that up
        (ipsec_pacemaker.agent_missing_cleared). What they predicted with
        test=True and what they then did are kept in ``first_deploy``."""
        self.start_cluster()
        dc = self.dc()
        self._vips_off(dc)
        plans = super().deploy(log=log)
        self.ipsec_overrides["pacemaker"] = {"manage": True}
        self.write_example_pillar()
        others = sorted(set(self.nodes) - {dc})
        self.first_deploy = {"dc": dc, "probed": None, "predicted": None, "applied": None,
                             "vips_before": self.vip_locations()}
        rc, data = self.salt(dc, "state.apply", "ipsec")
        self.first_deploy["dc_applied"] = data
        if rc == 0:
            late = [node for node in others if node in CONTROLLERS]
            self.first_deploy["probed"] = waiting.until(lambda: self.probed(late), 60, 0.5)
            # The bans move every VIP to a node with the agent: wait until
            # pacemaker is done with that.
            if not waiting.until(lambda: self.crm(self.any_up(), "crm_resource", "--wait", "--timeout",
                                                  "5s").returncode == 0, 60, 1):
                raise RuntimeError("the cluster did not settle after the DC's apply: " + self.failed_actions())
            self.first_deploy["vips_after_dc"] = after = self.vip_locations()
            # Where a VIP left: what the formula's verify says before that
            # node's own state has run.
            losers = sorted({old for address, old in self.first_deploy["vips_before"].items()
                             if old and old != after.get(address)})
            self.first_deploy["verify_before"] = (
                self.salt(",".join(losers), "ipsec.verify", "level=ike", tgt_type="list")[1] if losers else {})
            rc, predicted = self.salt(",".join(others), "state.apply", "ipsec", "test=True", tgt_type="list")
            self.first_deploy["predicted"] = predicted
        if rc == 0:
            rc, more = self.salt(",".join(others), "state.apply", "ipsec", tgt_type="list")
            self.first_deploy["applied"] = more
            data = dict(data or {}, **(more or {}))
        if rc == 0:
            self.first_deploy["nudged"] = self._nudge_after_moves(plans)
        if log:
            log("state.apply ipsec (pacemaker on)", 0, rc, data)
        if rc != 0:
            raise RuntimeError("state.apply with pacemaker failed: {}".format(str(data)[:3000]))
        return self.salt("*", "ipsec.plan")[1]

    def _vips_off(self, dc):
        """No VIP on the DC before the plutos start, so that the first
        deployment's bans move every VIP (to the DC, the only node with the
        agent then) and every old holder's state has a VIP to let go of."""
        target = next(node for node in CONTROLLERS if node != dc)
        for vip_resource in self._vip_resources():
            if waiting.until(lambda: self.locate(vip_resource), 60, 0.5) != dc:
                continue
            self.crm(dc, "crm_resource", "--move", "-r", vip_resource, "-N", target, check=True)
            if not waiting.until(lambda: self.locate(vip_resource) == target, 60, 0.5):
                raise RuntimeError("{} did not move off the DC".format(vip_resource))
            self.crm(dc, "crm_resource", "--clear", "-r", vip_resource, check=True)

    def _vip_resources(self):
        return {primitive.get("id"): next(p.get("value") for p in primitive.iter("nvpair") if p.get("name") == "ip")
                for primitive in ET.fromstring(self.configuration()).iter("primitive")
                if primitive.get("type") == "IPaddr2"}

    def _nudge_after_moves(self, plans):
        """On a kernel without ESP, what liveness does for the clients of
        the VIPs the bans moved (labkit.failover.nudge_clients): the old
        holder's pluto let go of the VIP (its state) and its delete
        notifications could not leave from the gone address ("Network is
        unreachable"), so the clients' IKE SAs to it look established
        forever. {VIP address: nodes nudged}."""
        by_address = {vip["address"]: vip for vip in failover.vip_facts(plans).values()}
        before, after = self.first_deploy["vips_before"], self.first_deploy["vips_after_dc"]
        return {address: failover.nudge_clients(self, plans, by_address[address], old, after.get(address))
                for address, old in sorted(before.items()) if old != after.get(address)}

    def vip_locations(self):
        """{VIP address: the node its IPaddr2 resource runs on}."""
        return {address: self.locate(vip_resource) for vip_resource, address in self._vip_resources().items()}

    def tunnel_resources(self):
        """Ids of the CIB's primitives of the formula's agent."""
        configuration = ET.fromstring(self.configuration())
        return sorted(p.get("id") for p in configuration.iter("primitive") if p.get("type") == "vip-tunnel")

    def probed(self, nodes):
        """Has every one of ``nodes`` a result for every tunnel resource
        (pacemaker probes a new resource on every node)?"""
        status = ET.fromstring(self.crm(self.any_up(), "cibadmin", "--query", "--scope", "status",
                                        check=True).stdout)
        seen = {(state.get("uname"), history.get("id"))
                for state in status.iter("node_state") for history in state.iter("lrm_resource")}
        resources = self.tunnel_resources()
        return bool(resources) and all((node, r) in seen for node in nodes for r in resources)

    def close(self):
        for node in CONTROLLERS:  # while their namespaces are there to whack into
            try:
                self.nodes[node].pluto.stop()
            except (RuntimeError, KeyError, subprocess.SubprocessError):
                pass
        self.cluster.close()
        super().close()

