"""
Pacemaker CIB objects of ipsec-formula's VIP tunnels: pure XML logic, no I/O.

For every VIP of the plan (``plan["vips"]``) the formula owns four CIB
objects, all with ids derived from the tunnel resource's id ``R`` only (so a
changed VIP resource name modifies them instead of leaving old ones behind):

- ``<primitive id=R class=ocf provider=<provider> type=<agent>>`` with the
  instance attributes ``tunnel``, ``vip``, ``fallbacktunnel`` (plus
  ``ctlsocket``/``ipsec_conf``/``ipsec_bin`` when they differ from the
  agent's defaults) and three ops: a recurring monitor, and start and stop
  with explicit timeouts (pacemaker's default of 20s killed a start on a
  slow node; a stop that times out gets the node fenced);
- ``<rsc_colocation id=R-with-vip rsc=R with-rsc=V score=INFINITY>``;
- ``<rsc_order id=R-start-after-vip first=V first-action=start then=R
  then-action=start kind=Mandatory symmetrical=false>``;
- ``<rsc_order id=R-stop-after-vip first=V first-action=stop then=R
  then-action=stop kind=Mandatory symmetrical=false>``.

Ownership: a top-level primitive whose id starts with ``<resource_prefix>-``
and whose agent is the formula's. Owned primitives no longer in the plan are
removed together with every constraint that references them (the CIB schema
rejects constraints naming a missing resource). Within an owned primitive
the formula owns the agent, the instance attributes and the monitor, start
and stop ops (their timeouts are pillar keys, so ``pcs resource op`` edits
are reverted; set ``ipsec:pacemaker:*_timeout`` instead); meta attributes
(``target-role`` set by ``pcs resource disable``, ``is-managed``...) and
other ops are the operator's and are left alone.

``reconcile`` works on a parsed copy of the CIB and returns the new document
plus a report; the execution module turns the difference into one
``crm_diff`` patch applied by ``cibadmin --patch`` (one atomic CIB update).
"""

import copy
import xml.etree.ElementTree as ET

from salt.exceptions import SaltInvocationError

DEFAULT_MONITOR_INTERVAL = "10s"
MONITOR_TIMEOUT = "20s"
# start waits for pluto up to half of its timeout (boot: ipsec.service and
# pacemaker start side by side); every pluto call of an action is bounded
# by the agent to 3/4 of it, so the action answers before pacemaker kills it.
DEFAULT_START_TIMEOUT = "60s"
DEFAULT_STOP_TIMEOUT = "60s"
# The ops the formula owns, in the order it writes them.
OWNED_OPS = ("monitor", "start", "stop")
AGENT_CLASS = "ocf"
# The agent's own parameter defaults (ipsec/files/ocf/vip-tunnel), equal to
# the lookup defaults: parameters are only written when the lookup differs.
AGENT_DEFAULTS = {
    "ctlsocket": "/run/pluto/pluto.ctl",
    "ipsec_conf": "/etc/ipsec.conf",
    "ipsec_bin": "/usr/sbin/ipsec",
}
# lookup key -> agent parameter
LOOKUP_PARAMS = (("ctlsocket", "ctlsocket"), ("config_file", "ipsec_conf"), ("ipsec_bin", "ipsec_bin"))
REFERENCE_ATTRIBUTES = ("rsc", "with-rsc", "first", "then")
RESOURCE_TAGS = ("primitive", "group", "clone", "master", "bundle")
# TripleO's agent (Debian ships it as heartbeat/ipsec): a primitive of it
# with the formula's resource id is adopted only when asked
# (ipsec:adopt_tripleo), never switched silently.
TRIPLEO_AGENT = "ocf:heartbeat:ipsec"


def agent_name(provider, agent):
    return "{}:{}:{}".format(AGENT_CLASS, provider, agent)


