"""Unit tests of the pure CIB logic (_utils/ipsec_cib.py): desired objects,
reconcile (create, idempotence, drift, renames, stale removal, ownership,
clashes, the operator's settings kept), who applies, pillar validation, and
the agent defaults equal to the lookup defaults."""

import copy
import os
import xml.etree.ElementTree as ET

import pytest
from salt.exceptions import SaltInvocationError

import ipsec_cib
import ipsec_plan
from labkit import examples

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
AGENT = "ocf:ipsec-formula:vip-tunnel"
PREFIX = "tripleo-ipsec"

EMPTY = """<cib crm_feature_set="3.16.1" validate-with="pacemaker-3.9" epoch="1" num_updates="0" admin_epoch="0">
  <configuration>
    <crm_config/>
    <nodes>
      <node id="1" uname="n1"/><node id="2" uname="n2"/><node id="3" uname="n3"/>
    </nodes>
    <resources>
      <!-- an operator's comment, kept -->
      <primitive id="ip-198.51.100.100" class="ocf" provider="heartbeat" type="IPaddr2"/>
      <primitive id="ip-203.0.113.100" class="ocf" provider="heartbeat" type="IPaddr2"/>
      <primitive id="ip-198.51.100.101" class="ocf" provider="heartbeat" type="IPaddr2"/>
    </resources>
    <constraints/>
  </configuration>
  <status/>
</cib>"""


def vips(node="controller-0", **pacemaker):
    pillar = examples.pillar(pacemaker=pacemaker) if pacemaker else examples.pillar()
    plan = ipsec_plan.build_plan(pillar, node, examples.own_ips(node), cluster_node=True)
    return plan["vips"]


def wanted(extra=None, interval="10s", start="60s", stop="60s", **pacemaker):
    return ipsec_cib.desired(vips(**pacemaker), "ipsec-formula", "vip-tunnel", extra,
                             ipsec_cib.operations(interval, start, stop))


OPS = {"monitor": {"interval": "10s", "timeout": "20s"}, "start": {"interval": "0s", "timeout": "60s"},
       "stop": {"interval": "0s", "timeout": "60s"}}


def applied(text=EMPTY, want=None, adopt=False):
    root = ipsec_cib.parse(text)
    new, changes, errors = ipsec_cib.reconcile(root, wanted() if want is None else want, PREFIX, AGENT, adopt=adopt)
    assert errors == []
    return new, changes


def find(root, object_id):
    for elem in root.iter():
        if elem.get("id") == object_id:
            return elem
    return None


def test_desired_objects_per_vip_follow_tripleo_names():
    want = wanted()
    assert list(want) == ["internal_api", "redis", "storage"]
    redis = want["redis"]
    assert redis["resource"] == "tripleo-ipsec-redis" and redis["vip_resource"] == "ip-198.51.100.101"
    assert redis["objects"]["tripleo-ipsec-redis"] == {
        "type": "primitive",
        "agent": AGENT,
        "params": {"fallbacktunnel": "overcloud-redis-node-to-vip-tunnel", "tunnel": "overcloud-redis-vip-tunnel",
                   "vip": "198.51.100.101"},
        "ops": OPS,
    }
    assert redis["objects"]["tripleo-ipsec-redis-with-vip"] == {
        "type": "rsc_colocation", "rsc": "tripleo-ipsec-redis", "with-rsc": "ip-198.51.100.101", "score": "INFINITY"}
    for action in ("start", "stop"):
        assert redis["objects"]["tripleo-ipsec-redis-{}-after-vip".format(action)] == {
            "type": "rsc_order", "first": "ip-198.51.100.101", "first-action": action,
            "then": "tripleo-ipsec-redis", "then-action": action, "kind": "Mandatory", "symmetrical": "false"}


def test_agent_params_only_for_lookup_values_that_differ_from_the_agent_defaults():
    defaults = {"ctlsocket": "/run/pluto/pluto.ctl", "config_file": "/etc/ipsec.conf", "ipsec_bin": "/usr/sbin/ipsec"}
    assert ipsec_cib.agent_params(defaults) == {}
    changed = dict(defaults, ctlsocket="/tmp/x/pluto.ctl", config_file="/srv/ipsec.conf")
    assert ipsec_cib.agent_params(changed) == {"ctlsocket": "/tmp/x/pluto.ctl", "ipsec_conf": "/srv/ipsec.conf"}


