"""The pacemaker states applied by a real salt-call (--local) to a file CIB
(``CIB_file``, built with ``cibadmin --empty``: three nodes, one IPaddr2
resource per VIP): crm_verify clean, idempotent, drift and changed pillar
reconciled, test=True exact, VIPs leaving the plan and ``absent`` removing
exactly the formula's objects, nothing done on non-cluster nodes or by a
node that is not the applier."""

import os
import xml.etree.ElementTree as ET


from labkit import examples, pcmk, saltenv
from labkit.examples import VIPS
from labkit.pcmknode import AGENT, STATE_ID, changed, states

AGENT_NAME = ("ocf", "ipsec-formula", "vip-tunnel")


def read(path):
    with open(path, "rb") as handle:
        return handle.read()


def primitive(cib, resource):
    root = ET.parse(cib).getroot()
    for prim in root.iter("primitive"):
        if prim.get("id") == resource:
            return prim
    return None


def params(prim):
    """The primitive's instance attributes (not its meta attributes)."""
    return {p.get("name"): p.get("value") for block in prim.findall("instance_attributes") for p in block}


def formula_ids(cib):
    return {oid for oid in pcmk.objects(cib) if oid.startswith("tripleo-ipsec-")}


def expected_ids(names):
    ids = set()
    for name in names:
        resource = "tripleo-ipsec-" + name
        ids |= {resource, resource + "-with-vip", resource + "-start-after-vip", resource + "-stop-after-vip",
                resource + "-instance_attributes", resource + "-monitor", resource + "-start",
                resource + "-stop"}
        ids |= {resource + "-instance_attributes-" + p
                for p in ("tunnel", "vip", "fallbacktunnel", "ctlsocket", "ipsec_conf")}
    return ids


def test_apply_creates_valid_resources_then_is_idempotent(pacemaker_node):
    node = pacemaker_node
    first = node.apply()
    assert first.returncode == 0, first.stdout
    assert all(st["result"] is True for st in states(first).values())
    made = changed(first)[STATE_ID]
    assert len(made) == 12 and all(change["old"] is None for change in made.values())

    # The agent is installed under the formula's own provider, executable.
    assert read(node.agent_path()) == read(AGENT)
    assert os.stat(node.agent_path()).st_mode & 0o777 == 0o755

    rc, output = pcmk.verify(node.cib)
    assert rc == 0 and output == "", output
    assert formula_ids(node.cib) == expected_ids(VIPS)
    objects = pcmk.objects(node.cib)
    for name, address in VIPS.items():
        resource = "tripleo-ipsec-" + name
        prim = primitive(node.cib, resource)
        assert (prim.get("class"), prim.get("provider"), prim.get("type")) == AGENT_NAME
        assert params(prim) == {
            "tunnel": "overcloud-{}-vip-tunnel".format(name),
            "vip": address,
            "fallbacktunnel": "overcloud-{}-node-to-vip-tunnel".format(name),
            # The lookup points at a temporary root: the agent is told.
            "ctlsocket": node.layout.ctlsocket,
            "ipsec_conf": node.layout.config_file,
        }
        ops = [op.attrib for op in prim.iter("op")]
        assert ops == [{"id": resource + "-monitor", "name": "monitor", "interval": "10s", "timeout": "20s"},
                       {"id": resource + "-start", "name": "start", "interval": "0s", "timeout": "60s"},
                       {"id": resource + "-stop", "name": "stop", "interval": "0s", "timeout": "60s"}]
        vip = "ip-" + address
        assert objects[resource + "-with-vip"] == ("rsc_colocation", {
            "id": resource + "-with-vip", "rsc": resource, "with-rsc": vip, "score": "INFINITY"})
        for action in ("start", "stop"):
            oid = "{}-{}-after-vip".format(resource, action)
            assert objects[oid] == ("rsc_order", {
                "id": oid, "first": vip, "first-action": action, "then": resource, "then-action": action,
                "kind": "Mandatory", "symmetrical": "false"})

    before = read(node.cib)
    second = node.apply()
    assert second.returncode == 0
    assert changed(second) == {}
    assert read(node.cib) == before, "an idempotent run rewrote the CIB"


