"""Unit tests of plan-versus-status (_utils/ipsec_verify.py).

Plans come from the real planner (ipsec_plan) for the example cluster; the
status side is DERIVED TEXT rendered by labkit.statustext from what the
test says pluto has (see that module for what the text is based on), then
parsed by ipsec_status, so these tests also cover the parser's output as
verify consumes it. Real pluto verdicts: test/integration/test_status_pluto.py.
"""

import copy
import re

import pytest
from salt.exceptions import SaltInvocationError

import ipsec_plan
import ipsec_status
import ipsec_verify
from labkit import examples
from labkit.statustext import GENERATIONS, Conn, render

TWO = {name: examples.THREE_NODES[name] for name in ("controller-0", "compute-0")}
N2N_API = "overcloud-internal_api-198.51.100.10-198.51.100.20"
N2N_TENANT = "overcloud-tenant-2001:db8:0:1::10-2001:db8:0:1::20"
API_SERVER = "overcloud-internal_api-vip-tunnel"
API_CLIENT = "overcloud-internal_api-node-to-vip-tunnel"
STORAGE_SERVER = "overcloud-storage-vip-tunnel"
REDIS_SERVER = "overcloud-redis-vip-tunnel"


def plan_for(node, nodes=TWO):
    return ipsec_plan.build_plan(
        examples.pillar(nodes=nodes), node_id=node, own_ips=examples.own_ips(node, nodes), major=4,
        cluster_node=node in examples.CLUSTER_NODES,
    )


def status_for(plan, ike="established", child="established", held=None, drop=(), unoriented=(),
               sas=None, clients=None, extra=(), generation="4.10", traffic=True):
    """Parsed status of a pluto that loaded ``plan``.

    held: VIP addresses pluto listens on (default: all, on cluster nodes);
    sas: {conn or client address: (ike, child)} overrides; drop: conns not
    loaded; clients: {VIP server conn: [client addresses]} instances
    (default: every peer of the network).
    """
    sas = sas or {}
    vips = {c["peer"] for c in plan["connections"].values() if c["role"] in ("vip-server", "vip-client")}
    if held is None:
        held = vips if plan["cluster_node"] else set()
    conns = []
    for name, planned in sorted(plan["connections"].items()):
        if name in drop:
            continue
        kw = planned["keywords"]
        state = sas.get(name, (ike, child))
        if planned["role"] == "vip-server":
            conns.append(Conn(name, kw["left"], "%any", kw["leftid"], kw["rightid"], oriented=kw["left"] in held))
            if kw["left"] not in held:
                continue
            peers = plan["networks"][planned["network"]]["peers"].values()
            for index, address in enumerate((clients or {}).get(name, sorted(peers)), 1):
                client_ike, client_child = sas.get(address, (ike, child))
                conns.append(Conn(name, kw["left"], address, kw["leftid"], kw["rightid"], instance=index,
                                  ike=client_ike, child=client_child, in_bytes=100, out_bytes=200))
        elif planned["role"] == "vip-client" and kw["right"] in held:
            conns.append(Conn(name, kw["left"], kw["right"], kw["leftid"], kw["rightid"], oriented=False))
        else:
            conns.append(Conn(name, kw["left"], kw["right"], kw.get("leftid"), kw.get("rightid"),
                              ike=state[0], child=state[1], oriented=name not in unoriented,
                              in_bytes=1024, out_bytes=2048))
    conns.extend(extra)
    addresses = sorted(plan["addresses"].values()) + sorted(held)
    text, traffic_text = render(conns, generation, addresses=addresses)
    return ipsec_status.parse_status(text, traffic_text if traffic else None)


def verdict(plan, status, level="child"):
    return ipsec_verify.verify(plan, status, level)


