"""VIP failovers on the live cluster lab (labkit.clusterlab), and what
follows them: the tunnel resource where the VIP is, the new holder's pluto
listening on the VIP with its server conn oriented, every other node's
client conn up again (IKE level: this host's kernel has no ESP).

Three kinds (``KINDS``):
- ``standby``: the holder is put in standby (everything leaves it), then
  back online;
- ``move``: ``crm_resource --move`` of the VIP resource to another
  controller, then ``--clear`` (stickiness keeps it where it is);
- ``kill``: a power cut of the holder: its corosync, pacemaker and pluto
  SIGKILLed and its links down (so the VIP it still has configured answers
  nobody: what fencing guarantees on a real cluster); then it boots again:
  links up, its leftover addresses gone, cluster node and pluto started.

``failover(clab, plans, vip, kind)`` returns a record with the times
(seconds from the command): ``vip_moved`` (pacemaker reports the VIP on
another node), ``tunnel_moved``, ``clients_up`` (every client's conn has an
established IKE SA again), and what it found wrong.
"""

import time

import ipsec_status

from labkit import waiting

KINDS = ("standby", "move", "kill")
FOLLOW_TIMEOUT = 120  # s: liveness (dpddelay 5 s + retransmit-timeout 15 s) + revival back-off


def vip_facts(plans):
    """{vip name: {address, resource, vip_resource, server, client}} from a
    controller's plan (every controller plans the same VIPs)."""
    plan = next(p for p in plans.values() if p.get("vips"))
    return {name: {"address": v["address"], "resource": v["resource"], "vip_resource": v["vip_resource"],
                   "server": v["tunnel"], "client": v["fallback_tunnel"]}
            for name, v in plan["vips"].items()}


def client_conns(plans, vip):
    """{node: client conn name} of every node with a client conn to the VIP."""
    out = {}
    for node, plan in plans.items():
        for name, conn in plan["connections"].items():
            if conn["role"] == "vip-client" and conn["peer"] == vip["address"]:
                out[node] = name
    return out


def _status(node):
    try:
        return ipsec_status.parse_status(node.pluto.status(), node.pluto.trafficstatus())
    except Exception:  # noqa: BLE001 - a pluto that is down or starting
        return None


def holder_serves(clab, holder, vip):
    """The holder's pluto listens on the VIP and its server conn is oriented."""
    status = _status(clab.nodes[holder])
    if not status:
        return False
    conn = status["connections"].get(vip["server"]) or {}
    return vip["address"] in (status.get("addresses") or []) and conn.get("oriented") is True


def client_up(node, conn_name):
    status = _status(node)
    if not status:
        return False
    conn = status["connections"].get(conn_name) or {}
    return any(sa.get("established") for sa in conn.get("ike_sas") or [])


def clients_down(clab, plans, vip, holder):
    """Nodes other than the holder whose client conn has no IKE SA."""
    return sorted(node for node, conn in client_conns(plans, vip).items()
                  if node != holder and clab.cluster_alive(node) and not client_up(clab.nodes[node], conn))


def nudge_clients(clab, plans, vip, old, new):
    """On a kernel without ESP, what liveness would do for the clients that
    are neither the old holder (the agent's stop starts its client conn)
    nor the new one: tear the client conn down and initiate it again.
    Pluto runs liveness (dpddelay=5, retransmit-timeout=15s, restart) on
    Child SAs, and without ESP there are none: nothing probes the VIP and
    the IKE SA to the old holder looks established forever (seen here:
    "REKEY in 28014s; newest; idle" an hour after the move). Returns the
    nodes nudged ([] where the kernel has ESP)."""
    from labkit import vm
    if vm.host_has_esp():
        return []
    nudged = []
    for node, conn in sorted(client_conns(plans, vip).items()):
        if node in (old, new) or not clab.cluster_alive(node):
            continue
        _reinitiate(clab.nodes[node].pluto, conn)
        nudged.append(node)
    return nudged


def nudge_initiators_of(clab, plans, node_id):
    """On a kernel without ESP, after ``node_id`` came back from a power
    cut: what liveness would do on its peers that initiate toward it
    (auto=start, the lower address): their IKE SA to the dead pluto looks
    established forever, so tear it down and initiate again. Returns
    {peer: [conns]} ({} where the kernel has ESP)."""
    from labkit import vm
    if vm.host_has_esp():
        return {}
    back = plans[node_id]
    mine = {net["address"] for net in back["networks"].values() if net.get("address")}
    nudged = {}
    for peer, plan in sorted(plans.items()):
        if peer == node_id or not clab.cluster_alive(peer):
            continue
        for name, conn in sorted(plan["connections"].items()):
            peer_address = plan["networks"].get(conn["network"], {}).get("peers", {}).get(conn["peer"])
            if conn["role"] == "node-to-node" and peer_address in mine and conn["keywords"].get("auto") == "start":
                _reinitiate(clab.nodes[peer].pluto, name)
                nudged.setdefault(peer, []).append(name)
    return nudged