def test_agent_defaults_equal_the_agent_script_and_the_lookup():
    with open(os.path.join(REPO, "ipsec", "files", "ocf", "vip-tunnel")) as handle:
        script = handle.read()
    for param, value in ipsec_cib.AGENT_DEFAULTS.items():
        assert 'OCF_RESKEY_{}_default="{}"'.format(param, value) in script
    lookup = load_default_lookup()
    for key, param in ipsec_cib.LOOKUP_PARAMS:
        assert lookup[key] == ipsec_cib.AGENT_DEFAULTS[param]


def load_default_lookup():
    return ipsec_plan.DEFAULT_LOOKUP


def test_reconcile_creates_everything_then_nothing():
    new, changes = applied()
    assert len(changes) == 12 and all(c["old"] is None for c in changes.values())
    prim = find(new, "tripleo-ipsec-storage")
    assert prim.attrib == {"id": "tripleo-ipsec-storage", "class": "ocf", "provider": "ipsec-formula",
                           "type": "vip-tunnel"}
    pairs = {p.get("id"): (p.get("name"), p.get("value")) for p in prim.iter("nvpair")}
    assert pairs["tripleo-ipsec-storage-instance_attributes-vip"] == ("vip", "203.0.113.100")
    assert [op.attrib for op in prim.iter("op")] == [
        {"id": "tripleo-ipsec-storage-monitor", "name": "monitor", "interval": "10s", "timeout": "20s"},
        {"id": "tripleo-ipsec-storage-start", "name": "start", "interval": "0s", "timeout": "60s"},
        {"id": "tripleo-ipsec-storage-stop", "name": "stop", "interval": "0s", "timeout": "60s"}]
    # Constraints go to <constraints>, primitives to <resources>.
    assert [c.get("id") for c in new.find("configuration/constraints")][:3] == [
        "tripleo-ipsec-internal_api-with-vip", "tripleo-ipsec-internal_api-start-after-vip",
        "tripleo-ipsec-internal_api-stop-after-vip"]
    again, changes = applied(ipsec_cib.serialize(new))
    assert changes == {}
    assert ipsec_cib.serialize(again) == ipsec_cib.serialize(new)
    assert "an operator's comment, kept" in ipsec_cib.serialize(again)


def test_reconcile_corrects_drift_and_keeps_the_operators_settings():
    new, _ = applied()
    prim = find(new, "tripleo-ipsec-redis")
    for pair in prim.iter("nvpair"):
        if pair.get("name") == "vip":
            pair.set("value", "198.51.100.99")
    ET.SubElement(prim.find("instance_attributes"), "nvpair",
                  {"id": "x-extra", "name": "extra", "value": "1"})
    meta = ET.SubElement(prim, "meta_attributes", {"id": "tripleo-ipsec-redis-meta_attributes"})
    ET.SubElement(meta, "nvpair", {"id": "tripleo-ipsec-redis-meta-target-role", "name": "target-role",
                                   "value": "Stopped"})
    # An operator's ops: a start op edited with pcs (the formula's now), and
    # an op the formula does not own.
    for op in prim.iter("op"):
        if op.get("name") == "start":
            op.set("timeout", "20s")
    ET.SubElement(prim.find("operations"), "op", {"id": "redis-notify", "name": "notify", "interval": "0",
                                                  "timeout": "5s"})
    find(new, "tripleo-ipsec-redis-with-vip").set("score", "100")
    constraints = new.find("configuration/constraints")
    constraints.remove(find(new, "tripleo-ipsec-storage-stop-after-vip"))

    fixed, changes = applied(ipsec_cib.serialize(new), wanted(interval="30s"))
    assert set(changes) == {
        "tripleo-ipsec-internal_api", "tripleo-ipsec-redis", "tripleo-ipsec-storage",
        "tripleo-ipsec-redis-with-vip", "tripleo-ipsec-storage-stop-after-vip",
    }
    redis = changes["tripleo-ipsec-redis"]
    assert redis["old"]["params"]["vip"] == "198.51.100.99" and "extra" in redis["old"]["params"]
    assert redis["new"]["params"] == {"fallbacktunnel": "overcloud-redis-node-to-vip-tunnel",
                                      "tunnel": "overcloud-redis-vip-tunnel", "vip": "198.51.100.101"}
    assert changes["tripleo-ipsec-storage-stop-after-vip"]["old"] is None
    assert changes["tripleo-ipsec-redis-with-vip"]["old"]["score"] == "100"
    prim = find(fixed, "tripleo-ipsec-redis")
    assert find(prim, "tripleo-ipsec-redis-meta-target-role").get("value") == "Stopped"
    assert redis["old"]["ops"]["start"] == {"interval": "0s", "timeout": "20s"}
    assert redis["new"]["ops"]["start"] == {"interval": "0s", "timeout": "60s"}
    assert [(op.get("name"), op.get("interval"), op.get("timeout")) for op in prim.iter("op")] == [
        ("monitor", "30s", "20s"), ("start", "0s", "60s"), ("stop", "0s", "60s"), ("notify", "0", "5s")]
    assert applied(ipsec_cib.serialize(fixed), wanted(interval="30s"))[1] == {}


