"""
Plan versus live pluto: pure logic, no Salt dunders, no I/O.

``verify(plan, status, level)`` takes the plan of ``ipsec.plan`` and the
parsed status of ``ipsec.status`` and says, per planned connection, whether
it is loaded, has an established IKE SA and Child SA, and whether it is as
planned, with a reason whenever it is not.

What each planned conn must be here (``expect``):
- ``auto=start`` node-to-node and VIP client conns: ``up`` (established at
  ``level``); ``auto=ignore``: nothing; any other ``auto`` (``add``,
  ``ondemand``, ``route``, ...): ``loaded`` (they come up when the peer or
  traffic starts them).
- VIP conns depend on where the VIP is. Whether this node holds it is read
  from pluto's own listening addresses (its ``interface ... UDP
  <addr>:500`` lines): pluto can only serve a VIP it listens on.
  - On the holder, the server conn (``right=%any``, a template) must be
    loaded and oriented, and every other node of the VIP's network (its
    planned clients) must have an instance up at ``level``. Its own client
    conn is not needed: both its ends are local, pluto leaves it
    unoriented.
  - Elsewhere the client conn must be up and the server conn is standby.
  - With ``local`` (the node's live addresses), a VIP pluto listens on
    that the node no longer has is stale: this node is that VIP's client,
    so its client conn must be up, and both VIP conns fail saying why.
"""

import ipaddress

from salt.exceptions import SaltInvocationError

LEVELS = ("ike", "child")
STARTED = ("start",)


def _canonical(address):
    try:
        return str(ipaddress.ip_address(address))
    except (TypeError, ValueError):
        return address


def _sas(conns, ike_index):
    """What the SAs of some status conns (a conn, or the instances of a
    template that belong to one client) add up to."""
    ikes, children, pending, unfinished = [], [], [], []
    in_bytes = out_bytes = None
    for conn in conns:
        for record in conn["ike_sas"]:
            if record["established"]:
                ikes.append(record["serial"])
            else:
                unfinished.append(record)
        pending.extend(conn.get("pending_child_sas") or [])
        for record in conn["child_sas"]:
            if not record["established"]:
                unfinished.append(record)
                continue
            children.append(record["serial"])
            # A Child SA may ride on an IKE SA listed under another conn.
            parent = ike_index.get(record.get("ike_sa"))
            if parent is not None and parent["established"] and parent["serial"] not in ikes:
                ikes.append(parent["serial"])
            if record.get("in_bytes") is not None:
                in_bytes = (in_bytes or 0) + record["in_bytes"]
            if record.get("out_bytes") is not None:
                out_bytes = (out_bytes or 0) + record["out_bytes"]
    return {
        "ike_sa": bool(ikes),
        "child_sa": bool(children),
        "ike_sas": sorted(ikes),
        "child_sas": sorted(children),
        "in_bytes": in_bytes,
        "out_bytes": out_bytes,
        "unfinished": sorted(unfinished, key=lambda record: record["serial"]),
        "pending": sorted(pending),
    }


def _is_up(sas, level):
    return sas["ike_sa"] and (level == "ike" or sas["child_sa"])


def _sa_problem(sas, level, remote):
    """Why a loaded, oriented conn is not up at ``level``, or None."""
    if not sas["ike_sa"]:
        if sas["unfinished"]:
            record = sas["unfinished"][-1]
            text = record["text"] or record["state"] or "negotiating"
            problem = "IKE SA #{} not established ({})".format(record["serial"], text)
            # Human texts of the first initiator states: IKEv2 4.x+
            # "sent IKE_SA_INIT request", 3.x "sent v2I1, expected v2R1",
            # IKEv1 "sent MI1, expecting MR1" / "sent AI1, expecting AR1".
            if any(mark in text for mark in ("IKE_SA_INIT", "v2I1", "MI1", "AI1")):
                problem += ": no answer from {}: peer down, unreachable or its pluto not running".format(
                    remote or "the peer")
            elif any(mark in text for mark in ("IKE_AUTH", "v2I2", "MI3")):
                problem += ": authentication pending or refused (PSK or ID mismatch?)"
            return problem
        return ("no IKE SA: nothing negotiating right now (a failed attempt waits to be retried: "
                "authentication failed (PSK?), peer refused or unreachable; see the pluto log)")
    if level == "child" and not sas["child_sa"]:
        problem = "IKE SA #{} established but no established Child SA".format(sas["ike_sas"][-1])
        return problem + (" (one pending)" if sas["pending"] else "")
    return None


