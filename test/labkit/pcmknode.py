"""A formula node applying the pacemaker states to a file CIB, for the
pacemaker tests: its lookup points at a temporary root, an OCF root and a
CIB file (three nodes, one IPaddr2 resource per VIP of the example)."""

import copy
import os

from labkit import examples, pcmk, saltenv
from labkit.pluto import Pluto

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
AGENT = os.path.join(REPO, "ipsec", "files", "ocf", "vip-tunnel")
STATE_ID = "ipsec-pacemaker-vip-resources-managed"


def states(result):
    """state id -> state return, from a state.apply/state.single result."""
    assert isinstance(result.data, dict), result.stdout + result.stderr
    return {value["__id__"]: value for value in result.data.values()}


def changed(result):
    return {sid: st["changes"] for sid, st in states(result).items() if st["changes"]}


class PacemakerNode:
    """One formula node applying to a file CIB."""

    def __init__(self, salt_node, tmp_path, node_id="controller-0", vips=tuple(examples.VIPS.values())):
        self.tmp_path = tmp_path
        self.node_id = node_id
        self.layout = Pluto(tmp_path / "root-{}".format(node_id))
        self.ocf_root = str(tmp_path / "ocf")
        self.cib = str(tmp_path / "cib.xml")
        if not os.path.exists(self.cib):
            pcmk.empty_cib(self.cib, vips=vips)
        self.factory = salt_node(node_id, examples.own_ips(node_id), self.pillar())
        self.cli = self.factory.salt_call_cli(timeout=120)

    def lookup(self):
        lookup = self.layout.lookup()
        lookup["pacemaker"] = {"ocf_root": self.ocf_root, "cib_file": self.cib}
        return lookup

    def pillar(self, **pacemaker):
        settings = {"manage": True}
        settings.update(pacemaker)
        return examples.pillar(lookup=self.lookup(), pacemaker=settings)

    def set_pillar(self, pillar):
        saltenv.write_pillar(self.factory.pillar_dir, copy.deepcopy(pillar))

    def call(self, *args):
        return self.cli.run("--local", *args)

    def apply(self, *args):
        return self.call("state.apply", "ipsec", *args)

    def agent_path(self):
        return os.path.join(self.ocf_root, "resource.d", "ipsec-formula", "vip-tunnel")
