"""
Tunnel events and metrics, pure logic: no Salt dunders, no I/O.

- ``pillar_settings(conf)``: the ``ipsec:beacon`` and ``ipsec:metrics``
  pillar, validated (errors name the pillar key) with defaults filled in.
- ``check_beacon_config(config, levels)``: the beacon's own configuration
  (minion config ``beacons: ipsec: [...]``), (ok, message).
- ``tunnels(verdict, plan, status)``: one row per tunnel that should be up
  here, from ``ipsec_verify.verify``: a node-to-node or VIP client conn is
  one tunnel, a VIP server conn on the VIP holder is one tunnel per client.
- ``step(memory, rows, now, ...)``: the debounce. A tunnel's state is
  reported only once it has held for ``debounce`` consecutive intervals;
  returns the events to fire.
- ``metrics_text(...)``: the Prometheus text exposition of the rows.
"""

import re

from salt.exceptions import SaltInvocationError

TEXTFILE_DIR = "/var/lib/prometheus/node-exporter"
BEACON_DEFAULTS = {
    "enabled": False,
    "interval": 10,
    "debounce": 3,
    "level": "child",
    # Seconds a built plan is reused: building it asks the mine (the
    # master) for peers; status is read at every interval.
    "plan_ttl": 300,
    # Seconds between repeats of "tunnel down" while it stays down (0: never);
    # each repeat carries the grown down_for (a reactor threshold).
    "remind": 0,
    # Tunnel events per interval; beyond it one summary event counts the rest.
    "max_events": 100,
}
METRICS_DEFAULTS = {
    "enabled": False,
    "directory": TEXTFILE_DIR,
    "file": "ipsec.prom",
    # Refresh by a Salt schedule every so many seconds (0: only when the
    # state runs or the beacon writes it).
    "schedule": 60,
}
# Levels of ipsec_verify this module knows; which of them the installed
# verify accepts is asked at validation (another helper adds "traffic").
KNOWN_LEVELS = ("ike", "child", "traffic")
# Keys Salt itself reads from any beacon's configuration.
SALT_BEACON_KEYS = ("enabled", "interval", "beacon_module", "disable_during_state_run", "run_once",
                    "_beacon_name")
BEACON_KEYS = ("debounce", "level", "plan_ttl", "remind", "max_events", "textfile")
PLUTO_KEY = "pluto"


def accepted_levels(verify):
    """The levels of KNOWN_LEVELS the given ``ipsec_verify.verify`` accepts
    (asked with an empty plan and status: nothing to compare, no I/O)."""
    accepted = []
    for level in KNOWN_LEVELS:
        try:
            verify({"connections": {}}, {"connections": {}}, level)
            accepted.append(level)
        except SaltInvocationError:
            pass
    return tuple(accepted)


def fail(key, problem):
    """The plan's error style (ipsec_plan.fail), naming the pillar key."""
    raise SaltInvocationError("ipsec:{}: {}".format(key, problem))


def _int(value, key, low, high):
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        fail(key, "must be a whole number from {} to {}, got {!r}".format(low, high, value))
    return value


def _flag(value, key):
    if not isinstance(value, bool):
        fail(key, "must be true or false, got {!r}".format(value))
    return value


def _section(conf, name, defaults):
    value = conf.get(name)
    if value is None:
        return dict(defaults)
    if not isinstance(value, dict):
        fail(name, "must be a mapping, got {}".format(type(value).__name__))
    unknown = sorted(set(map(str, value)) - set(defaults))
    if unknown:
        fail("{}:{}".format(name, unknown[0]), "unknown key (known: {})".format(", ".join(sorted(defaults))))
    merged = dict(defaults)
    merged.update(value)
    return merged


PATH_RE = re.compile(r"(?:/[A-Za-z0-9_+.-]+)+")  # the plan's gate takes the same paths