def _reinitiate(pluto, conn):
    """What a liveness restart does: the conn torn down, then initiated."""
    pluto.whack("--name", conn, "--terminate")
    pluto.whack("--name", conn, "--initiate", "--asynchronous")


# s between two looks (each a crm_resource or a whack): an emulated CPU
# (labkit.clustervm) sets more, or the looks slow down what they watch.
POLL = 0.25


def _wait(predicate, timeout, interval=None):
    return waiting.until(predicate, timeout, interval or POLL)


def failover(clab, plans, vip_name, kind, target=None, timeout=FOLLOW_TIMEOUT):
    """Move VIP ``vip_name`` by ``kind``; wait for everything to follow, for
    every VIP that moves with it (standby and a power cut move all the
    holder's VIPs). Returns the record (see the module docstring): the
    named VIP's times at the top, every moved VIP's under "vips"."""
    vips = vip_facts(plans)
    old = clab.locate(vips[vip_name]["vip_resource"])
    held = sorted(n for n, v in vips.items() if clab.locate(v["vip_resource"]) == old)
    affected = [vip_name] if kind == "move" else [vip_name] + [n for n in held if n != vip_name]
    others = [n for n in clab.controllers_alive() if n != old]
    target = target or others[0]
    via = others[0]
    record = {"vip": vip_name, "kind": kind, "from": old, "vip_resource": vips[vip_name]["vip_resource"],
              "problems": [], "vips": {}}
    started = time.monotonic()
    if kind == "standby":
        clab.crm(via, "crm_attribute", "--node", old, "--name", "standby", "--update", "on", check=True)
    elif kind == "move":
        clab.crm(via, "crm_resource", "--move", "-r", vips[vip_name]["vip_resource"], "-N", target, check=True)
    elif kind == "kill":
        clab.power_cut(old)
    else:
        raise ValueError(kind)
    for name in affected:
        followed = _follow(clab, plans, vips[name], old, started, via, timeout)
        record["vips"][name] = followed
        record["problems"] += ["{}: {}".format(name, p) for p in followed.pop("problems")]
    record.update({k: v for k, v in record["vips"][vip_name].items()})
    return record


def _follow(clab, plans, vip, old, started, via, timeout):
    """Wait for one VIP's move and what follows it; the times from ``started``."""
    found = {"problems": []}

    def elapsed():
        return round(time.monotonic() - started, 2)

    new = _wait(lambda: (lambda n: n if n and n != old else None)(clab.locate(vip["vip_resource"], via)), timeout)
    found["to"] = new
    found["vip_moved"] = elapsed() if new else None
    if not new:
        found["problems"].append("the VIP did not move")
        return found
    moved = _wait(lambda: clab.locate(vip["resource"], via) == new, timeout)
    found["tunnel_moved"] = elapsed() if moved else None
    if not moved:
        found["problems"].append("the tunnel resource is on {}, the VIP on {}".format(
            clab.locate(vip["resource"], via), new))
    serves = _wait(lambda: holder_serves(clab, new, vip), timeout)
    found["holder_serves"] = elapsed() if serves else None
    if not serves:
        found["problems"].append("{}'s pluto does not serve the VIP".format(new))
    found["nudged"] = nudge_clients(clab, plans, vip, old, new)
    up = _wait(lambda: not clients_down(clab, plans, vip, new), timeout)
    found["clients_up"] = elapsed() if up else None
    if not up:
        found["problems"].append("clients down: {}".format(clients_down(clab, plans, vip, new)))
    found["clients_after_vip"] = (round(found["clients_up"] - found["vip_moved"], 2)
                                  if found["clients_up"] is not None else None)
    return found


def restore(clab, plans, record):
    """Bring the old holder back (or drop the move's constraint)."""
    old, kind = record["from"], record["kind"]
    via = next(n for n in clab.controllers_alive() if n != old) if kind == "kill" else old
    if kind == "standby":
        clab.crm(via, "crm_attribute", "--node", old, "--name", "standby", "--update", "off", check=True)
    elif kind == "move":
        vip_resource = record["vip_resource"]
        clab.crm(via, "crm_resource", "--clear", "-r", vip_resource, check=True)
    elif kind == "kill":
        clab.power_on(old)
        record["nudged_after_power_on"] = nudge_initiators_of(clab, plans, old)