def agent_params(lookup):
    """Agent parameters that follow from the lookup (non-defaults only)."""
    params = {}
    for key, param in LOOKUP_PARAMS:
        value = lookup.get(key)
        if value and value != AGENT_DEFAULTS[param]:
            params[param] = str(value)
    return params


def constraint_ids(resource):
    return {
        "colocation": resource + "-with-vip",
        "start": resource + "-start-after-vip",
        "stop": resource + "-stop-after-vip",
    }


def operations(monitor_interval=DEFAULT_MONITOR_INTERVAL, start_timeout=DEFAULT_START_TIMEOUT,
               stop_timeout=DEFAULT_STOP_TIMEOUT):
    """The tunnel primitive's ops: {name: {"interval", "timeout"}}."""
    return {
        "monitor": {"interval": monitor_interval, "timeout": MONITOR_TIMEOUT},
        "start": {"interval": "0s", "timeout": start_timeout},
        "stop": {"interval": "0s", "timeout": stop_timeout},
    }


def desired(vips, provider, agent, extra_params=None, ops=None):
    """The objects the plan's VIPs need, as JSON-able summaries.

    ops: the primitive's ops (``operations()``; its defaults when None).

    Returns {vip name: {"vip_resource": V, "objects": {id: summary}}}, in
    plan order (sorted VIP names).
    """
    wanted = {}
    for name in sorted(vips):
        vip = vips[name]
        resource, vip_resource = vip["resource"], vip["vip_resource"]
        params = {"tunnel": vip["tunnel"], "vip": vip["address"]}
        if vip.get("fallback_tunnel"):
            params["fallbacktunnel"] = vip["fallback_tunnel"]
        params.update(extra_params or {})
        ids = constraint_ids(resource)
        objects = {
            resource: {
                "type": "primitive",
                "agent": agent_name(provider, agent),
                "params": dict(sorted(params.items())),
                "ops": copy.deepcopy(ops or operations()),
            },
            ids["colocation"]: {
                "type": "rsc_colocation", "rsc": resource, "with-rsc": vip_resource, "score": "INFINITY",
            },
        }
        for action in ("start", "stop"):
            objects[ids[action]] = {
                "type": "rsc_order",
                "first": vip_resource, "first-action": action,
                "then": resource, "then-action": action,
                "kind": "Mandatory", "symmetrical": "false",
            }
        wanted[name] = {"resource": resource, "vip_resource": vip_resource, "objects": objects}
    return wanted


# --- XML ------------------------------------------------------------------

def parse(text):
    """The CIB document (an Element). Comments and PIs are kept."""
    parser = ET.XMLParser(target=ET.TreeBuilder(insert_comments=True, insert_pis=True))
    try:
        return ET.fromstring(text, parser=parser)
    except ET.ParseError as exc:
        raise SaltInvocationError("the CIB is not valid XML: {}".format(exc))


def serialize(root):
    return ET.tostring(root, encoding="unicode")


def _section(root, name):
    configuration = root.find("configuration")
    if configuration is None:
        raise SaltInvocationError("the CIB has no configuration section")
    section = configuration.find(name)
    if section is None:
        section = ET.SubElement(configuration, name)
    return section


def element(object_id, summary):
    """The XML element of a desired object summary."""
    kind = summary["type"]
    if kind == "primitive":
        cls, provider, agent = summary["agent"].split(":", 2)
        prim = ET.Element("primitive", {"id": object_id, "class": cls, "provider": provider, "type": agent})
        prim.append(_instance_attributes(object_id, summary["params"]))
        ops = ET.SubElement(prim, "operations")
        for name in OWNED_OPS:
            ops.append(_op(object_id, name, summary["ops"][name]))
        return prim
    attrs = {"id": object_id}
    attrs.update((k, v) for k, v in summary.items() if k != "type")
    return ET.Element(kind, attrs)


