"""Failover played by pacemaker's own scheduler (crm_simulate) on the CIB the
formula's states produced: for every node, the VIPs run there, the node
fails (fenced) or is put in standby, and every tunnel resource must end up
on its VIP's new node, the VIP stopping before the tunnel and starting
before it. Negative controls: the same checks on the CIB without the
colocations (or without the stop orders) must report problems, so the
checks would catch their absence."""

import shutil

import pytest

import ipsec_cib
import ipsec_plan

from labkit import examples, pcmk, saltenv
from labkit.examples import VIPS
from labkit.pluto import Pluto


@pytest.fixture(scope="module")
def formula(salt_factories, tmp_path_factory):
    """The file CIB after one `state.apply ipsec` by controller-0, and the
    lookup it was applied with."""
    tmp = tmp_path_factory.mktemp("failover")
    layout = Pluto(tmp / "root")
    cib = pcmk.empty_cib(tmp / "cib.xml", vips=VIPS.values())
    lookup = layout.lookup()
    lookup["pacemaker"] = {"ocf_root": str(tmp / "ocf"), "cib_file": cib}
    pillar_dir = tmp / "pillar"
    saltenv.write_pillar(pillar_dir, examples.pillar(lookup=lookup, pacemaker={"manage": True}))
    factory = salt_factories.salt_minion_daemon(
        "controller-0",
        overrides=saltenv.minion_overrides(pillar_dir, saltenv.node_grains(examples.own_ips("controller-0"))),
    )
    result = factory.salt_call_cli(timeout=120).run("--local", "state.apply", "ipsec")
    assert result.returncode == 0, result.stdout
    return {"cib": cib, "lookup": lookup}


@pytest.fixture
def formula_cib(formula):
    return formula["cib"]


def _copy(cib, tmp_path, label, without=()):
    """A copy of the CIB with fencing, minus the constraints whose id ends
    with one of ``without``."""
    path = str(tmp_path / "{}.xml".format(label))
    shutil.copy(cib, path)
    for oid, (tag, _) in pcmk.objects(path).items():
        if tag.startswith("rsc_") and oid.endswith(tuple(without)) and without:
            pcmk.run(["cibadmin", "--delete", "--xml-text", '<{} id="{}"/>'.format(tag, oid)], path)
    pcmk.add_fencing(path)
    return path


def _running_on(cib, node, tmp_path, label):
    """Start the cluster with every VIP preferring ``node``."""
    path = str(tmp_path / "{}-{}-pinned.xml".format(label, node))
    shutil.copy(cib, path)
    for address in VIPS.values():
        pcmk.create(path, "constraints", '<rsc_location id="test-{0}-on-{1}" rsc="ip-{0}" node="{1}" '
                                         'score="100"/>'.format(address, node))
    started = str(tmp_path / "{}-{}-started.xml".format(label, node))
    pcmk.simulate(path, started, nodes_up=pcmk.NODES)
    return started


def _problems(before, after, graph, node):
    """What is wrong with one failover away from ``node``."""
    problems = []
    for name, address in VIPS.items():
        vip, tunnel = "ip-" + address, "tripleo-ipsec-" + name
        if before.get(vip) != [node]:
            problems.append("{}: setup: VIP not on {} but {}".format(name, node, before.get(vip)))
            continue
        if before.get(tunnel) != [node]:
            problems.append("{}: before: tunnel on {}, VIP on {}".format(name, before.get(tunnel), node))
        new = after.get(vip)
        if not new or new == [node]:
            problems.append("{}: VIP did not move off {}: {}".format(name, node, new))
            continue
        if after.get(tunnel) != new:
            problems.append("{}: after: tunnel on {}, VIP on {}".format(name, after.get(tunnel), new))
        vip_stops, tunnel_stops = graph.find(vip, "stop", node), graph.find(tunnel, "stop", node)
        if not tunnel_stops or not all(graph.before(v, t) for v in vip_stops for t in tunnel_stops):
            problems.append("{}: the VIP does not stop before the tunnel on {}".format(name, node))
        vip_starts, tunnel_starts = graph.find(vip, "start", new[0]), graph.find(tunnel, "start", new[0])
        if not tunnel_starts or not all(graph.before(v, t) for v in vip_starts for t in tunnel_starts):
            problems.append("{}: the VIP does not start before the tunnel on {}".format(name, new[0]))
    return problems


