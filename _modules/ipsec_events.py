"""
Tunnel events, metrics and the reactor's repair, on the minion.

The ``ipsec`` beacon (``_beacons/ipsec.py``) calls ``tick`` once per
interval; ``write_metrics`` writes node_exporter's textfile (the
``ipsec_events.metrics`` state and a schedule call it); ``heal`` is what
the reactor example (``ipsec/files/reactor/tunnel-down.sls``) runs on a
minion whose tunnel went down. The pure logic is ``_utils/ipsec_events.py``;
plan, status and verdict come from the ``ipsec`` module and
``_utils/ipsec_verify.py``, the same as ``ipsec.verify``.
"""

import logging
import os
import tempfile
import time

from salt.exceptions import CommandExecutionError, SaltInvocationError

log = logging.getLogger(__name__)

__virtualname__ = "ipsec_events"

HEAL_KEY = "ipsec_events.last_heal"


def __virtual__():
    if "ipsec.build" not in __salt__:
        return (False, "ipsec_events: the ipsec execution module is not loaded (see its error; "
                       "run saltutil.sync_all)")
    return __virtualname__


def _levels():
    """The verify levels the installed ipsec_verify accepts."""
    return __utils__["ipsec_events.accepted_levels"](__utils__["ipsec_verify.verify"])


def settings():
    """
    The ``ipsec:beacon`` and ``ipsec:metrics`` pillar, validated, with
    defaults; ``beacon_config`` is the beacon configuration the
    ``ipsec.beacon`` state gives ``beacons.present``. Bad pillar raises an
    error naming the key.

    CLI Example:

    .. code-block:: bash

        salt '*' ipsec_events.settings
    """
    found = __salt__["ipsec.settings"]()["events"]
    found["beacon_config"] = __utils__["ipsec_events.beacon_config"](found)
    return found


def check_beacon_config(config):
    """
    Validate a configuration of the ``ipsec`` beacon: ``(True, "valid")`` or
    ``(False, reason)`` (the beacon's ``validate``).

    CLI Example:

    .. code-block:: bash

        salt '*' ipsec_events.check_beacon_config '[{"debounce": 2}, {"level": "ike"}]'
    """
    return __utils__["ipsec_events.check_beacon_config"](config, _levels())


def _plan(memory, ttl, now):
    """The plan, rebuilt at most every ``ttl`` seconds (it asks the mine)."""
    if memory.get("plan") is None or now - memory.get("plan_time", 0) >= ttl:
        # ipsec.build keeps its plan for the process; the minion's process
        # lives on, so drop it to read pillar and mine again.
        __context__.pop("ipsec.plan", None)
        memory["plan"] = __salt__["ipsec.build"](check_algorithms=False)
        memory["plan_time"] = now
    return memory["plan"]


def observe(level="child", traffic=False, plan=None):
    """
    One look at this node's tunnels: ``{"pluto": True, "rows": {...},
    "summary": {...}}`` (``rows``: one per tunnel that should be up here,
    see ``_utils/ipsec_events.tunnels``), or ``{"pluto": False, "error":
    ...}`` when pluto does not answer.

    level
        ``ike``, ``child`` (default) or ``traffic`` (if ipsec_verify has it).
    traffic
        Also read ``--trafficstatus`` (exact bytes, Child SA install times).

    CLI Example:

    .. code-block:: bash

        salt '*' ipsec_events.observe level=ike
    """
    if level not in _levels():
        raise SaltInvocationError("ipsec_events.observe: level must be one of {}, got {!r}".format(
            ", ".join(_levels()), level))
    built = plan if plan is not None else __salt__["ipsec.build"](check_algorithms=False)
    try:
        live = __salt__["ipsec.status"](traffic=bool(traffic or level == "traffic"))
    except CommandExecutionError as exc:
        return {"pluto": False, "error": str(exc), "node": built.get("node")}
    # The node's live addresses, read right after the status they judge
    # (as ipsec.verify does): a VIP pluto still listens on after it left
    # this node is a client tunnel down, not a VIP held. Only where pluto
    # listens on a planned VIP (the read costs a few subprocesses).
    local = None
    if __utils__["ipsec_verify.stale_vips"](built.get("vips") or {}, live.get("addresses") or [], []):
        local = __salt__["ipsec.local_addresses"]()
    verdict = __utils__["ipsec_verify.verify"](built, live, level, local=local)
    return {
        "pluto": True,
        "node": built.get("node"),
        "level": level,
        "rows": __utils__["ipsec_events.tunnels"](verdict, built, live),
        "summary": live.get("summary"),
    }


def tick(config=None, memory=None):
    """
    One interval of the ``ipsec`` beacon: observe, debounce against
    ``memory`` (kept by the beacon between intervals, updated in place),
    write the metrics textfile when ``textfile`` is configured, and return
    the events to fire. With a fresh memory, what a first interval reports.

    CLI Example:

    .. code-block:: bash

        salt '*' ipsec_events.tick '[{"level": "ike"}]'
    """
    options = __utils__["ipsec_events.beacon_options"](config or [])
    memory = {} if memory is None else memory
    now = time.time()
    started = time.monotonic()
    plan = _plan(memory, options["plan_ttl"], now)
    seen = observe(options["level"], traffic=bool(options["textfile"]), plan=plan)
    rows = seen["rows"] if seen["pluto"] else None
    events = __utils__["ipsec_events.step"](
        memory, rows, now, options["debounce"], options["level"], remind=options["remind"],
        max_events=options["max_events"], pluto_error=seen.get("error"), node=plan.get("node"))
    if options["textfile"]:
        try:
            write_metrics(path=options["textfile"], level=options["level"], observation=seen)
        except (OSError, CommandExecutionError) as exc:
            log.error("ipsec beacon: cannot write %s: %s", options["textfile"], exc)
    memory["last_cost"] = time.monotonic() - started
    return events


