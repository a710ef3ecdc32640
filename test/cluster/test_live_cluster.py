"""A live corosync + pacemaker cluster of three namespaces (labkit.cluster):
it forms, runs an IPaddr2 VIP, and moves it on standby and on a killed
holder. Groundwork for the lab's VIP failovers (issue #16)."""

import time

import pytest

from labkit import cluster as live
from labkit import netns

pytestmark = pytest.mark.netns
ADDRESSES = {"pc1": "198.51.100.11", "pc2": "198.51.100.12", "pc3": "198.51.100.13"}
VIP = "198.51.100.100"


@pytest.fixture
def three_nodes(tmp_path):
    switch = netns.Namespace("sw")
    switch.exec(["ip", "link", "add", "br0", "type", "bridge"])
    switch.exec(["ip", "link", "set", "br0", "up"])
    nodes = {}
    for name, address in ADDRESSES.items():
        ns = netns.Namespace(name)
        netns.run(["ip", "link", "add", "v-" + name, "netns", ns.name, "type", "veth", "peer", "name", "p-" + name,
                   "netns", switch.name])
        switch.exec(["ip", "link", "set", "p-" + name, "master", "br0", "up"])
        ns.exec(["ip", "link", "set", "v-" + name, "up"])
        ns.add_address("v-" + name, address + "/25")
        nodes[name] = ns
    made = live.Cluster(tmp_path / "cluster", {name: (ns.name, ADDRESSES[name]) for name, ns in nodes.items()})
    made.start()
    yield made
    made.close()
    for ns in list(nodes.values()) + [switch]:
        ns.close()


def _vip_holder(made, via="pc1", other_than=None):
    """The node crm_resource says runs the VIP (asked on ``via``), None
    while it runs nowhere or on ``other_than``."""
    out = made.run(via, ["crm_resource", "--locate", "-r", "vip"]).stdout
    holder = out.split("running on:")[-1].strip() if "running on:" in out else None
    return None if holder == other_than else holder


def _wait(predicate, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    return None


def test_the_cluster_forms_and_moves_its_vip(three_nodes):
    made = three_nodes
    # Generous: in make test the systemd VM boots beside it.
    assert made.wait_online(180), made.run("pc1", ["crm_mon", "-1"]).stdout
    made.run("pc1", ["crm_attribute", "-t", "crm_config", "-n", "stonith-enabled", "-v", "false"], check=True)
    made.run("pc1", ["cibadmin", "--create", "-o", "resources", "--xml-text",
                     '<primitive id="vip" class="ocf" provider="heartbeat" type="IPaddr2">'
                     '<instance_attributes id="vip-ia"><nvpair id="vip-ip" name="ip" value="{}"/>'
                     '<nvpair id="vip-nm" name="cidr_netmask" value="25"/></instance_attributes>'
                     '<operations><op id="vip-mon" name="monitor" interval="10s"/></operations>'
                     '</primitive>'.format(VIP)], check=True)
    first = _wait(lambda: _vip_holder(made), 120)
    assert first in ADDRESSES, made.run("pc1", ["crm_mon", "-1"]).stdout
    assert VIP in made.run(first, ["ip", "-o", "addr"]).stdout, made.run(first, ["ip", "-o", "addr"]).stdout

    made.run(first, ["crm_attribute", "--node", first, "--name", "standby", "--update", "on"], check=True)
    second = _wait(lambda: _vip_holder(made, other_than=first), 120)
    assert second and second != first, made.run(first, ["crm_mon", "-1"]).stdout
    assert VIP not in made.run(first, ["ip", "-o", "addr"]).stdout
    made.run(first, ["crm_attribute", "--node", first, "--name", "standby", "--update", "off"], check=True)

    made.nodes[second].kill()  # the holder's whole node, at once
    survivor = next(n for n in ADDRESSES if n != second)
    third = _wait(lambda: _vip_holder(made, via=survivor, other_than=second), 180)
    assert third and third != second, made.run(survivor, ["crm_mon", "-1"]).stdout