NO_CHILD_HINT = ("IKE SAs are up but Child SAs are not: they failed or are still negotiating; a kernel "
                 "without ESP cannot install them (pluto log: the responder's 'Add SA ... Function not implemented', "
                 "the initiator's 'rejected Child SA with TS_UNACCEPTABLE'), "
                 "level=ike checks the IKE SAs only")


def _entry(planned):
    keywords = planned.get("keywords") or {}
    return {
        "role": planned.get("role"),
        "network": planned.get("network"),
        "peer": planned.get("peer"),
        "auto": keywords.get("auto", "ignore"),
        "expect": "nothing",
        "ok": True,
        "loaded": False,
        "oriented": None,
        "ike_sa": False,
        "child_sa": False,
        "up": False,
        "in_bytes": None,
        "out_bytes": None,
        "reason": None,
    }


def _fill(entry, conn, sas, level):
    entry["loaded"] = conn is not None
    entry["oriented"] = conn["oriented"] if conn is not None else None
    if sas is None:
        return
    for field in ("ike_sa", "child_sa", "in_bytes", "out_bytes", "ike_sas", "child_sas"):
        entry[field] = sas[field]
    entry["up"] = _is_up(sas, level)


def _peer_conn(entry, planned, conn, ike_index, level, listening):
    """node-to-node and VIP client conns: one status conn each."""
    auto = entry["auto"]
    sas = _sas([conn], ike_index) if conn is not None else None
    _fill(entry, conn, sas, level)
    if auto == "ignore":
        entry["reason"] = "auto=ignore: pluto does not load it"
        return
    # The answering end of a node-to-node tunnel (auto=add) must be up as
    # much as the initiating end: its peer starts it.
    answers = planned.get("initiator") not in (None, (planned.get("keywords") or {}).get("left"))
    entry["expect"] = "up" if auto in STARTED or answers else "loaded"
    if conn is None:
        entry["ok"] = False
        entry["reason"] = "not loaded in pluto (auto={}): apply the formula, then see the pluto log".format(auto)
        return
    if entry["expect"] == "loaded":
        entry["reason"] = "auto={}: only has to be loaded (comes up when the peer or traffic starts it)".format(auto)
        return
    if conn["oriented"] is False:
        entry["ok"] = False
        local = (planned.get("keywords") or {}).get("left") or conn.get("local")
        entry["reason"] = "loaded but unoriented: pluto does not listen on {} (it listens on {})".format(
            local, ", ".join(listening) or "nothing")
        return
    entry["ok"] = entry["up"]
    if not entry["up"]:
        entry["reason"] = _sa_problem(sas, level, conn.get("remote") or planned.get("peer"))


def _server_conn(entry, planned, template, instances, clients, ike_index, level, client_auto):
    """A VIP server conn on the node holding the VIP: a template whose
    instances are the clients' tunnels."""
    entry["expect"] = "up" if client_auto in STARTED else "loaded"
    if template is None:
        _fill(entry, None, None, level)
        entry["ok"] = False
        entry["reason"] = "not loaded in pluto although this node holds VIP {}".format(planned.get("peer"))
        return
    _fill(entry, template, _sas(instances, ike_index), level)
    entry["instances"] = sorted(conn["name"] for conn in instances)
    by_remote = {}
    for conn in instances:
        by_remote.setdefault(_canonical(conn.get("remote")), []).append(conn)
    report, missing = {}, []
    for node, address in sorted(clients.items()):
        conns = by_remote.get(_canonical(address), [])
        sas = _sas(conns, ike_index)
        up = _is_up(sas, level)
        report[address] = {
            "node": node,
            "instances": sorted(conn["name"] for conn in conns),
            "ike_sa": sas["ike_sa"],
            "child_sa": sas["child_sa"],
            "in_bytes": sas["in_bytes"],
            "out_bytes": sas["out_bytes"],
            "ike_sas": sas["ike_sas"],
            "child_sas": sas["child_sas"],
            "up": up,
        }
        if not up:
            missing.append("{} ({}): {}".format(address, node, (
                "not connected (no instance)" if not conns else
                "no established Child SA" if sas["ike_sa"] else "no established IKE SA")))
    entry["clients"] = report
    if template["oriented"] is False:
        entry["ok"] = False
        entry["reason"] = "loaded but unoriented although pluto listens on the VIP {}".format(planned.get("peer"))
        return
    if entry["expect"] == "loaded":
        entry["reason"] = "its clients use auto={}: only has to be loaded and oriented".format(client_auto)
        return
    # Up when every planned client is (no other node on the network: no
    # client to wait for).
    entry["up"] = entry["ok"] = not missing
    if missing:
        entry["reason"] = "clients not up at level {}: {}".format(level, "; ".join(missing))