def _write_atomic(path, text):
    """Whole file or nothing, readable by node_exporter: a temp file in the
    same directory renamed over the target (node_exporter ignores names not
    ending in .prom, so it never reads the temp file)."""
    directory = os.path.dirname(path)
    os.makedirs(directory, mode=0o755, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".ipsec-metrics-", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def metrics_path():
    """The textfile path from pillar ``ipsec:metrics`` (validated)."""
    return settings()["metrics"]["path"]


def write_metrics(path=None, level="child", observation=None, test=False):
    """
    Write this node's tunnel metrics in the Prometheus text format to
    node_exporter's textfile directory, atomically; only when the text
    changed. Returns ``{"path", "changed", "tunnels", "up", "pluto"}``.

    path
        Default: pillar ``ipsec:metrics`` (``directory``/``file``,
        ``/var/lib/prometheus/node-exporter/ipsec.prom``).
    level
        The verify level ``ipsec_tunnel_up`` is judged at.
    observation
        An ``observe`` result to write (the beacon passes its own).
    test
        Only say whether the file would change.

    CLI Example:

    .. code-block:: bash

        salt '*' ipsec_events.write_metrics
        salt '*' ipsec_events.write_metrics level=ike test=True
    """
    path = path or metrics_path()
    seen = observation or observe(level, traffic=True)
    text = __utils__["ipsec_events.metrics_text"](
        seen.get("rows"), seen.get("summary"), seen.get("node"), seen.get("level", level), pluto_up=seen["pluto"])
    try:
        with open(path, encoding="utf-8") as handle:
            old = handle.read()
    except FileNotFoundError:
        old = None
    changed = old != text
    if changed and not test:
        _write_atomic(path, text)
    rows = seen.get("rows") or {}
    return {"path": path, "changed": changed, "pluto": seen["pluto"], "tunnels": len(rows),
            "up": sum(1 for row in rows.values() if row["up"]), "text": text}


def heal(conn=None, min_interval=300, level="child", test=False):
    """
    What the reactor runs on a minion that reported ``tunnel down``: verify,
    and if a tunnel that should be up is not, re-apply the ``ipsec`` state;
    at most once every ``min_interval`` seconds on this minion (the guard
    against loops: a tunnel the re-apply cannot fix fires ``tunnel down``
    again, and the reactor calls here again). Fires ``ipsec/heal/<outcome>``
    on the master's bus (``applied``, ``not-needed``, ``rate-limited``,
    ``failed``) and returns the same data.

    conn
        The conn the event named (recorded in the outcome).
    min_interval
        Seconds between two re-applies on this minion.
    level
        The verify level (the beacon's).

    CLI Example:

    .. code-block:: bash

        salt compute-0 ipsec_events.heal conn=overcloud-internal_api-198.51.100.20-198.51.100.10
    """
    if isinstance(min_interval, bool) or not isinstance(min_interval, (int, float)) or min_interval < 0:
        raise SaltInvocationError("ipsec_events.heal: min_interval must be seconds >= 0, got {!r}".format(
            min_interval))
    now = time.time()
    outcome = {"conn": conn, "node": __opts__["id"], "level": level, "time": now}
    last = __salt__["data.get"](HEAL_KEY)
    if last is not None and now - float(last) < min_interval:
        outcome.update(outcome="rate-limited", last=last, retry_after=round(min_interval - (now - float(last)), 1))
        return _fire_outcome(outcome, test)
    verdict = __salt__["ipsec.verify"](level=level)
    # ipsec.verify sets a non-zero retcode for a failed verdict; heal's own
    # result says how the repair went.
    __context__.pop("retcode", None)
    if verdict["result"]:
        outcome.update(outcome="not-needed", comment=verdict["comment"])
        return _fire_outcome(outcome, test)
    outcome["failed_before"] = sorted(verdict["failed"])
    if test:
        outcome.update(outcome="would-apply")
        return outcome
    __salt__["data.update"](HEAL_KEY, now)
    applied = __salt__["state.apply"]("ipsec")
    results = applied.values() if isinstance(applied, dict) else []
    ok = isinstance(applied, dict) and all(isinstance(r, dict) and r.get("result") is not False for r in results)
    changed = sorted(r.get("__id__", "") for r in results if isinstance(r, dict) and r.get("changes"))
    outcome.update(outcome="applied" if ok else "failed", changed=changed)
    if not ok:
        outcome["errors"] = applied if not isinstance(applied, dict) else [
            r.get("comment") for r in results if isinstance(r, dict) and r.get("result") is False][:5]
    return _fire_outcome(outcome, test)


def _fire_outcome(outcome, test):
    if not test:
        __salt__["event.send"]("ipsec/heal/" + outcome["outcome"], outcome)
    return outcome