def _path(value, key):
    if not isinstance(value, str) or not PATH_RE.fullmatch(value) or any(
            part in (".", "..") for part in value.split("/")):
        fail(key, "must be an absolute normalised path of letters, digits and . _ + -, got {!r}".format(value))
    return value


def pillar_settings(conf, levels=KNOWN_LEVELS):
    """``{"beacon": {...}, "metrics": {...}}`` from the ``ipsec`` pillar,
    every value checked (SaltInvocationError naming ``ipsec:beacon:<key>``
    or ``ipsec:metrics:<key>``), defaults filled in."""
    conf = conf or {}
    beacon = _section(conf, "beacon", BEACON_DEFAULTS)
    _flag(beacon["enabled"], "beacon:enabled")
    _int(beacon["interval"], "beacon:interval", 1, 86400)
    _int(beacon["debounce"], "beacon:debounce", 1, 1000)
    _int(beacon["plan_ttl"], "beacon:plan_ttl", 0, 86400)
    _int(beacon["remind"], "beacon:remind", 0, 86400 * 7)
    _int(beacon["max_events"], "beacon:max_events", 1, 100000)
    if beacon["level"] not in levels:
        fail("beacon:level", "must be one of {}, got {!r}".format(", ".join(levels), beacon["level"]))
    metrics = _section(conf, "metrics", METRICS_DEFAULTS)
    _flag(metrics["enabled"], "metrics:enabled")
    metrics["directory"] = _path(metrics["directory"], "metrics:directory")
    name = metrics["file"]
    # node_exporter's textfile collector reads only *.prom files.
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,120}\.prom", name):
        fail("metrics:file", "must be a file name ending in .prom, got {!r}".format(name))
    _int(metrics["schedule"], "metrics:schedule", 0, 86400)
    metrics["path"] = metrics["directory"] + "/" + name
    return {"beacon": beacon, "metrics": metrics}


def beacon_config(settings):
    """The beacon's configuration (the list of one-key dicts Salt's
    ``beacons`` take) from ``pillar_settings(...)["beacon"]`` and
    ``["metrics"]``: the beacon also refreshes the metrics file when metrics
    are on."""
    beacon, metrics = settings["beacon"], settings["metrics"]
    items = [{key: beacon[key]} for key in ("interval", "debounce", "level", "plan_ttl", "remind", "max_events")]
    if metrics["enabled"]:
        items.append({"textfile": metrics["path"]})
    return items


def check_beacon_config(config, levels=KNOWN_LEVELS):
    """Validate the beacon's own configuration: (True, "valid") or (False, why)."""
    if isinstance(config, list):
        merged = {}
        for item in config:
            if not isinstance(item, dict):
                return False, "ipsec beacon: configuration must be a list of one-key mappings, got {!r}".format(item)
            merged.update(item)
        config = merged
    if not isinstance(config, dict):
        return False, "ipsec beacon: configuration must be a list of mappings"
    unknown = sorted(set(map(str, config)) - set(SALT_BEACON_KEYS) - set(BEACON_KEYS))
    if unknown:
        return False, "ipsec beacon: unknown key {!r} (known: {})".format(unknown[0], ", ".join(BEACON_KEYS))
    try:
        settings = dict(BEACON_DEFAULTS, enabled=True)
        settings.update({k: v for k, v in config.items() if k in BEACON_DEFAULTS and k != "enabled"})
        pillar_settings({"beacon": settings}, levels)
        if config.get("textfile") is not None:
            path = _path(config["textfile"], "beacon:textfile")
            if not path.endswith(".prom"):
                fail("beacon:textfile", "must end in .prom (node_exporter reads only those), got {!r}".format(path))
    except SaltInvocationError as exc:
        return False, "ipsec beacon: " + str(exc).replace("ipsec:beacon:", "", 1)
    return True, "valid"


def beacon_options(config):
    """The beacon's configuration (list or mapping) merged over the defaults."""
    if isinstance(config, list):
        merged = {}
        for item in config:
            merged.update(item)
        config = merged
    options = dict(BEACON_DEFAULTS)
    options.update({k: v for k, v in config.items() if k in BEACON_KEYS})
    options.setdefault("textfile", None)
    return options