def _not_needed(entry, conn, reason):
    _fill(entry, conn, None, None)
    entry["reason"] = reason


def stale_vips(vips, listening, local):
    """{vip name: address} of the plan's ``vips`` that pluto listens on
    (``listening``: the addresses of ``ipsec.status``) although this node
    no longer has them (``local``: its live addresses).

    The agent's stop makes pluto let go of a VIP that leaves the node. A
    VIP that leaves while its tunnel resource does not run here (before the
    resources exist, or banned from this node) has no stop here: pluto
    keeps listening on it, keeps serving it to clients that still reach it
    through their old SAs, and cannot orient this node's own client conn
    toward the VIP ("we cannot identify ourselves").
    """
    listening = {_canonical(a) for a in listening}
    local = {_canonical(a) for a in local}
    return {name: vip["address"] for name, vip in sorted(vips.items())
            if _canonical(vip["address"]) in listening and _canonical(vip["address"]) not in local}


STALE_VIP = ("pluto listens on VIP {} although this node no longer has it (its tunnel resource's stop is "
             "under way, or the VIP left while that resource did not run here): pluto still serves clients "
             "that reach it through old SAs and cannot orient this node's client conn toward the VIP; "
             "on a pacemaker-managed cluster node state.apply ipsec lets go of it "
             "(ipsec-pacemaker-stale-vips-released), elsewhere ipsec whack --listen")


def verify(plan, status, level="child", local=None):
    """Compare a plan (``ipsec.plan``) with a parsed status (``ipsec.status``).

    level: "child" (default: IKE SA and Child SA established) or "ike" (an
    established IKE SA is enough: kernels without ESP).
    local: this node's live addresses, when known (ignored when none of
    the plan's own ``addresses`` is among them: a failed read). A VIP pluto
    listens on that is not among them is stale: both VIP conns fail (``STALE_VIP``),
    since pluto would count it as held; the client conn is then expected
    up (this node is a client of that VIP now), the server conn not.

    Returns:
    - ``result``: true only when every planned conn is as expected (``ok``);
    - ``comment``: one line naming each failing conn and why;
    - ``hint``: what a common failure pattern means (Child SAs missing
      while IKE SAs are up), or None;
    - ``connections``: per planned conn ``expect`` ("up", "loaded" or
      "nothing" on this node), ``ok``, ``loaded``, ``oriented``,
      ``ike_sa``, ``child_sa``, ``up`` (established at ``level``),
      ``in_bytes``/``out_bytes`` (None where pluto shows none), ``reason``;
      VIP server conns also ``clients`` (per planned client address);
    - ``failed``: conn -> reason for every conn that is not ok;
    - ``unplanned``: conns pluto has loaded that the plan does not (they
      never make the result false);
    - ``vips``: per VIP address its network and whether this node holds it;
    - ``counts``, ``level``, ``node``, ``version``, ``summary``.
    """
    if level not in LEVELS:
        raise SaltInvocationError("ipsec.verify: level must be 'ike' or 'child', got {!r}".format(level))
    if not isinstance(plan, dict) or not isinstance(plan.get("connections"), dict):
        raise SaltInvocationError("ipsec.verify: the plan has no connections mapping")
    if not isinstance(status, dict) or not isinstance(status.get("connections"), dict):
        raise SaltInvocationError("ipsec.verify: the status has no connections mapping")

    if local is not None and not {_canonical(a) for a in local} & {
            _canonical(a) for a in (plan.get("addresses") or {}).values()}:
        # None of this node's own addresses among them: an address read
        # that failed (no ip tool, say), not a node that lost its VIPs.
        local = None
    listening = []
    for address in status.get("addresses") or []:
        if _canonical(address) not in listening:
            listening.append(_canonical(address))
    held = set(listening)
    stale = set() if local is None else held - {_canonical(address) for address in local}
    by_base, ike_index = {}, {}
    for conn in status["connections"].values():
        by_base.setdefault(conn["base"], []).append(conn)
        for record in conn["ike_sas"]:
            ike_index[record["serial"]] = record

    planned_conns = plan["connections"]
    # VIP address -> auto= of this node's client conn toward it. One pillar
    # renders every node's client conns, so our server's clients use it too.
    client_auto = {
        _canonical(conn.get("peer")): (conn.get("keywords") or {}).get("auto", "ignore")
        for conn in planned_conns.values()
        if conn.get("role") == "vip-client"
    }
    networks = plan.get("networks") or {}
    vips, connections = {}, {}
    for name in sorted(planned_conns):
        planned = planned_conns[name]
        entry = _entry(planned)
        role = planned.get("role")
        conns = by_base.get(name, [])
        template = next((conn for conn in conns if conn["instance"] is None), None)
        if role in ("vip-server", "vip-client"):
            vip = _canonical(planned.get("peer"))
            is_held = vip in held and vip not in stale
            vips.setdefault(vip, dict({"network": planned.get("network"), "held": is_held},
                                      **({"stale": True} if vip in stale else {})))
            entry["vip_held"] = is_held
            if vip in stale:
                # This node is the VIP's client now: its client conn should
                # be up (and is not: pluto cannot orient it), so it stays a
                # tunnel that is expected, and the beacon reports it down.
                if role == "vip-client":
                    _peer_conn(entry, planned, template, ike_index, level, listening)
                else:
                    _not_needed(entry, template, None)
                entry["ok"], entry["reason"] = False, STALE_VIP.format(vip)
            elif role == "vip-server" and is_held:
                peers = (networks.get(planned.get("network")) or {}).get("peers") or {}
                _server_conn(entry, planned, template, [c for c in conns if c["instance"]],
                             peers, ike_index, level, client_auto.get(vip, "start"))
            elif role == "vip-server":
                _not_needed(entry, template, "standby: VIP {} is not on this node "
                            "(pluto does not listen on it)".format(vip))
            elif is_held:
                _not_needed(entry, template, "not needed: this node holds VIP {} "
                            "(its server conn serves it)".format(vip))
            else:
                _peer_conn(entry, planned, template, ike_index, level, listening)
        else:
            _peer_conn(entry, planned, template, ike_index, level, listening)
        connections[name] = entry

    unplanned = {}
    for base in sorted(set(by_base) - set(planned_conns)):
        sas = _sas(by_base[base], ike_index)
        unplanned[base] = {
            "instances": sorted(conn["name"] for conn in by_base[base] if conn["instance"]),
            "ike_sa": sas["ike_sa"],
            "child_sa": sas["child_sa"],
        }

    return _summarise({
        "level": level,
        "node": plan.get("node"),
        "version": status.get("version"),
        "connections": connections,
        "unplanned": unplanned,
        "vips": vips,
        "summary": status.get("summary"),
    }, level)