def test_vip_resource_rename_modifies_the_constraints_in_place():
    new, _ = applied()
    root = ipsec_cib.parse(ipsec_cib.serialize(new))
    resources = root.find("configuration/resources")
    for name in ("internal_api", "storage", "redis"):
        ET.SubElement(resources, "primitive", {"id": "vip-" + name, "class": "ocf", "provider": "heartbeat",
                                               "type": "IPaddr2"})
    renamed, changes = applied(ipsec_cib.serialize(root), wanted(vip_resource="vip-{name}"))
    assert len(changes) == 9 and not any(oid in changes for oid in ("tripleo-ipsec-redis", "tripleo-ipsec-storage"))
    assert find(renamed, "tripleo-ipsec-storage-with-vip").get("with-rsc") == "vip-storage"
    assert find(renamed, "tripleo-ipsec-storage-start-after-vip").get("first") == "vip-storage"


def test_stale_resource_removed_with_every_constraint_naming_it():
    new, _ = applied()
    constraints = new.find("configuration/constraints")
    ET.SubElement(constraints, "rsc_location", {"id": "cli-ban-redis", "rsc": "tripleo-ipsec-redis", "node": "n1",
                                                "score": "-INFINITY"})
    ordered = ET.SubElement(constraints, "rsc_order", {"id": "set-order"})
    rset = ET.SubElement(ordered, "resource_set", {"id": "set-order-0"})
    ET.SubElement(rset, "resource_ref", {"id": "tripleo-ipsec-redis"})
    ET.SubElement(constraints, "rsc_location", {"id": "vip-pref", "rsc": "ip-198.51.100.100", "node": "n1",
                                                "score": "50"})
    want = wanted()
    del want["redis"]
    cleaned, changes = applied(ipsec_cib.serialize(new), want)
    assert sorted(changes) == sorted(["tripleo-ipsec-redis", "tripleo-ipsec-redis-with-vip",
                                      "tripleo-ipsec-redis-start-after-vip", "tripleo-ipsec-redis-stop-after-vip",
                                      "cli-ban-redis", "set-order"])
    assert all(c["new"] is None for c in changes.values())
    assert find(cleaned, "vip-pref") is not None and find(cleaned, "tripleo-ipsec-storage") is not None


def test_absent_removes_only_what_the_formula_owns():
    text = EMPTY.replace(
        "    </resources>",
        '      <primitive id="tripleo-ipsec-manual" class="ocf" provider="pacemaker" type="Dummy"/>\n'
        '      <primitive id="other-ipsec-x" class="ocf" provider="ipsec-formula" type="vip-tunnel"/>\n'
        "    </resources>")
    new, _ = applied(text)
    removed, changes = applied(ipsec_cib.serialize(new), {})
    assert len(changes) == 12
    assert ipsec_cib.serialize(removed) == ipsec_cib.serialize(ipsec_cib.parse(text))
    assert ipsec_cib.owned(removed, PREFIX, AGENT) == {}