def _instance_attributes(resource, params):
    set_id = resource + "-instance_attributes"
    block = ET.Element("instance_attributes", {"id": set_id})
    for name, value in sorted(params.items()):
        ET.SubElement(block, "nvpair", {"id": "{}-{}".format(set_id, name), "name": name, "value": value})
    return block


def _op(resource, name, op):
    return ET.Element("op", {
        "id": "{}-{}".format(resource, name), "name": name,
        "interval": op["interval"], "timeout": op["timeout"],
    })


def _ops_named(elem, name):
    return [op for op in elem.findall("operations/op") if op.get("name") == name]


def _op_summary(ops):
    """One op as {"interval", "timeout"}; several as a list; none: None."""
    found = [{"interval": op.get("interval"), "timeout": op.get("timeout")} for op in ops]
    return found[0] if len(found) == 1 else (found or None)


def summary(elem):
    """The formula's view of an existing CIB element (same shape as desired)."""
    if elem.tag == "primitive":
        params = {}
        for block in elem.findall("instance_attributes"):
            for pair in block.findall("nvpair"):
                params[pair.get("name")] = pair.get("value")
        return {
            "type": "primitive",
            "agent": "{}:{}:{}".format(elem.get("class"), elem.get("provider"), elem.get("type")),
            "params": dict(sorted(params.items())),
            "ops": {name: _op_summary(_ops_named(elem, name)) for name in OWNED_OPS},
        }
    found = {"type": elem.tag}
    found.update((k, v) for k, v in elem.attrib.items() if k != "id")
    children = [child for child in elem if isinstance(child.tag, str)]
    if children:
        found["children"] = [ET.tostring(child, encoding="unicode").strip() for child in children]
    return found


def _ids(root):
    """id -> element of the configuration's definitions. The status section
    repeats ids (lrm_resource id=<resource>, node_state id=<node id>) and
    resource_ref only names one: neither defines an object."""
    configuration = root.find("configuration")
    return {
        elem.get("id"): elem for elem in (configuration.iter() if configuration is not None else ())
        if isinstance(elem.tag, str) and elem.get("id") and elem.tag != "resource_ref"
    }


def _parents(root):
    return {child: parent for parent in root.iter() for child in parent}


def references(elem, resource):
    """Does constraint ``elem`` name ``resource`` (attributes or resource sets)?"""
    if any(elem.get(attr) == resource for attr in REFERENCE_ATTRIBUTES):
        return True
    return any(ref.get("id") == resource for ref in elem.iter("resource_ref"))


def owned_resources(root, prefix, agent):
    """Ids of the top-level primitives the formula owns."""
    resources = _section(root, "resources")
    return [
        prim.get("id") for prim in resources.findall("primitive")
        if (prim.get("id") or "").startswith(prefix + "-") and summary(prim)["agent"] == agent
    ]


def _update_primitive(prim, want):
    cls, provider, agent = want["agent"].split(":", 2)
    prim.set("class", cls)
    prim.set("provider", provider)
    prim.set("type", agent)
    resource = prim.get("id")
    blocks = prim.findall("instance_attributes")
    if summary(prim)["params"] != want["params"] or len(blocks) != 1:
        position = list(prim).index(blocks[0]) if blocks else 0
        for block in blocks:
            prim.remove(block)
        fresh = _instance_attributes(resource, want["params"])
        if blocks and blocks[0].get("id"):
            # Keep the set's id: only the nvpairs change in the patch.
            fresh.set("id", blocks[0].get("id"))
            for pair in fresh:
                pair.set("id", "{}-{}".format(blocks[0].get("id"), pair.get("name")))
        prim.insert(position, fresh)
    ops = prim.find("operations")
    if ops is None:
        ops = ET.SubElement(prim, "operations")
    for name in OWNED_OPS:
        found = _ops_named(prim, name)
        if _op_summary(found) == want["ops"][name]:
            continue
        # In place of the first op of that name (an operator's pcs op
        # included): the patch modifies it instead of moving things around.
        position = list(ops).index(found[0]) if found else len(ops)
        for op in found:
            ops.remove(op)
        op = _op(resource, name, want["ops"][name])
        if any(other.get("id") == op.get("id") for other in prim.iter("op")):
            op.set("id", "{}-{}".format(op.get("id"), want["ops"][name]["interval"]))
        ops.insert(position, op)