def test_all_up_on_the_vip_holder():
    plan = plan_for("controller-0")
    result = verdict(plan, status_for(plan))
    assert result["result"] is True and result["failed"] == {}
    assert result["comment"] == "all 5 tunnels that should be up are up (level: child)"
    assert result["counts"] == {"planned": 8, "expect_up": 5, "expect_loaded": 0, "not_needed_here": 3,
                                "failed": 0, "unplanned": 0}
    api = result["connections"][N2N_API]
    assert (api["expect"], api["ok"], api["loaded"], api["oriented"], api["ike_sa"], api["child_sa"], api["up"]) == (
        "up", True, True, True, True, True, True)
    assert (api["in_bytes"], api["out_bytes"]) == (1024, 2048)  # exact, from trafficstatus
    server = result["connections"][API_SERVER]
    assert server["expect"] == "up" and server["vip_held"] is True
    assert server["clients"] == {"198.51.100.20": {
        "node": "compute-0", "instances": [API_SERVER + "[1]"], "ike_sa": True, "child_sa": True,
        "in_bytes": 100, "out_bytes": 200, "ike_sas": [3], "child_sas": [4], "up": True}}
    assert result["connections"][STORAGE_SERVER]["clients"] == {}  # compute-0 is not on storage
    client = result["connections"][API_CLIENT]
    assert (client["expect"], client["ok"], client["oriented"]) == ("nothing", True, False)
    assert client["reason"].startswith("not needed: this node holds VIP 198.51.100.100")
    assert result["vips"]["198.51.100.100"] == {"network": "internal_api", "held": True}


def test_ike_only_kernel_child_level_false_with_hint_ike_level_true():
    plan = plan_for("controller-0")
    status = status_for(plan, child=None)
    child = verdict(plan, status, "child")
    assert child["result"] is False
    assert set(child["failed"]) == {N2N_API, N2N_TENANT, API_SERVER, REDIS_SERVER}
    assert child["failed"][N2N_API].startswith("IKE SA #") and "no established Child SA" in child["failed"][N2N_API]
    assert "198.51.100.20 (compute-0): no established Child SA" in child["failed"][API_SERVER]
    assert child["hint"] == ipsec_verify.NO_CHILD_HINT and child["comment"].endswith(child["hint"])
    ike = verdict(plan, status, "ike")
    assert ike["result"] is True and ike["hint"] is None
    assert ike["connections"][N2N_API]["child_sa"] is False and ike["connections"][N2N_API]["up"] is True


def test_compute_node_needs_its_client_conns():
    plan = plan_for("compute-0")
    result = verdict(plan, status_for(plan))
    assert result["result"] is True and result["counts"]["expect_up"] == 4
    assert result["connections"][API_CLIENT]["expect"] == "up"
    assert result["vips"]["198.51.100.100"]["held"] is False
    down = verdict(plan, status_for(plan, sas={API_CLIENT: ("half-open", None)}))
    assert list(down["failed"]) == [API_CLIENT]
    assert "no answer from 198.51.100.100" in down["failed"][API_CLIENT]


def test_cluster_node_without_the_vip_is_a_client_and_its_server_is_standby():
    plan = plan_for("controller-1", nodes=examples.THREE_NODES)
    result = verdict(plan, status_for(plan, held=set()))
    assert result["result"] is True
    server = result["connections"][API_SERVER]
    assert (server["expect"], server["ok"], server["loaded"], server["oriented"]) == ("nothing", True, True, False)
    assert server["reason"].startswith("standby: VIP 198.51.100.100 is not on this node")
    assert result["connections"][API_CLIENT]["expect"] == "up"


def test_holder_missing_a_client():
    plan = plan_for("controller-0", nodes=examples.THREE_NODES)
    status = status_for(plan, clients={API_SERVER: ["198.51.100.11"]}, sas={"198.51.100.11": ("established", None)})
    result = verdict(plan, status)
    reason = result["failed"][API_SERVER]
    assert reason == ("clients not up at level child: 198.51.100.20 (compute-0): not connected (no instance); "
                      "198.51.100.11 (controller-1): no established Child SA")
    assert result["connections"][API_SERVER]["clients"]["198.51.100.20"]["instances"] == []