def test_missing_vip_resource_and_id_clashes_leave_that_vip_alone():
    text = EMPTY.replace('      <primitive id="ip-198.51.100.101" class="ocf" provider="heartbeat" type="IPaddr2"/>\n',
                         "")
    text = text.replace("<constraints/>", '<constraints><rsc_location id="tripleo-ipsec-storage-with-vip" '
                                          'rsc="ip-203.0.113.100" node="n1" score="1"/></constraints>')
    root = ipsec_cib.parse(text)
    new, changes, errors = ipsec_cib.reconcile(root, wanted(), PREFIX, AGENT)
    assert sorted(errors) == [
        "VIP redis: its resource ip-198.51.100.101 is not in the CIB; tripleo-ipsec-redis not created (create the "
        "VIP resource first or set ipsec:pacemaker:vip_resource)",
        "VIP storage: id tripleo-ipsec-storage-with-vip is already used by a <rsc_location>; left alone",
    ]
    assert len(changes) == 4 and all(oid.startswith("tripleo-ipsec-internal_api") for oid in changes)
    assert find(new, "tripleo-ipsec-redis") is None and find(new, "tripleo-ipsec-storage") is None


def test_primitive_inside_a_group_is_not_taken_over():
    text = EMPTY.replace("    </resources>", '      <group id="g"><primitive id="tripleo-ipsec-redis" class="ocf" '
                                                'provider="ipsec-formula" type="vip-tunnel"/></group>\n    </resources>')
    _, changes, errors = ipsec_cib.reconcile(ipsec_cib.parse(text), wanted(), PREFIX, AGENT)
    assert errors == ["VIP redis: tripleo-ipsec-redis exists inside <group id=g>, not managed by the formula; "
                      "left alone"]
    assert not any(oid.startswith("tripleo-ipsec-redis") for oid in changes)


TRIPLEO_CIB = EMPTY.replace(
    "    </resources>",
    '      <primitive id="tripleo-ipsec-redis" class="ocf" provider="heartbeat" type="ipsec">'
    '<instance_attributes id="ia"><nvpair id="ia-t" name="tunnel" value="overcloud-redis-vip-tunnel"/>'
    '</instance_attributes></primitive>\n    </resources>').replace(
    "<constraints/>",
    '<constraints><rsc_colocation id="colocation-tripleo-ipsec-redis-ip-198.51.100.101-INFINITY" '
    'rsc="tripleo-ipsec-redis" with-rsc="ip-198.51.100.101" score="INFINITY"/>'
    '<rsc_order id="order-ip-198.51.100.101-tripleo-ipsec-redis-mandatory" first="ip-198.51.100.101" '
    'first-action="start" then="tripleo-ipsec-redis" then-action="start" kind="Mandatory" symmetrical="false"/>'
    '</constraints>')


def test_a_tripleo_primitive_is_refused_unless_adopted():
    """Never half of each: without ipsec:adopt_tripleo nothing of that VIP
    changes and the error says how; with it, TripleO's resource becomes the
    formula's and the constraints pcs made for it go, in one change."""
    assert "<rsc_colocation" in TRIPLEO_CIB, "the fixture must hold pcs's constraints"
    root = ipsec_cib.parse(TRIPLEO_CIB)
    new, changes, errors = ipsec_cib.reconcile(root, wanted(), PREFIX, AGENT)
    assert len(errors) == 1 and "ipsec:adopt_tripleo" in errors[0] and "TripleO's resource" in errors[0]
    assert not [object_id for object_id in changes if "redis" in object_id]
    assert summary_of(new, "tripleo-ipsec-redis")["agent"] == "ocf:heartbeat:ipsec"

    new, changes = applied(TRIPLEO_CIB, adopt=True)
    assert changes["tripleo-ipsec-redis"]["old"]["agent"] == "ocf:heartbeat:ipsec"
    prim = find(new, "tripleo-ipsec-redis")
    assert (prim.get("provider"), prim.get("type")) == ("ipsec-formula", "vip-tunnel")
    assert prim.find("instance_attributes").get("id") == "ia"
    for pcs_made in ("colocation-tripleo-ipsec-redis-ip-198.51.100.101-INFINITY",
                     "order-ip-198.51.100.101-tripleo-ipsec-redis-mandatory"):
        assert find(new, pcs_made) is None and changes[pcs_made]["new"] is None
    constraints = [c.get("id") for c in new.find("configuration/constraints")]
    assert sorted(c for c in constraints if "redis" in c) == sorted(ipsec_cib.constraint_ids("tripleo-ipsec-redis")
                                                                     .values())