# --- tunnels -------------------------------------------------------------------


def _add_times(status):
    """Child SA serial -> install time (Unix seconds) from ``--trafficstatus``."""
    return {entry["serial"]: entry["add_time"] for entry in (status or {}).get("traffic") or []
            if entry.get("add_time")}


def _started(serials, add_times):
    times = [add_times[serial] for serial in serials or () if serial in add_times]
    return max(times) if times else None


def tunnels(verdict, plan, status=None):
    """{key: row} for every tunnel that should be up on this node.

    A row: ``conn``, ``network``, ``role``, ``peer`` (minion id where the
    plan knows it, else the VIP address), ``peer_address``, ``up`` (at the
    verdict's level), ``ike_sa``, ``child_sa``, ``in_bytes``/``out_bytes``
    (None when pluto shows none), ``child_sa_started`` (Unix time the newest
    Child SA was installed, from ``--trafficstatus``; None without it) and
    ``reason`` (None when up). The key is the conn name, and for a VIP server
    conn ``<conn>/<client address>``.
    """
    planned = plan.get("connections") or {}
    networks = plan.get("networks") or {}
    add_times = _add_times(status)
    rows = {}
    for name, entry in (verdict.get("connections") or {}).items():
        if entry.get("expect") != "up":
            continue
        conn = planned.get(name) or {}
        network = conn.get("network") or entry.get("network")
        if entry.get("role") == "vip-server" and "clients" in entry:
            for address, client in sorted(entry["clients"].items()):
                up = bool(client["up"])
                rows["{}/{}".format(name, address)] = {
                    "conn": name, "network": network, "role": "vip-server",
                    "peer": client.get("node") or address, "peer_address": address, "up": up,
                    "ike_sa": bool(client["ike_sa"]), "child_sa": bool(client["child_sa"]),
                    "in_bytes": client.get("in_bytes"), "out_bytes": client.get("out_bytes"),
                    "child_sa_started": None,
                    "reason": None if up else "client {} ({}) not up: {}".format(
                        address, client.get("node"), entry.get("reason") or "no SA"),
                }
            continue
        peer = conn.get("peer") or entry.get("peer")
        address = (conn.get("keywords") or {}).get("right") or peer
        if conn.get("role") == "node-to-node":
            address = (networks.get(network) or {}).get("peers", {}).get(peer, address)
        rows[name] = {
            "conn": name, "network": network, "role": entry.get("role"),
            "peer": peer, "peer_address": address, "up": bool(entry["ok"] and entry["up"]),
            "ike_sa": bool(entry["ike_sa"]), "child_sa": bool(entry["child_sa"]),
            "in_bytes": entry.get("in_bytes"), "out_bytes": entry.get("out_bytes"),
            "child_sa_started": _started(entry.get("child_sas"), add_times),
            "reason": entry.get("reason"),
        }
    return rows


# --- debounce ------------------------------------------------------------------


def _observe(record, state, now, debounce):
    """Feed one observation; True when ``state`` just became the reported one."""
    if state == record["state"]:
        record["candidate"], record["count"], record["candidate_since"] = None, 0, None
        return False
    if record["candidate"] != state:
        record["candidate"], record["count"], record["candidate_since"] = state, 0, now
    record["count"] += 1
    if record["count"] < debounce:
        return False
    record["state"], record["since"] = state, record["candidate_since"]
    record["candidate"], record["count"], record["candidate_since"] = None, 0, None
    return True


def _record(now):
    # Unknown tunnels are assumed up: what the plan expects. A tunnel that is
    # down when the beacon starts is reported once it has held for debounce
    # intervals; a steady mesh reports nothing.
    return {"state": "up", "since": now, "candidate": None, "count": 0, "candidate_since": None,
            "reminded": None}