def _foreign(current, want, adopt):
    """Why the existing primitive ``current`` blocks the formula's, or None
    (it is the formula's, or TripleO's and ``adopt`` is set)."""
    if current is None or current.tag != "primitive":
        return None
    found = summary(current)["agent"]
    if found == want["agent"] or (found == TRIPLEO_AGENT and adopt):
        return None
    if found == TRIPLEO_AGENT:
        return ("{} is TripleO's resource ({}): set ipsec:adopt_tripleo: true to replace it and its pcs "
                "constraints in one CIB change (docs/migration.md)".format(current.get("id"), found))
    return "{} exists with agent {}, not the formula's".format(current.get("id"), found)


def _drop_foreign_constraints(constraints, resource, own_ids, changes):
    """Remove the constraints naming ``resource`` that are not the
    formula's (pcs made them for TripleO's resource)."""
    for constraint in list(constraints):
        if isinstance(constraint.tag, str) and constraint.get("id") not in own_ids \
                and references(constraint, resource):
            changes[constraint.get("id")] = {"old": summary(constraint), "new": None}
            constraints.remove(constraint)


def reconcile(root, wanted, prefix, agent, adopt=False):
    """Bring a copy of the CIB ``root`` to the ``wanted`` objects.

    wanted: the result of ``desired`` (empty: remove everything owned).
    prefix, agent: ownership key (resource prefix, 'ocf:provider:type').
    adopt: replace TripleO's resource of the same id (``ocf:heartbeat:ipsec``)
        and the constraints pcs made for it, in this one change.

    Returns (new_root, changes, errors): changes is {object id: {"old":
    summary or None, "new": summary or None}}; errors are messages about
    VIPs left alone (their objects are not touched).
    """
    new = copy.deepcopy(root)
    resources = _section(new, "resources")
    constraints = _section(new, "constraints")
    ids = _ids(new)
    parents = _parents(new)
    changes, errors = {}, []
    keep = set()

    for name, group in wanted.items():
        resource, vip_resource = group["resource"], group["vip_resource"]
        keep.add(resource)
        vip_elem = ids.get(vip_resource)
        if vip_elem is None or vip_elem.tag not in RESOURCE_TAGS:
            errors.append("VIP {}: its resource {} is not in the CIB; {} not created (create the VIP "
                          "resource first or set ipsec:pacemaker:vip_resource)".format(name, vip_resource, resource))
            continue
        clash = _clash(group["objects"], ids, parents, resources, constraints) or _foreign(
            ids.get(resource), group["objects"][resource], adopt)
        if clash:
            errors.append("VIP {}: {}; left alone".format(name, clash))
            continue
        if ids.get(resource) is not None and summary(ids[resource])["agent"] == TRIPLEO_AGENT:
            _drop_foreign_constraints(constraints, resource, set(group["objects"]), changes)
        for object_id, want in group["objects"].items():
            current = ids.get(object_id)
            old = summary(current) if current is not None else None
            if old == want:
                continue
            if current is None:
                section = resources if want["type"] == "primitive" else constraints
                section.append(element(object_id, want))
            elif want["type"] == "primitive":
                _update_primitive(current, want)
            else:
                section = constraints
                position = list(section).index(current)
                section.remove(current)
                section.insert(position, element(object_id, want))
            changes[object_id] = {"old": old, "new": want}

    for resource in owned_resources(new, prefix, agent):
        if resource in keep:
            continue
        prim = _ids(new)[resource]
        for constraint in list(constraints):
            if isinstance(constraint.tag, str) and references(constraint, resource):
                changes[constraint.get("id")] = {"old": summary(constraint), "new": None}
                constraints.remove(constraint)
        changes[resource] = {"old": summary(prim), "new": None}
        resources.remove(prim)
    return new, changes, errors