def summary_of(root, object_id):
    return ipsec_cib.summary(find(root, object_id))


def test_status_section_ids_are_not_definitions():
    """A live CIB's status repeats resource ids (lrm_resource): they must
    neither look like existing objects nor be removed."""
    new, _ = applied()
    status = new.find("status")
    state = ET.SubElement(status, "node_state", {"id": "1", "uname": "n1"})
    lrm = ET.SubElement(ET.SubElement(state, "lrm", {"id": "1"}), "lrm_resources")
    for resource in ("tripleo-ipsec-redis", "tripleo-ipsec-storage", "tripleo-ipsec-gone"):
        ET.SubElement(lrm, "lrm_resource", {"id": resource, "type": "vip-tunnel", "class": "ocf",
                                            "provider": "ipsec-formula"})
    text = ipsec_cib.serialize(new)
    assert applied(text)[1] == {}
    want = wanted()
    del want["redis"]
    cleaned, changes = applied(text, want)
    assert len(changes) == 4 and find(cleaned.find("configuration"), "tripleo-ipsec-redis") is None
    assert len(cleaned.find("status").findall(".//lrm_resource")) == 3
    fresh, changes = applied(EMPTY.replace("<status/>", ipsec_cib.serialize(status)))
    assert len(changes) == 12 and find(fresh.find("configuration"), "tripleo-ipsec-gone") is None


def test_reconcile_does_not_modify_its_input():
    root = ipsec_cib.parse(EMPTY)
    before = ipsec_cib.serialize(root)
    ipsec_cib.reconcile(root, wanted(), PREFIX, AGENT)
    assert ipsec_cib.serialize(root) == before


def test_dc_name_and_who_applies():
    root = ipsec_cib.parse(EMPTY.replace('admin_epoch="0"', 'admin_epoch="0" dc-uuid="2"'))
    assert ipsec_cib.dc_name(root) == "n2"
    assert ipsec_cib.dc_name(ipsec_cib.parse(EMPTY)) is None
    decide = ipsec_cib.decide_applier
    assert decide("controller-0", "controller-0", None)[0] is True
    assert decide("controller-0", "controller-1", "/tmp/cib.xml")[0] is False
    assert decide("controller-0", None, "/tmp/cib.xml")[0] is True
    assert decide("controller-0", None, None, dc="n2", local_name="n2")[0] is True
    applies, reason = decide("controller-0", None, None, dc="n2", local_name="n1")
    assert applies is False and "DC (n2)" in reason
    applies, reason = decide("controller-0", None, None, dc=None, local_name="n1")
    assert applies is None and "no DC" in reason


def test_options_and_intervals():
    assert ipsec_plan.parse_pacemaker({}, []) == {
        "manage": None, "resource_prefix": "tripleo-ipsec", "vip_resource": "ip-{address}", "apply_from": None,
        "monitor_interval": "10s", "start_timeout": "60s", "stop_timeout": "60s"}
    assert ipsec_plan.DEFAULT_START_TIMEOUT == ipsec_cib.DEFAULT_START_TIMEOUT
    assert ipsec_plan.DEFAULT_STOP_TIMEOUT == ipsec_cib.DEFAULT_STOP_TIMEOUT
    assert ipsec_plan.DEFAULT_MONITOR_INTERVAL == ipsec_cib.DEFAULT_MONITOR_INTERVAL
    options = ipsec_plan.parse_pacemaker(
        {"pacemaker": {"monitor_interval": 30, "apply_from": "c-1", "start_timeout": 90, "stop_timeout": "2min"}}, [])
    assert (options["monitor_interval"], options["start_timeout"], options["stop_timeout"]) == ("30s", "90s", "2min")
    for good in ("10s", "1min", "500ms", "2h"):
        assert ipsec_plan.parse_interval(good) == good
    for bad in ("0", "ten", "10 s", True, -5, "10d", "10s\n", "1min\x00"):
        with pytest.raises(SaltInvocationError, match="^ipsec:pacemaker:monitor_interval: "):
            ipsec_plan.parse_interval(bad)