def test_not_loaded_and_unoriented():
    plan = plan_for("controller-0")
    result = verdict(plan, status_for(plan, drop={N2N_API, STORAGE_SERVER}, unoriented={N2N_TENANT}))
    assert result["result"] is False
    assert result["failed"][N2N_API].startswith("not loaded in pluto (auto=start)")
    assert result["failed"][STORAGE_SERVER].startswith("not loaded in pluto although this node holds VIP 203.0.113.100")
    assert result["failed"][N2N_TENANT].startswith(
        "loaded but unoriented: pluto does not listen on 2001:db8:0:1::10")
    assert result["connections"][N2N_API]["loaded"] is False


@pytest.mark.parametrize("ike,expected", [
    ("half-open", "IKE SA #{} not established (sent IKE_SA_INIT request): no answer from 198.51.100.20"),
    (None, "no IKE SA: nothing negotiating right now"),
])
def test_why_an_ike_sa_is_missing(ike, expected):
    plan = plan_for("controller-0")
    status = status_for(plan, sas={N2N_API: (ike, None)})
    reason = verdict(plan, status, "ike")["failed"][N2N_API]
    if "{}" in expected:
        serial = status["connections"][N2N_API]["ike_sas"][0]["serial"]
        expected = expected.format(serial)
    assert reason.startswith(expected), reason


def test_auto_add_needs_loaded_only_and_auto_ignore_nothing():
    # As pillar's conn_options {auto: ...} plans them: on both ends, so
    # neither end is the initiator.
    plan = plan_for("compute-0")
    plan["connections"][N2N_API]["keywords"]["auto"] = "add"
    plan["connections"][N2N_TENANT]["keywords"]["auto"] = "ignore"
    for name in (N2N_API, N2N_TENANT):
        plan["connections"][name]["initiator"] = None
    status = status_for(plan, sas={N2N_API: (None, None)}, drop={N2N_TENANT})
    result = verdict(plan, status)
    assert result["result"] is True
    assert result["connections"][N2N_API]["expect"] == "loaded" and result["connections"][N2N_API]["up"] is False
    assert result["connections"][N2N_TENANT]["expect"] == "nothing"
    assert result["comment"] == "all 2 tunnels that should be up are up (level: child), 1 more loaded as planned"
    gone = verdict(plan, status_for(plan, drop={N2N_API, N2N_TENANT}))
    assert list(gone["failed"]) == [N2N_API]


def test_the_answering_end_of_a_tunnel_must_be_up_too():
    # compute-0 (198.51.100.20) answers controller-0 (198.51.100.10): its
    # conn is auto=add, yet without SAs the tunnel is down.
    plan = plan_for("compute-0")
    conn = plan["connections"][N2N_API]
    assert conn["keywords"]["auto"] == "add" and conn["initiator"] == "198.51.100.10"
    result = verdict(plan, status_for(plan, sas={N2N_API: (None, None)}))
    assert result["connections"][N2N_API]["expect"] == "up"
    assert N2N_API in result["failed"]


def test_unplanned_conns_are_listed_but_never_fail():
    plan = plan_for("compute-0")
    extra = [Conn("site-vpn", "198.51.100.20", "192.0.2.1", ike="half-open"),
             Conn("overcloud-old", "198.51.100.20", "198.51.100.99", ike="established")]
    result = verdict(plan, status_for(plan, extra=extra))
    assert result["result"] is True
    assert result["unplanned"] == {
        "overcloud-old": {"instances": [], "ike_sa": True, "child_sa": False},
        "site-vpn": {"instances": [], "ike_sa": False, "child_sa": False},
    }


