"""Pacemaker without a cluster: file CIBs, crm_verify, crm_simulate.

Everything runs pacemaker's own command line tools (pacemaker-cli-utils) on
files: ``CIB_file=<path>`` makes cibadmin, crm_attribute, crm_resource and
crm_mon work on a file; crm_simulate plays the scheduler on it.
"""

import os
import subprocess
import xml.etree.ElementTree as ET

NODES = ("n1", "n2", "n3")


def run(cmd, cib_file=None, check=True, stdin=None):
    env = dict(os.environ)
    env.pop("CIB_file", None)
    if cib_file:
        env["CIB_file"] = str(cib_file)
    result = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=env, input=stdin)
    if check and result.returncode != 0:
        raise AssertionError("{} exited {}: {}{}".format(cmd, result.returncode, result.stdout, result.stderr))
    return result


def primitive_xml(resource, cls, agent, params, provider=None, monitor="10s"):
    root = ET.Element("primitive", {"id": resource, "class": cls, "type": agent})
    if provider:
        root.set("provider", provider)
    block = ET.SubElement(root, "instance_attributes", {"id": resource + "-ia"})
    for name, value in params.items():
        ET.SubElement(block, "nvpair", {"id": "{}-ia-{}".format(resource, name), "name": name, "value": value})
    ops = ET.SubElement(root, "operations")
    ET.SubElement(ops, "op", {"id": resource + "-monitor", "name": "monitor", "interval": monitor})
    return ET.tostring(root, encoding="unicode")


def create(cib_file, section, xml):
    run(["cibadmin", "--create", "-o", section, "--xml-text", xml], cib_file)


def empty_cib(path, nodes=NODES, vips=(), stonith=False):
    """A CIB file like a fresh cluster's: ``nodes``, stonith-enabled as
    given, and an IPaddr2 resource ``ip-<address>`` per VIP address."""
    path = str(path)
    with open(path, "w") as handle:
        handle.write(run(["cibadmin", "--empty"]).stdout)
    for index, node in enumerate(nodes, 1):
        create(path, "nodes", '<node id="{}" uname="{}"/>'.format(index, node))
    run(["crm_attribute", "--type", "crm_config", "--name", "stonith-enabled",
         "--update", "true" if stonith else "false"], path)
    for address in vips:
        create(path, "resources", vip_primitive(address))
    return path


def vip_primitive(address, resource=None):
    return primitive_xml(resource or "ip-" + address, "ocf", "IPaddr2",
                         {"ip": address, "cidr_netmask": "32" if ":" not in address else "128"},
                         provider="heartbeat")


def add_fencing(path):
    """Enable fencing with a (simulated) fence device, as production
    clusters have: a failed node's resources then get stop pseudo-actions
    ordered like real stops."""
    run(["crm_attribute", "--type", "crm_config", "--name", "stonith-enabled", "--update", "true"], path)
    create(path, "resources",
           '<primitive id="fence-sim" class="stonith" type="fence_dummy">'
           '<operations><op id="fence-sim-monitor" name="monitor" interval="60s"/></operations></primitive>')


def verify(path):
    """crm_verify's verdict: (returncode, output)."""
    result = run(["crm_verify", "--xml-file", path, "-V"], check=False)
    return result.returncode, result.stdout + result.stderr


def configuration(path):
    """The canonical text of the configuration section (for equality)."""
    root = ET.parse(str(path)).getroot()
    config = root.find("configuration")
    for elem in config.iter():
        elem.text = elem.text.strip() if elem.text and elem.text.strip() else None
        elem.tail = None
    return ET.tostring(config, encoding="unicode")


def objects(path):
    """{id: (tag, attributes)} of every resource and constraint element."""
    root = ET.parse(str(path)).getroot()
    found = {}
    for section in ("resources", "constraints"):
        for elem in root.find("configuration/" + section).iter():
            if elem.get("id"):
                found[elem.get("id")] = (elem.tag, dict(elem.attrib))
    return found


def simulate(source, output, graph=None, nodes_up=(), node_fail=None, quorum=True):
    cmd = ["crm_simulate", "--xml-file", source, "--simulate", "--save-output", output]
    for node in nodes_up:
        cmd += ["--node-up", node]
    if node_fail:
        cmd += ["--node-fail", node_fail]
    if quorum:
        cmd += ["--quorum", "1"]
    if graph:
        cmd += ["--save-graph", graph]
    return run(cmd).stdout


def placement(path):
    """{resource id: [nodes it runs on]} of a (simulated) CIB, by crm_mon."""
    out = run(["crm_mon", "--one-shot", "--output-as=xml"], path).stdout
    root = ET.fromstring(out)
    return {
        res.get("id"): sorted(node.get("name") for node in res.findall("node"))
        for res in root.iter("resource") if res.get("active") == "true"
    }


class Graph:
    """A transition graph (crm_simulate --save-graph): which action must
    complete before which."""

    def __init__(self, path):
        root = ET.parse(str(path)).getroot()
        self.inputs = {}
        for synapse in root.findall("synapse"):
            for action in synapse.find("action_set"):
                key = self._key(action)
                self.inputs[key] = {self._key(t) for trig in synapse.findall("inputs/trigger") for t in trig}

    @staticmethod
    def _key(action):
        # Pseudo actions (implied by fencing) carry no node.
        return (action.get("operation_key"), action.get("on_node"))

    def find(self, resource, operation, node=None):
        """Keys of ``resource``'s ``operation`` actions (optionally on node)."""
        prefix = "{}_{}_".format(resource, operation)
        return sorted(
            (key for key in self.inputs if key[0] and key[0].startswith(prefix)
             and (node is None or key[1] in (node, None))),
            key=lambda k: (k[0], k[1] or ""))

    def before(self, first, then):
        """Does action ``first`` (transitively) precede action ``then``?"""
        seen, todo = set(), [then]
        while todo:
            for parent in self.inputs.get(todo.pop(), ()):
                if parent == first:
                    return True
                if parent not in seen:
                    seen.add(parent)
                    todo.append(parent)
        return False