def _clash(objects, ids, parents, resources, constraints):
    """Why the formula cannot own these ids, or None."""
    for object_id, want in objects.items():
        current = ids.get(object_id)
        if current is None:
            continue
        if current.tag != want["type"]:
            return "id {} is already used by a <{}>".format(object_id, current.tag)
        expected_parent = resources if want["type"] == "primitive" else constraints
        if parents.get(current) is not expected_parent:
            return "{} exists inside <{} id={}>, not managed by the formula".format(
                object_id, parents[current].tag, parents[current].get("id"))
    return None


def owned(root, prefix, agent):
    """{id: summary} of the formula's objects in the CIB (for show)."""
    found = {}
    ids = _ids(root)
    constraints = _section(root, "constraints")
    for resource in owned_resources(root, prefix, agent):
        found[resource] = summary(ids[resource])
        for constraint in constraints:
            if isinstance(constraint.tag, str) and references(constraint, resource):
                found[constraint.get("id")] = summary(constraint)
    return found


# --- probes that ran before the agent was there -----------------------------

# pacemaker's execution status of an action whose agent (or a dependency of
# it) was not found on the node: PCMK_EXEC_NOT_INSTALLED. An agent that
# itself answers 5 (OCF_ERR_INSTALLED: e.g. this node's conn is missing)
# has op-status 0 and is a real problem, left to the operator.
EXEC_NOT_INSTALLED = "7"


def agent_missing(root, node, resources):
    """The ``resources`` whose history on ``node`` (its uname) holds an
    action that failed because the agent was not there.

    On a first deployment the node that changes the CIB may create the
    tunnel resources before another node's state has installed the agent;
    that node's probe then records "not installed", which bans the resource
    from it until a cleanup (the tunnel could not follow its VIP there).
    """
    wanted = set(resources)
    found = set()
    for state in root.iter("node_state"):
        if state.get("uname") != node:
            continue
        for history in state.iter("lrm_resource"):
            if history.get("id") in wanted and any(
                    op.get("op-status") == EXEC_NOT_INSTALLED for op in history.iter("lrm_rsc_op")):
                found.add(history.get("id"))
    return sorted(found)


# --- who applies ----------------------------------------------------------

def dc_name(root):
    """uname of the node the CIB names as DC (``dc-uuid``), or None."""
    dc_uuid = root.get("dc-uuid")
    if not dc_uuid:
        return None
    for node in root.iter("node"):
        if node.get("id") == dc_uuid and node.get("uname"):
            return node.get("uname")
    return None


def decide_applier(minion_id, apply_from, cib_file, dc=None, local_name=None):
    """(apply, reason): exactly one node per cluster changes the CIB.

    - pillar ``apply_from`` set: the minion with that id, always;
    - else with a CIB file (tests, offline preparation): this node;
    - else the node that is the cluster's DC (``dc-uuid`` of the live CIB
      compared with ``crm_node -n``).

    apply is True, False (another node applies) or None (cannot tell: no
    DC elected and no apply_from; the caller reports a failure).
    """
    if apply_from:
        if str(minion_id) == apply_from:
            return True, "this minion is ipsec:pacemaker:apply_from"
        return False, "the CIB is changed from {} (ipsec:pacemaker:apply_from)".format(apply_from)
    if cib_file:
        return True, "CIB file {}: no DC to defer to".format(cib_file)
    if not dc:
        return None, ("the cluster has no DC: nothing changed (is the cluster up and quorate? "
                      "ipsec:pacemaker:apply_from names the node that changes the CIB)")
    if local_name == dc:
        return True, "this node ({}) is the DC".format(local_name)
    return False, "the CIB is changed from the DC ({}); this node is {}".format(dc, local_name)