def test_child_sa_on_an_ike_sa_listed_under_another_conn():
    plan = {"node": "n", "networks": {}, "connections": {
        "b": {"role": "node-to-node", "network": "x", "peer": "p", "keywords": {"auto": "start", "left": "198.51.100.1"}}}}
    text = (
        '"a": 198.51.100.1...198.51.100.2; unrouted; eroute owner: #0\n'
        '"b": 198.51.100.1...198.51.100.2; erouted; eroute owner: #2\n'
        '#1: "a":500 established IKE SA; newest; idle;\n'
        '#2: "b":500 established Child SA; newest; eroute owner; IKE SA #1; idle;\n'
    )
    result = verdict(plan, ipsec_status.parse_status(text))
    assert result["result"] is True
    assert result["connections"]["b"]["ike_sas"] == [1] and result["connections"]["b"]["child_sas"] == [2]


@pytest.mark.parametrize("generation", GENERATIONS)
def test_the_verdict_does_not_depend_on_the_libreswan_generation(generation):
    plan = plan_for("controller-0", nodes=examples.THREE_NODES)
    sas = {N2N_API: ("half-open", None), "198.51.100.11": ("established", None)}
    reference = verdict(plan, status_for(plan, sas=sas))
    other = verdict(plan, status_for(plan, sas=sas, generation=generation))
    # Reasons quote pluto's own state text, which differs by version.
    def same(text):
        return re.sub(r"\((sent [^)]*)\)", "(...)", text) if isinstance(text, str) else text

    for result in (reference, other):
        result.pop("version")
        result["failed"] = {name: same(reason) for name, reason in result["failed"].items()}
        result["comment"] = same(result["comment"])
        for entry in result["connections"].values():
            entry["reason"] = same(entry["reason"])
    assert other["failed"] == reference["failed"]
    assert other["connections"] == reference["connections"]
    assert other["comment"] == reference["comment"]


def test_bytes_without_trafficstatus_come_from_the_status_text():
    plan = plan_for("compute-0")
    result = verdict(plan, status_for(plan, traffic=False))
    assert (result["connections"][N2N_API]["in_bytes"], result["connections"][N2N_API]["out_bytes"]) == (1024, 2048)


@pytest.mark.parametrize("plan,status,message", [
    ({"connections": {}}, {"connections": {}}, None),
    ({}, {"connections": {}}, "the plan has no connections mapping"),
    ({"connections": {}}, "text", "the status has no connections mapping"),
])
def test_bad_inputs(plan, status, message):
    if message is None:
        assert ipsec_verify.verify(plan, status)["result"] is True  # nothing planned, nothing to fail
        return
    with pytest.raises(SaltInvocationError, match=message):
        ipsec_verify.verify(plan, status)


def test_bad_level():
    with pytest.raises(SaltInvocationError, match="level must be 'ike' or 'child', got 'esp'"):
        ipsec_verify.verify({"connections": {}}, {"connections": {}}, "esp")


# ------------------------------------------------------------ level=traffic

def _children(status, name, client=None):
    """The established Child SA records of conn ``name`` (of its instance
    toward ``client``)."""
    return [record for conn in status["connections"].values()
            if conn["base"] == name and (client is None) == (conn["instance"] is None)
            and (client is None or conn["remote"] == client)
            for record in conn["child_sas"] if record["established"]]


def _after(before, frozen=(), direction="in", duplicate=None):
    """The status after a probe round: every counter grew, except
    ``direction`` of the tunnels in ``frozen`` ((conn, VIP client address
    or None)); ``duplicate``: a conn that shows a second Child SA."""
    after = copy.deepcopy(before)
    for conn in after["connections"].values():
        tunnel = (conn["base"], conn["remote"] if conn["instance"] is not None else None)
        for record in conn["child_sas"]:
            for field in ("in_bytes", "out_bytes"):
                still = field.startswith(direction) and tunnel in frozen
                if record[field] is not None and not still:
                    record[field] += 84
    if duplicate is not None:
        conn = after["connections"][duplicate]
        conn["child_sas"].append(dict(conn["child_sas"][0], serial=99, in_bytes=0, out_bytes=0))
    return after