# What a ``tunnel gone`` event repeats of the tunnel's last ``tunnel down``.
GONE_FIELDS = ("conn", "network", "role", "peer", "peer_address")


def step(memory, rows, now, debounce, level, remind=0, max_events=100, pluto_error=None, node=None):
    """One beacon interval: compare ``rows`` (``tunnels(...)``, or None when
    pluto did not answer, with ``pluto_error`` saying why) with what was
    last reported in ``memory`` (a dict kept between intervals, updated in
    place). Returns the events (dicts with ``tag``) to fire.

    - ``tunnel down`` / ``tunnel up`` when a tunnel's state has held for
      ``debounce`` consecutive intervals; ``down_for`` is how long it has
      been down (seconds, since the first interval it was seen down);
    - with ``remind`` > 0, ``tunnel down`` again (``repeat: true``) every
      ``remind`` seconds while it stays down;
    - ``tunnel gone`` when a tunnel last reported down is no longer one
      that should be up here (the plan changed, the VIP came back to this
      node): nothing else would ever close its ``tunnel down``;
    - ``pluto down`` / ``pluto up`` (tags ``pluto/down``, ``pluto/up``) when
      pluto stops answering / answers again, debounced the same way. While
      pluto does not answer, the tunnels' states are kept as last reported
      (one summary event, not one per tunnel);
    - beyond ``max_events`` tunnel events in one interval, one
      ``tunnels changed`` event (tag ``tunnel/summary``) counts the rest.
    """
    records = memory.setdefault("tunnels", {})
    pluto = memory.setdefault(PLUTO_KEY, _record(now))
    events = []
    answered = rows is not None
    if _observe(pluto, "up" if answered else "down", now, debounce):
        events.append({
            "tag": "pluto/" + pluto["state"], "event": "pluto " + pluto["state"], "node": node,
            "since": pluto["since"], "tunnels": len(records),
            "reason": None if answered else pluto_error,
        })
    if not answered:
        memory["last_error"] = pluto_error
        return events
    tunnel_events = []
    for key in sorted(key for key in records if key not in rows):
        # No longer a tunnel that should be up here (the plan changed, a
        # VIP came back): forgotten. One reported down is closed with
        # ``tunnel gone``, so an alert raised on its ``tunnel down`` clears.
        record = records.pop(key)
        if record["state"] == "down" and record.get("row"):
            tunnel_events.append(dict(
                record["row"], tag="tunnel/gone", event="tunnel gone", node=node, level=level,
                since=record["since"], down_for=round(now - record["since"], 3),
                reason="no longer a tunnel that should be up on this node"))
    for key in sorted(rows):
        row = rows[key]
        record = records.get(key)
        if record is None:
            record = records[key] = _record(now)
        state = "up" if row["up"] else "down"
        changed = _observe(record, state, now, debounce)
        repeat = False
        if not changed and remind and record["state"] == "down" and state == "down" \
                and now - (record["reminded"] or record["since"]) >= remind:
            changed = repeat = True
        if not changed:
            continue
        event = {
            "tag": "tunnel/" + record["state"], "event": "tunnel " + record["state"], "node": node,
            "conn": row["conn"], "network": row["network"], "role": row["role"], "peer": row["peer"],
            "peer_address": row["peer_address"], "level": level, "since": record["since"],
            "reason": row["reason"] if record["state"] == "down" else None,
        }
        if record["state"] == "down":
            record["reminded"] = now
            record["row"] = {field: event[field] for field in GONE_FIELDS}
            event["down_for"] = round(now - record["since"], 3)
            event["repeat"] = repeat
        else:
            record["reminded"], record["row"] = None, None
        tunnel_events.append(event)
    if len(tunnel_events) > max_events:
        rest = tunnel_events[max_events:]
        tunnel_events = tunnel_events[:max_events] + [{
            "tag": "tunnel/summary", "event": "tunnels changed", "node": node, "level": level,
            "omitted": len(rest),
            "omitted_down": sum(1 for e in rest if e["event"] == "tunnel down"),
            "omitted_up": sum(1 for e in rest if e["event"] == "tunnel up"),
            "down_total": sum(1 for r in records.values() if r["state"] == "down"),
        }]
    return events + tunnel_events