@pytest.mark.parametrize("pacemaker,message", [
    ({"manage": "yes"}, "ipsec:pacemaker:manage: must be true or false"),
    ({"apply_from": ""}, "ipsec:pacemaker:apply_from: '' is not a minion id"),
    ({"apply_from": ["a"]}, "ipsec:pacemaker:apply_from: ['a'] is not a minion id"),
    ({"monitor_interval": "ten"}, "ipsec:pacemaker:monitor_interval: 'ten' is not a pacemaker interval"),
    ({"monitor_interval": 0}, "ipsec:pacemaker:monitor_interval: 0 is not a pacemaker interval"),
    ({"monitor_interval": True}, "ipsec:pacemaker:monitor_interval: True is not a pacemaker interval"),
], ids=["manage", "apply-from-empty", "apply-from-list", "interval-word", "interval-zero", "interval-bool"])
def test_plan_rejects_bad_pacemaker_pillar(pacemaker, message):
    pillar = examples.pillar(pacemaker=pacemaker)
    with pytest.raises(SaltInvocationError) as caught:
        ipsec_plan.build_plan(pillar, "controller-0", examples.own_ips("controller-0"), cluster_node=True)
    assert str(caught.value).startswith(message)


DURATION_KEYS = ("monitor_interval", "start_timeout", "stop_timeout")


@pytest.mark.parametrize("key", ["start_timeout", "stop_timeout"])
@pytest.mark.parametrize("short", [1, "19s", "500ms", "19999ms", "2000000us"])
def test_start_and_stop_timeouts_shorter_than_pacemakers_default_are_refused(key, short):
    pillar = examples.pillar(pacemaker={key: short})
    with pytest.raises(SaltInvocationError) as caught:
        ipsec_plan.build_plan(pillar, "controller-0", examples.own_ips("controller-0"), cluster_node=True)
    assert str(caught.value).startswith("ipsec:pacemaker:{}: {!r} is shorter than 20s".format(key, short))


@pytest.mark.parametrize("key", ["start_timeout", "stop_timeout"])
@pytest.mark.parametrize("value,text", [(20, "20s"), ("20s", "20s"), ("20000ms", "20000ms"), ("1min", "1min"),
                                        ("1h", "1h")])
def test_start_and_stop_timeouts_from_pacemakers_default_up_are_taken_as_written(key, value, text):
    assert ipsec_plan.parse_pacemaker({"pacemaker": {key: value}}, [])[key] == text


@pytest.mark.parametrize("key", DURATION_KEYS)
@pytest.mark.parametrize("bad", ["0", "ten", "10 s", True, -5, "10d", "10s\n", "1min\x00", 1.5, [10], {"s": 1}, ""])
def test_every_duration_key_refuses_every_bad_value_and_names_itself(key, bad):
    pillar = examples.pillar(pacemaker={key: bad})
    with pytest.raises(SaltInvocationError) as caught:
        ipsec_plan.build_plan(pillar, "controller-0", examples.own_ips("controller-0"), cluster_node=True)
    assert str(caught.value).startswith("ipsec:pacemaker:{}: ".format(key))
    assert "is not a pacemaker interval" in str(caught.value)


def test_start_and_stop_timeouts_from_pillar_reach_the_primitive_and_are_reconciled():
    plan = ipsec_plan.build_plan(examples.pillar(pacemaker={"start_timeout": 90, "stop_timeout": "2min"}),
                                 "controller-0", examples.own_ips("controller-0"), cluster_node=True)
    options = plan["pacemaker"]
    ops = ipsec_cib.operations(options["monitor_interval"], options["start_timeout"], options["stop_timeout"])
    want = ipsec_cib.desired(plan["vips"], "ipsec-formula", "vip-tunnel", None, ops)
    first, _ = applied()
    new, changes = applied(ipsec_cib.serialize(first), want)
    # Only the primitives change, and only their start and stop ops.
    assert set(changes) == {"tripleo-ipsec-internal_api", "tripleo-ipsec-redis", "tripleo-ipsec-storage"}
    for change in changes.values():
        assert change["old"]["ops"]["start"]["timeout"] == "60s" and change["new"]["ops"]["start"]["timeout"] == "90s"
        assert change["old"]["ops"]["stop"]["timeout"] == "60s" and change["new"]["ops"]["stop"]["timeout"] == "2min"
        assert change["old"]["ops"]["monitor"] == change["new"]["ops"]["monitor"]
    prim = find(new, "tripleo-ipsec-redis")
    assert [(op.get("id"), op.get("timeout")) for op in prim.iter("op")] == [
        ("tripleo-ipsec-redis-monitor", "20s"), ("tripleo-ipsec-redis-start", "90s"),
        ("tripleo-ipsec-redis-stop", "2min")]
    assert applied(ipsec_cib.serialize(new), want)[1] == {}