def _traffic(plan, before, after, answered=True):
    targets = ipsec_verify.probe_targets(plan, before)
    replies = {pair: {"sent": 1, "answered": answered, "error": None} for pair in targets}
    return ipsec_verify.traffic(plan, before, after, targets, replies, 5), targets


def test_traffic_level_passes_when_every_counter_moved_both_ways():
    plan = plan_for("controller-0")
    before = status_for(plan)
    result, targets = _traffic(plan, before, _after(before))
    assert result["result"] is True, result["comment"]
    assert result["level"] == "traffic"
    assert result["comment"] == "all 5 tunnels that should be up carry traffic both ways (level: traffic)"
    # One probe per node-to-node tunnel (from our end to the peer's) and
    # one per client of the VIPs this node serves, from the VIP.
    api = plan["connections"][N2N_API]["keywords"]
    assert targets[(api["left"], api["right"])] == (N2N_API, None)
    assert targets[("198.51.100.100", "198.51.100.20")] == (API_SERVER, "198.51.100.20")
    # (The storage VIP has no client here: nothing to probe on it.)
    assert len(targets) == 4
    assert result["connections"][N2N_API]["traffic"] == {
        "probes_sent": 1, "answered": True, "out_moved": True, "in_moved": True}


@pytest.mark.parametrize("node", ["controller-0", "compute-0"])
@pytest.mark.parametrize("direction", ["in", "out"])
def test_traffic_level_names_every_tunnel_whose_counter_did_not_move(node, direction):
    """The class: for each tunnel probed, freezing one of its counters fails
    exactly that tunnel, while the Child level passes on the same status."""
    plan = plan_for(node)
    before = status_for(plan)
    targets = ipsec_verify.probe_targets(plan, before)
    assert targets
    for (name, client) in targets.values():
        after = _after(before, frozen={(name, client)}, direction=direction)
        result, _ = _traffic(plan, before, after)
        assert ipsec_verify.verify(plan, after, "child")["result"] is True
        assert list(result["failed"]) == [name], (name, client, result["comment"])
        reason = result["failed"][name]
        if direction == "in":
            assert "nothing came in through the inbound one in 5s" in reason, reason
        else:
            assert "the outbound Child SA's counter did not move" in reason, reason
        if client:
            assert reason.startswith("client {} (".format(client)), reason


def _second_pair(status, name, client=None, serial=99, ike_serial=None, moved=0):
    """Give conn ``name`` (its instance toward ``client``) a second Child SA
    ``serial`` (on IKE SA ``ike_serial``, a second IKE SA, when given) that
    pluto does not name newest; ``moved``: bytes it carried each way."""
    conn = next(c for c in status["connections"].values() if c["base"] == name
                and (client is None) == (c["instance"] is None) and (client is None or c["remote"] == client))
    first = conn["child_sas"][0]
    conn["child_sas"].append(dict(first, serial=serial, in_bytes=moved, out_bytes=moved,
                                  ike_sa=ike_serial or first.get("ike_sa")))
    if ike_serial:
        conn["ike_sas"].append(dict(conn["ike_sas"][0], serial=ike_serial))
    assert conn["newest_child_sa"] == first["serial"] and conn["newest_child_sa"] != serial
    return status


def _each_probed_tunnel(node):
    plan = plan_for(node)
    before = status_for(plan)
    for name, client in ipsec_verify.probe_targets(plan, before).values():
        yield plan, before, name, client