def _summarise(verdict, level):
    """``result``, ``comment``, ``hint``, ``failed`` and ``counts`` of a
    verdict from its ``connections`` (after any level has had its say)."""
    connections = verdict["connections"]
    failed = {name: entry["reason"] for name, entry in connections.items() if not entry["ok"]}
    expect = [entry["expect"] for entry in connections.values()]
    counts = {
        "planned": len(connections),
        "expect_up": expect.count("up"),
        "expect_loaded": expect.count("loaded"),
        "not_needed_here": expect.count("nothing"),
        "failed": len(failed),
        "unplanned": len(verdict["unplanned"]),
    }
    if not failed:
        comment = "all {} tunnels that should be up are up (level: {})".format(counts["expect_up"], level)
        if level == "traffic":
            comment = "all {} tunnels that should be up carry traffic both ways (level: traffic)".format(
                counts["expect_up"])
        if counts["expect_loaded"]:
            comment += ", {} more loaded as planned".format(counts["expect_loaded"])
    else:
        comment = "{} of {} planned conns are not as planned (level: {}): {}".format(
            len(failed), len(connections), level,
            "; ".join("{}: {}".format(name, reason) for name, reason in failed.items()))
    hint = None
    if any("but no established Child SA" in reason for reason in failed.values()):
        hint = NO_CHILD_HINT
        comment += ". " + hint
    verdict.update({"result": not failed, "comment": comment, "hint": hint, "level": level,
                    "counts": counts, "failed": failed})
    return verdict


# ------------------------------------------------------------ level=traffic
#
# An established IKE SA and Child SA on both ends do not prove packets
# flow: after crossed negotiations each end can send on a Child SA whose
# peer half was already replaced, and with failureshunt=drop that is a
# silent black hole the SA levels report as up. The traffic level sends one
# echo request through every tunnel that is up at the Child level and
# looks at the Child SA byte counters pluto reads from the kernel: the
# request must move the outbound counter, the reply the inbound one.