def test_a_primitive_without_start_and_stop_ops_gets_them():
    """A CIB written before the formula owned start and stop (only the
    monitor op) is completed in place, the monitor untouched."""
    first, _ = applied()
    for prim in first.iter("primitive"):
        ops = prim.find("operations")
        if ops is not None:
            for op in list(ops):
                if op.get("name") != "monitor":
                    ops.remove(op)
    new, changes = applied(ipsec_cib.serialize(first))
    assert set(changes) == {"tripleo-ipsec-internal_api", "tripleo-ipsec-redis", "tripleo-ipsec-storage"}
    assert changes["tripleo-ipsec-redis"]["old"]["ops"] == dict(OPS, start=None, stop=None)
    assert [op.get("name") for op in find(new, "tripleo-ipsec-redis").iter("op")] == ["monitor", "start", "stop"]


def test_plan_accepts_the_pacemaker_pillar_keys():
    pillar = examples.pillar(pacemaker={"manage": True, "apply_from": "controller-1", "monitor_interval": 30,
                                        "resource_prefix": "tripleo-ipsec", "vip_resource": "ip-{address}"})
    plan = ipsec_plan.build_plan(copy.deepcopy(pillar), "controller-0", examples.own_ips("controller-0"),
                                 cluster_node=True)
    assert not [w for w in plan["warnings"] if "pacemaker" in w]


def lrm_op(op_id, operation, rc, op_status):
    return ('<lrm_rsc_op id="{}" operation="{}" interval="0" rc-code="{}" op-status="{}" '
            'call-id="1" crm-debug-origin="do_update_resource"/>').format(op_id, operation, rc, op_status)


def status_cib(histories):
    """A CIB whose status section holds, per node uname, {resource: [ops]}."""
    states = []
    for index, (uname, resources) in enumerate(sorted(histories.items()), 1):
        rows = "".join('<lrm_resource id="{}" type="vip-tunnel" class="ocf" provider="ipsec-formula">{}'
                       '</lrm_resource>'.format(resource, "".join(ops)) for resource, ops in resources.items())
        states.append('<node_state id="{}" uname="{}"><lrm id="{}"><lrm_resources>{}</lrm_resources></lrm>'
                      '</node_state>'.format(index, uname, index, rows))
    return EMPTY.replace("<status/>", "<status>{}</status>".format("".join(states)))


def test_agent_missing_finds_only_this_nodes_probes_that_found_no_agent():
    # op-status 7: pacemaker found no agent; op-status 0 with rc 5: the
    # agent itself said "not installed" (a real problem, not cleaned up).
    missing_agent = [lrm_op("r_last_failure_0", "monitor", 5, 7), lrm_op("r_last_0", "monitor", 5, 7)]
    agent_said_so = [lrm_op("r_last_failure_0", "monitor", 5, 0)]
    probed_fine = [lrm_op("r_last_0", "monitor", 7, 0)]
    root = ipsec_cib.parse(status_cib({
        "n1": {"tripleo-ipsec-redis": missing_agent, "tripleo-ipsec-storage": agent_said_so,
               "tripleo-ipsec-internal_api": probed_fine, "ip-198.51.100.101": missing_agent},
        "n2": {"tripleo-ipsec-storage": missing_agent, "tripleo-ipsec-redis": probed_fine},
    }))
    owned = ["tripleo-ipsec-internal_api", "tripleo-ipsec-redis", "tripleo-ipsec-storage"]
    assert ipsec_cib.agent_missing(root, "n1", owned) == ["tripleo-ipsec-redis"]   # not the VIP: not ours
    assert ipsec_cib.agent_missing(root, "n2", owned) == ["tripleo-ipsec-storage"]
    assert ipsec_cib.agent_missing(root, "n3", owned) == []
    assert ipsec_cib.agent_missing(ipsec_cib.parse(EMPTY), "n1", owned) == []