def test_drift_and_pillar_changes_reconciled_and_test_mode_exact(pacemaker_node):
    node = pacemaker_node
    assert node.apply().returncode == 0
    # Drift made by hand: a parameter changed, a constraint deleted, and an
    # operator's own setting (pcs resource disable) that must survive.
    pcmk.run(["crm_resource", "--resource", "tripleo-ipsec-redis", "--set-parameter", "vip",
              "--parameter-value", "198.51.100.99"], node.cib)
    pcmk.run(["cibadmin", "--delete", "--xml-text", '<rsc_order id="tripleo-ipsec-storage-stop-after-vip"/>'],
             node.cib)
    pcmk.run(["crm_resource", "--resource", "tripleo-ipsec-storage", "--meta", "--set-parameter", "target-role",
              "--parameter-value", "Stopped"], node.cib)
    # Pillar changes: monitor interval, stop timeout, VIP resources named by
    # VIP name.
    for name, address in VIPS.items():
        pcmk.create(node.cib, "resources", pcmk.vip_primitive(address, resource="vip-" + name))
    node.set_pillar(node.pillar(monitor_interval="30s", stop_timeout=90, vip_resource="vip-{name}"))

    before = read(node.cib)
    predicted = node.apply("test=True")
    assert predicted.returncode == 0, predicted.stdout
    assert read(node.cib) == before, "test=True changed the CIB"
    assert states(predicted)[STATE_ID]["result"] is None
    predicted_changes = changed(predicted)

    real = node.apply()
    assert real.returncode == 0, real.stdout
    assert changed(real) == predicted_changes
    cib_changes = predicted_changes[STATE_ID]
    # 3 primitives (monitor; redis also vip), 3 colocations, 6 orders.
    assert len(cib_changes) == 12
    redis = cib_changes["tripleo-ipsec-redis"]
    assert redis["old"]["params"]["vip"] == "198.51.100.99" and redis["new"]["params"]["vip"] == "198.51.100.101"
    assert redis["old"]["ops"]["monitor"]["interval"] == "10s" and redis["new"]["ops"]["monitor"]["interval"] == "30s"
    assert redis["old"]["ops"]["stop"]["timeout"] == "60s" and redis["new"]["ops"]["stop"]["timeout"] == "90s"
    assert redis["old"]["ops"]["start"] == redis["new"]["ops"]["start"]
    assert cib_changes["tripleo-ipsec-storage-stop-after-vip"]["old"] is None
    assert cib_changes["tripleo-ipsec-internal_api-with-vip"]["new"]["with-rsc"] == "vip-internal_api"

    rc, output = pcmk.verify(node.cib)
    assert rc == 0, output
    storage = primitive(node.cib, "tripleo-ipsec-storage")
    meta = {p.get("name"): p.get("value") for p in storage.iter("nvpair") if p.get("name") == "target-role"}
    assert meta == {"target-role": "Stopped"}, "the operator's target-role was not kept"
    assert params(primitive(node.cib, "tripleo-ipsec-redis"))["vip"] == "198.51.100.101"
    stops = [op.get("timeout") for op in primitive(node.cib, "tripleo-ipsec-redis").iter("op") if op.get("name") == "stop"]
    assert stops == ["90s"]
    objects = pcmk.objects(node.cib)
    assert objects["tripleo-ipsec-storage-stop-after-vip"][1]["first"] == "vip-storage"

    again = node.apply("test=True")
    assert changed(again) == {}
    assert states(again)[STATE_ID]["result"] is True


def test_vip_leaving_the_plan_and_absent_remove_exactly_what_was_added(pacemaker_node):
    node = pacemaker_node
    # Not the formula's: same prefix but another agent, and an unrelated
    # constraint on a VIP. Both must survive everything below.
    pcmk.create(node.cib, "resources", pcmk.primitive_xml("tripleo-ipsec-manual", "ocf", "Dummy", {},
                                                          provider="pacemaker"))
    pcmk.create(node.cib, "constraints",
                '<rsc_location id="vip-prefers-n1" rsc="ip-198.51.100.100" node="n1" score="50"/>')
    pristine = pcmk.configuration(node.cib)

    assert node.apply().returncode == 0
    # An operator's constraint on a formula resource (crm_resource --ban).
    pcmk.run(["crm_resource", "--resource", "tripleo-ipsec-redis", "--ban", "--node", "n2"], node.cib)

    pillar = node.pillar()
    del pillar["extra_vips"]
    node.set_pillar(pillar)
    result = node.apply()
    assert result.returncode == 0, result.stdout
    removed = changed(result)[STATE_ID]
    assert sorted(removed) == sorted([
        "tripleo-ipsec-redis", "tripleo-ipsec-redis-with-vip", "tripleo-ipsec-redis-start-after-vip",
        "tripleo-ipsec-redis-stop-after-vip", "cli-ban-tripleo-ipsec-redis-on-n2",
    ])
    assert all(change["new"] is None for change in removed.values())
    assert formula_ids(node.cib) == expected_ids(["internal_api", "storage"]) | {"tripleo-ipsec-manual",
                                                                                  "tripleo-ipsec-manual-ia",
                                                                                  "tripleo-ipsec-manual-monitor"}
    rc, output = pcmk.verify(node.cib)
    assert rc == 0, output

    absent = node.call("state.single", "ipsec_pacemaker.absent", "name=ipsec-pacemaker-clean")
    assert absent.returncode == 0, absent.stdout
    assert len(changed(absent)["ipsec-pacemaker-clean"]) == 8
    assert pcmk.configuration(node.cib) == pristine
    again = node.call("state.single", "ipsec_pacemaker.absent", "name=ipsec-pacemaker-clean")
    assert changed(again) == {}