@pytest.mark.parametrize("node", ["controller-0", "compute-0"])
def test_traffic_level_fails_a_second_pair_that_carries_traffic(node):
    """Both pairs in use (crossed negotiations): each end may send on a
    Child SA the other no longer uses. The class: every probed tunnel."""
    for plan, before, name, client in _each_probed_tunnel(node):
        after = _second_pair(_after(before), name, client, moved=84)
        result, _ = _traffic(plan, before, after)
        assert ipsec_verify.verify(plan, after, "child")["result"] is True
        assert list(result["failed"]) == [name], (name, client, result["comment"])
        assert "2 Child SAs for one tunnel (#" in result["failed"][name] and not result["stale"]


@pytest.mark.parametrize("node", ["controller-0", "compute-0"])
@pytest.mark.parametrize("second_ike", [False, True])
def test_traffic_level_reports_a_replaced_pair_pluto_keeps_without_failing(node, second_ike):
    """A replaced pair (not pluto's newest, carrying nothing) beside the pair
    in use that carries traffic both ways: what 4.10 keeps after an attempt
    its initiator gave up finished on this end. Reported, with the serials
    and how to remove it; the tunnel passes. The class: every probed tunnel."""
    for plan, before, name, client in _each_probed_tunnel(node):
        after = _second_pair(_after(before), name, client, ike_serial=98 if second_ike else None)
        result, _ = _traffic(plan, before, after)
        assert result["result"] is True, (name, client, result["comment"])
        label = name if client is None else "{} client {} (".format(name, client)
        [(key, note)] = result["stale"].items()
        assert key.startswith(label), (key, label)
        assert ("IKE SA #98, Child SA #99" if second_ike else "(Child SA #99;") in note, note
        assert "ipsec whack --deletestate" in note and key in result["comment"]


@pytest.mark.parametrize("node", ["controller-0", "compute-0"])
def test_traffic_level_judges_the_pair_in_use_beside_a_replaced_one(node):
    """A leftover does not hide a dead pair: the pair pluto uses must still
    move both counters."""
    for plan, before, name, client in _each_probed_tunnel(node):
        after = _second_pair(_after(before, frozen={(name, client)}), name, client)
        result, _ = _traffic(plan, before, after)
        assert list(result["failed"]) == [name], (name, client, result["comment"])
        assert "nothing came in through the inbound one" in result["failed"][name]


def test_traffic_level_counts_a_rekeyed_child_sa():
    """A Child SA replaced during the probe (new serial, counters from 0):
    bytes on the new one are movement."""
    plan = plan_for("compute-0")
    before = status_for(plan)
    after = copy.deepcopy(before)
    for record in _children(after, N2N_API):
        record.update(serial=record["serial"] + 100, in_bytes=84, out_bytes=84)
    result, _ = _traffic(plan, before, _after(after, frozen={(N2N_API, None)}))
    assert N2N_API not in result["failed"], result["comment"]


def test_traffic_level_needs_counters_and_a_sent_probe():
    plan = plan_for("compute-0")
    before = status_for(plan, traffic=False)
    after = copy.deepcopy(before)
    for record in _children(after, N2N_API):
        record["in_bytes"] = record["out_bytes"] = None
    result, _ = _traffic(plan, before, after)
    assert "pluto shows no byte counters" in result["failed"][N2N_API]
    # Only the inbound counter missing: the kernel lost that SA (the VM's
    # fault test deletes it with ip xfrm).
    before = status_for(plan)
    after = _after(before)
    for record in _children(after, N2N_API):
        record["in_bytes"] = None
    result, _ = _traffic(plan, before, after)
    assert list(result["failed"]) == [N2N_API]
    assert result["failed"][N2N_API].startswith("pluto reads no inbound byte counter for Child SA #"), result
    assert "the kernel holds no inbound ESP state for it (deleted or expired), packets from 198.51.100.10" in (
        result["failed"][N2N_API])
    before = status_for(plan)
    targets = ipsec_verify.probe_targets(plan, before)
    replies = {pair: {"sent": 0, "answered": False, "error": "cannot send to x: Network is unreachable"}
               for pair in targets}
    result = ipsec_verify.traffic(plan, before, _after(before, frozen=set(targets.values()), direction="out"),
                                  targets, replies, 5)
    assert result["failed"][N2N_API].endswith("not sent: cannot send to x: Network is unreachable")