# --- metrics -------------------------------------------------------------------

TUNNEL_GAUGES = (
    ("ipsec_tunnel_up", "gauge", "1 when the tunnel is established at the checked level (ipsec.verify)", "up"),
    ("ipsec_tunnel_ike_sa_established", "gauge", "1 when the tunnel has an established IKE SA", "ike_sa"),
    ("ipsec_tunnel_child_sa_established", "gauge", "1 when the tunnel has an established Child SA", "child_sa"),
    ("ipsec_tunnel_esp_in_bytes_total", "counter",
     "ESP bytes received on the tunnel's Child SAs (restarts at each rekey)", "in_bytes"),
    ("ipsec_tunnel_esp_out_bytes_total", "counter",
     "ESP bytes sent on the tunnel's Child SAs (restarts at each rekey)", "out_bytes"),
    ("ipsec_tunnel_child_sa_start_time_seconds", "gauge",
     "Unix time the newest Child SA was installed (its age: time() - this)", "child_sa_started"),
)
NODE_GAUGES = (
    ("ipsec_pluto_up", "gauge", "1 when pluto answers on its control socket"),
    ("ipsec_tunnels_expected", "gauge", "Tunnels that should be up on this node"),
    ("ipsec_tunnels_up", "gauge", "Tunnels up at the checked level"),
    ("ipsec_connections_loaded", "gauge", "Connections pluto has loaded"),
    ("ipsec_ike_sas", "gauge", "IKE SAs pluto holds"),
    ("ipsec_child_sas", "gauge", "IPsec (Child) SAs pluto holds"),
)


def _label(value):
    text = "" if value is None else str(value)
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(pairs):
    return "{" + ",".join('{}="{}"'.format(name, _label(value)) for name, value in pairs) + "}"


def _number(value):
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def metrics_text(rows, summary, node, level, pluto_up=True):
    """The Prometheus text exposition (format 0.0.4) of one node: per tunnel
    (labels ``conn``, ``network``, ``peer``, ``peer_address``) and per node
    (labels ``node``, ``level``). Sorted, so an unchanged node gives a
    byte-identical text."""
    rows = rows or {}
    out = []
    for name, kind, help_text, field in TUNNEL_GAUGES:
        samples = []
        for key in sorted(rows):
            row = rows[key]
            value = row.get(field)
            if value is None:
                continue
            labels = _labels((("conn", row["conn"]), ("network", row["network"]), ("peer", row["peer"]),
                              ("peer_address", row["peer_address"]), ("level", level)))
            samples.append("{}{} {}".format(name, labels, _number(value)))
        if samples:
            out += ["# HELP {} {}".format(name, help_text), "# TYPE {} {}".format(name, kind)] + samples
    summary = summary or {}
    values = {
        "ipsec_pluto_up": pluto_up,
        "ipsec_tunnels_expected": len(rows),
        "ipsec_tunnels_up": sum(1 for row in rows.values() if row["up"]),
        "ipsec_connections_loaded": (summary.get("connections") or {}).get("loaded"),
        "ipsec_ike_sas": (summary.get("ike_sas") or {}).get("total"),
        "ipsec_child_sas": (summary.get("ipsec_sas") or {}).get("total"),
    }
    node_labels = _labels((("node", node), ("level", level)))
    for name, kind, help_text in NODE_GAUGES:
        value = values[name]
        if value is None or (not pluto_up and name != "ipsec_pluto_up"):
            continue
        out += ["# HELP {} {}".format(name, help_text), "# TYPE {} {}".format(name, kind),
                "{}{} {}".format(name, node_labels, _number(value))]
    return "\n".join(out) + "\n"