def test_nothing_happens_on_non_cluster_nodes_or_other_appliers(make_pacemaker_node):
    controller = make_pacemaker_node("controller-0")
    compute = make_pacemaker_node("compute-0")
    before = read(controller.cib)

    result = compute.apply()
    assert result.returncode == 0, result.stdout
    managed = states(result)[STATE_ID]
    assert managed["result"] is True and managed["changes"] == {}
    assert "not a cluster node" in managed["comment"]
    assert not os.path.exists(compute.agent_path()), "the agent was installed on a compute node"

    controller.set_pillar(controller.pillar(apply_from="controller-1"))
    result = controller.apply()
    assert result.returncode == 0, result.stdout
    managed = states(result)[STATE_ID]
    assert managed["result"] is True and managed["changes"] == {}
    assert "changed from controller-1 (ipsec:pacemaker:apply_from)" in managed["comment"]
    assert os.path.exists(controller.agent_path()), "every cluster node needs the agent"
    assert read(controller.cib) == before

    controller.set_pillar(controller.pillar(apply_from="controller-0"))
    result = controller.apply()
    assert result.returncode == 0
    assert len(changed(result)[STATE_ID]) == 12


def test_missing_vip_resource_fails_and_creates_nothing_for_that_vip(make_pacemaker_node):
    node = make_pacemaker_node(vips=(VIPS["internal_api"], VIPS["storage"]))
    result = node.apply()
    assert result.returncode != 0
    managed = states(result)[STATE_ID]
    assert managed["result"] is False
    assert "VIP redis: its resource ip-198.51.100.101 is not in the CIB" in managed["comment"]
    assert formula_ids(node.cib) == expected_ids(["internal_api", "storage"])
    rc, output = pcmk.verify(node.cib)
    assert rc == 0, output


def test_default_lookup_renders_agent_install_only_when_managed(salt_node):
    factory = salt_node("controller-1", examples.own_ips("controller-1"),
                        examples.pillar(pacemaker={"manage": True}))
    cli = factory.salt_call_cli(timeout=120)
    shown = cli.run("--local", "state.show_sls", "ipsec")
    assert shown.returncode == 0, shown.stdout
    agent = shown.data["ipsec-pacemaker-agent-installed"]["file"]
    assert {"name": "/usr/lib/ocf/resource.d/ipsec-formula/vip-tunnel"} in agent
    assert {"source": "salt://ipsec/files/ocf/vip-tunnel"} in agent and {"mode": "0755"} in agent
    managed = shown.data[STATE_ID]["ipsec_pacemaker"]
    requires = [item["require"] for item in managed if isinstance(item, dict) and "require" in item][0]
    assert {"ipsec-tunnel-files-managed", "ipsec-service-running", "ipsec-pacemaker-agent-installed"} <= set(
        requires)

    saltenv.write_pillar(factory.pillar_dir, examples.pillar())
    shown = cli.run("--local", "state.show_sls", "ipsec")
    assert shown.returncode == 0
    assert STATE_ID not in shown.data and "ipsec-pacemaker-agent-installed" not in shown.data
    # Applied on its own, ipsec.pacemaker brings what it depends on.
    alone = cli.run("--local", "state.show_sls", "ipsec.pacemaker")
    assert alone.returncode == 0, alone.stdout
    assert {STATE_ID, "ipsec-pacemaker-agent-installed", "ipsec-service-running",
            "ipsec-tunnel-files-managed"} <= set(alone.data)