def test_traffic_level_does_not_probe_what_is_down_and_keeps_its_reason():
    plan = plan_for("compute-0")
    before = status_for(plan, sas={N2N_API: ("established", None)})
    seen = []

    def send(pairs, timeout):
        seen.extend(pairs)
        return {pair: {"sent": 1, "answered": True, "error": None} for pair in pairs}

    statuses = iter([before, _after(before)])
    result = ipsec_verify.verify_traffic(plan, lambda: next(statuses), send, timeout=2)
    api = plan["connections"][N2N_API]["keywords"]
    assert (api["left"], api["right"]) not in seen and seen == sorted(seen) and seen
    assert list(result["failed"]) == [N2N_API]
    assert "established but no established Child SA" in result["failed"][N2N_API]


def test_a_vip_pluto_listens_on_but_the_node_lost_fails_both_vip_conns():
    """The VIP left this node without the agent's stop (its tunnel resource
    did not run here): pluto still listens on it. Counted as held by
    pluto's view alone, the node would pass as the VIP's holder; with the
    node's live addresses both VIP conns fail, saying why and what to do."""
    plan = plan_for("controller-0")
    status = status_for(plan)
    own = sorted(plan["addresses"].values())
    vips = sorted({c["peer"] for c in plan["connections"].values() if c["role"] == "vip-server"})
    assert verdict(plan, status)["result"] is True                    # pluto's view only
    assert ipsec_verify.verify(plan, status, "child", own + vips)["result"] is True
    kept = [v for v in vips if v != "198.51.100.100"]
    result = ipsec_verify.verify(plan, status, "child", own + kept)
    assert result["result"] is False
    assert set(result["failed"]) == {API_SERVER, API_CLIENT}
    for name in (API_SERVER, API_CLIENT):
        assert result["failed"][name] == ipsec_verify.STALE_VIP.format("198.51.100.100")
        assert result["connections"][name]["vip_held"] is False
    assert result["vips"]["198.51.100.100"] == {"network": "internal_api", "held": False, "stale": True}
    # This node is that VIP's client now: its client conn is a tunnel that
    # should be up (the beacon reports it), its server conn is not.
    assert result["connections"][API_CLIENT]["expect"] == "up"
    assert result["connections"][API_SERVER]["expect"] == "nothing"
    held = ipsec_verify.verify(plan, status, "child", own + vips)
    assert held["connections"][API_CLIENT]["expect"] == "nothing"
    assert result["counts"]["expect_up"] == held["counts"]["expect_up"]
    assert "stale" not in result["vips"][kept[0]]


def test_stale_vips_are_the_planned_vips_pluto_listens_on_but_the_node_lost():
    vips = {"internal_api": {"address": "198.51.100.100"}, "storage": {"address": "203.0.113.100"},
            "v6": {"address": "2001:db8::100"}}
    own = ["198.51.100.10", "2001:db8::10"]
    # pluto's listen list may spell IPv6 differently (and never the VIP's
    # own zero-padded form): compared as addresses.
    listening = ["198.51.100.10", "198.51.100.100", "2001:0db8:0000::0100", "2001:db8::10"]
    assert ipsec_verify.stale_vips(vips, listening, own) == {"internal_api": "198.51.100.100", "v6": "2001:db8::100"}
    # The holder has it: not stale. A VIP pluto does not listen on: not stale.
    assert ipsec_verify.stale_vips(vips, listening, own + ["198.51.100.100", "2001:db8::100"]) == {}
    assert ipsec_verify.stale_vips(vips, ["198.51.100.10"], own) == {}
    assert ipsec_verify.stale_vips({}, listening, own) == {}