def check_failover(cib, tmp_path, label, how):
    """Problems over every node of one failover kind ('fail' or 'standby')."""
    problems = []
    for node in pcmk.NODES:
        started = _running_on(cib, node, tmp_path, label)
        before = pcmk.placement(started)
        moved = str(tmp_path / "{}-{}-{}.xml".format(label, node, how))
        graph = str(tmp_path / "{}-{}-{}-graph.xml".format(label, node, how))
        if how == "fail":
            pcmk.simulate(started, moved, graph=graph, node_fail=node)
        else:
            pcmk.run(["crm_attribute", "--node", node, "--name", "standby", "--update", "on"], started)
            pcmk.simulate(started, moved, graph=graph)
        problems += ["{} {}: {}".format(how, node, p)
                     for p in _problems(before, pcmk.placement(moved), pcmk.Graph(graph), node)]
    return problems


@pytest.mark.parametrize("how", ["fail", "standby"])
def test_tunnel_follows_its_vip_from_every_node(formula_cib, tmp_path, how):
    cib = _copy(formula_cib, tmp_path, "formula")
    assert check_failover(cib, tmp_path, "formula", how) == []


def test_node_failure_stops_vip_before_tunnel_in_the_transition(formula_cib, tmp_path):
    """The fencing transition has the stops the assertion above relies on
    (pseudo actions implied by fencing, ordered VIP first)."""
    cib = _copy(formula_cib, tmp_path, "formula")
    started = _running_on(cib, "n2", tmp_path, "formula")
    graph_path = str(tmp_path / "graph.xml")
    pcmk.simulate(started, str(tmp_path / "after.xml"), graph=graph_path, node_fail="n2")
    graph = pcmk.Graph(graph_path)
    vip_stop = graph.find("ip-198.51.100.100", "stop")
    tunnel_stop = graph.find("tripleo-ipsec-internal_api", "stop")
    assert len(vip_stop) == 1 and len(tunnel_stop) == 1
    assert graph.before(vip_stop[0], tunnel_stop[0])
    assert not graph.before(tunnel_stop[0], vip_stop[0])


def test_no_drift_seen_in_a_running_clusters_cib(formula, tmp_path):
    """After the cluster ran (status section full of lrm_resource entries
    named like the resources), the formula's reconcile sees nothing to do."""
    started = _running_on(_copy(formula["cib"], tmp_path, "formula"), "n3", tmp_path, "formula")
    plan = ipsec_plan.build_plan(examples.pillar(), "controller-0", examples.own_ips("controller-0"),
                                 cluster_node=True)
    wanted = ipsec_cib.desired(plan["vips"], "ipsec-formula", "vip-tunnel",
                               ipsec_cib.agent_params(formula["lookup"]))
    with open(started) as handle:
        root = ipsec_cib.parse(handle.read())
    assert root.find("status").findall(".//lrm_resource")
    _, changes, errors = ipsec_cib.reconcile(root, wanted, "tripleo-ipsec", "ocf:ipsec-formula:vip-tunnel")
    assert (changes, errors) == ({}, [])


def test_negative_control_without_colocation_tunnels_stay_behind(formula_cib, tmp_path):
    cib = _copy(formula_cib, tmp_path, "nocoloc", without=("-with-vip",))
    problems = check_failover(cib, tmp_path, "nocoloc", "fail")
    assert any(": after: tunnel on" in p for p in problems), problems


@pytest.mark.parametrize("suffix,how,message", [
    ("-stop-after-vip", "fail", "does not stop before the tunnel"),
    ("-stop-after-vip", "standby", "does not stop before the tunnel"),
    ("-start-after-vip", "fail", "does not start before the tunnel"),
])
def test_negative_control_without_an_order_is_caught(formula_cib, tmp_path, suffix, how, message):
    cib = _copy(formula_cib, tmp_path, "noorder", without=(suffix,))
    problems = check_failover(cib, tmp_path, "noorder", how)
    # Every VIP of every node, and nothing else.
    assert len(problems) == len(VIPS) * len(pcmk.NODES), problems
    assert all(message in p for p in problems), problems