def probe_targets(plan, status):
    """``{(src, dst): (conn, client)}``: one probe per tunnel that should be
    up here and is up at the Child level in ``status`` (``client``: the
    client address of a VIP server conn, else None)."""
    verdict = verify(plan, status, "child")
    targets = {}
    for name, entry in verdict["connections"].items():
        if entry["expect"] != "up":
            continue
        keywords = plan["connections"][name].get("keywords") or {}
        if entry.get("clients") is not None:
            for address, client in entry["clients"].items():
                if client["up"]:
                    targets[(keywords["left"], address)] = (name, address)
        elif entry["up"]:
            targets[(keywords["left"], keywords["right"])] = (name, None)
    return targets


def _matching(status, name, client=None):
    """The status conns of conn ``name`` (of its instances for ``client``
    when it is a template)."""
    for conn in status["connections"].values():
        if conn["base"] != name:
            continue
        if client is None and conn["instance"] is not None:
            continue
        if client is not None and (conn["instance"] is None or _canonical(conn.get("remote")) != client):
            continue
        yield conn


def _counters(status, name, client=None):
    """{serial: (in_bytes, out_bytes)} of the established Child SAs of conn
    ``name`` (of its instances for ``client`` when it is a template)."""
    return {record["serial"]: (record.get("in_bytes"), record.get("out_bytes"))
            for conn in _matching(status, name, client) for record in conn["child_sas"] if record["established"]}


def _newest(status, name, client=None):
    """(newest IKE SA, newest Child SA) pluto names for conn ``name``: the
    pair it uses (a replaced one may linger beside it)."""
    for conn in _matching(status, name, client):
        if conn.get("newest_child_sa"):
            return conn.get("newest_ike_sa"), conn["newest_child_sa"]
    return None, None


def _moved(before, after, index):
    """Did any Child SA's counter grow (or start above 0 on an SA that was
    not there before: a rekey in between)? None: pluto shows no counter."""
    values = [pair[index] for pair in after.values()]
    if not values or all(value is None for value in values):
        return None
    return any(pair[index] is not None and pair[index] > ((before.get(serial) or (0, 0))[index] or 0)
               for serial, pair in after.items())


def _serials(serials):
    """"#3, #7" of SA serials (a list, or the keys of a counters dict)."""
    return ", ".join("#{}".format(serial) for serial in sorted(serials))


def _stale(ike_sas, child_sas, before, after, newest):
    """The SAs of a replaced pair pluto keeps beside the pair it uses
    (``newest``: its newest IKE SA and Child SA), as (IKE SAs, Child SAs);
    None when there is no such pair, or when the extra Child SAs carried
    traffic during the probe round (then both pairs are in use: a
    duplicate, not a leftover)."""
    newest_ike, newest_child = newest
    extra_children = [serial for serial in child_sas if serial != newest_child]
    extra_ikes = [serial for serial in ike_sas if serial != newest_ike]
    if not (extra_children or extra_ikes) or newest_child not in child_sas or newest_ike not in ike_sas:
        return None
    for serial in extra_children:
        single = ({serial: before[serial]} if serial in before else {}), {serial: after[serial]}
        if _moved(*single, 0) or _moved(*single, 1):
            return None
    return extra_ikes, extra_children


def _traffic_problem(peer, ike_sas, child_sas, before, after, reply, timeout, newest=(None, None)):
    """Why a tunnel up at the Child level does not carry traffic both ways,
    or None; what the probe saw; and a note on a replaced pair pluto keeps
    beside the one it uses (it carries nothing: a warning, not a failure)."""
    stale = _stale(ike_sas, child_sas, before, after, newest)
    note = None
    if stale:
        # Judge the pair pluto uses; the leftover is only reported.
        before = {newest[1]: before.get(newest[1], (0, 0))}
        after = {newest[1]: after[newest[1]]}
        note = ("a replaced pair pluto keeps but no longer uses ({}; in use: IKE SA #{}, Child SA #{}); "
                "it carried no traffic. Libreswan 4.x keeps such a pair (an attempt its initiator gave up, "
                "finished here) until its lifetime ends; ipsec whack --deletestate <serial> removes it".format(
                    ", ".join(part for part in ("IKE SA " + _serials(stale[0]) if stale[0] else "",
                                                "Child SA " + _serials(stale[1]) if stale[1] else "") if part),
                    newest[0], newest[1]))
    out_moved = _moved(before, after, 1)
    in_moved = _moved(before, after, 0)
    seen = {"probes_sent": reply["sent"], "answered": reply["answered"],
            "out_moved": out_moved, "in_moved": in_moved}
    if note:
        seen["stale"] = note
    if len(child_sas) > 1 and not stale:
        return seen, ("{} Child SAs for one tunnel ({}): a duplicate pair left by crossed negotiations; "
                      "each end may send on a Child SA the other no longer uses".format(
                          len(child_sas), _serials(child_sas)))
    if len(ike_sas) > 1 and not stale:
        return seen, "{} IKE SAs for one tunnel ({}): a duplicate left by crossed negotiations".format(
            len(ike_sas), _serials(ike_sas))
    if out_moved is None and in_moved is None:
        return seen, "pluto shows no byte counters for its Child SA (no --trafficstatus): cannot prove traffic"
    if in_moved is None or out_moved is None:
        # pluto reads each counter from the kernel's SA of that direction.
        return seen, ("pluto reads no {} byte counter for Child SA {}: the kernel holds no {} ESP state for it "
                      "(deleted or expired), packets {} {} are dropped".format(
                          *(("inbound", _serials(after), "inbound", "from", peer) if in_moved is None else
                            ("outbound", _serials(after), "outbound", "to", peer))))
    if not reply["sent"]:
        return seen, "probe to {} not sent: {}".format(peer, reply["error"] or "no time left")
    if not out_moved:
        return seen, ("sent {} probe(s) to {} but the outbound Child SA's counter did not move: "
                      "the kernel does not send this traffic through the tunnel".format(reply["sent"], peer))
    if not in_moved:
        return seen, ("sent through the outbound Child SA but nothing came in through the inbound one in {:g}s "
                      "(probe {}): packets from {} do not arrive through this tunnel, "
                      "its other half is gone or replaced on one end".format(
                          timeout, "answered?!" if reply["answered"] else "unanswered", peer))
    return seen, None


def traffic(plan, before, after, targets, replies, timeout, local=None):
    """The traffic-level verdict: the Child-level verdict of ``after`` (the
    status read after the probe round), where every probed tunnel must also
    have exactly one Child SA and one IKE SA and counters that moved both
    ways between ``before`` and ``after``. ``local``: as for ``verify``."""
    verdict = verify(plan, after, "child", local)
    no_reply = {"sent": 0, "answered": False, "error": "not probed"}
    stale = {}  # "conn [client ...]": note on a replaced pair pluto keeps
    by_conn = {}
    for pair, (name, client) in targets.items():
        by_conn.setdefault(name, []).append((pair, client))
    for name, probes in sorted(by_conn.items()):
        entry = verdict["connections"][name]
        if not entry["ok"]:
            continue  # went down during the probe: the Child level says why
        problems = []
        for pair, client in probes:
            reply = replies.get(pair) or no_reply
            if client is None:
                seen, problem = _traffic_problem(pair[1], entry.get("ike_sas") or [], entry.get("child_sas") or [],
                                                 _counters(before, name), _counters(after, name), reply, timeout,
                                                 _newest(after, name))
                entry["traffic"] = seen
                label = name
            else:
                report = entry["clients"][client]
                seen, problem = _traffic_problem(client, report["ike_sas"], report["child_sas"],
                                                 _counters(before, name, client), _counters(after, name, client),
                                                 reply, timeout, _newest(after, name, client))
                report["traffic"] = seen
                problem = problem and "client {} ({}): {}".format(client, report["node"], problem)
                label = "{} client {} ({})".format(name, client, report["node"])
            if problem:
                problems.append(problem)
            if seen.get("stale"):
                stale[label] = seen["stale"]
        if problems:
            entry["ok"] = False
            entry["reason"] = "; ".join(problems)
    verdict = _summarise(verdict, "traffic")
    verdict["stale"] = stale
    if stale:
        verdict["comment"] += "; {} tunnel(s) keep a replaced pair pluto no longer uses: {}".format(
            len(stale), "; ".join("{}: {}".format(label, note) for label, note in sorted(stale.items())))
    return verdict


def verify_traffic(plan, read_status, send_probes, timeout=5.0):
    """``level=traffic``: ``read_status()`` (a parsed status with
    ``--trafficstatus`` counters), one probe round ``send_probes(pairs,
    timeout)`` (``ipsec_probe.probe``) through every tunnel up at the Child
    level, ``read_status()`` again; then ``traffic``."""
    before = read_status()
    targets = probe_targets(plan, before)
    replies = send_probes(sorted(targets), timeout) if targets else {}
    return traffic(plan, before, read_status(), targets, replies, timeout)
