"""
Libreswan IPsec tunnels of a cluster, planned from pillar, grains and mine.

The pure logic lives in ``_utils/ipsec_plan.py`` (what this node should
have) and ``_utils/ipsec_render.py`` (how it is written); this module feeds
them the Salt data (pillar, grains, mine) and the facts only the node knows
(Libreswan version, pacemaker presence, algparse's verdict).

Sync before first use: ``salt '*' saltutil.sync_all``.
"""

import hashlib
import json
import logging
import os

import salt.utils.path
from salt.exceptions import CommandExecutionError, SaltInvocationError

log = logging.getLogger(__name__)

__virtualname__ = "ipsec"

# Planning before Libreswan is installed (first highstate render): assume
# the major version of current LTS distributions; the state that writes the
# files plans again once the package is there.
FALLBACK_MAJOR = 4


def __virtual__():
    try:
        import netaddr  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
    except ImportError:
        return (False, "ipsec: the Python package netaddr is missing on this minion "
                       "(Salt's onedir packages: salt-pip install netaddr)")
    return __virtualname__


def _conf(required=True):
    """The ``ipsec`` pillar, handed to the gate (``_utils/ipsec_plan.py``):
    the one place the formula reads pillar (the PSK aside, which the
    secrets renderer takes straight from pillar)."""
    conf = __pillar__.get("ipsec")
    if conf is None and not required:
        return {}
    if conf is None:
        raise SaltInvocationError("ipsec: pillar key is missing: nothing to plan")
    if not isinstance(conf, dict):
        raise SaltInvocationError("ipsec: pillar key must be a mapping")
    return conf


def settings():
    """
    The settings of this node that are not topology, validated by the same
    gate as the plan: ``prefix``, ``lookup``, ``firewall``, ``pacemaker``,
    ``clean``, ``mine``, ``keys`` (mode and version, never a key) and
    ``events`` (beacon and metrics). Works with an otherwise broken
    topology (``ipsec.clean`` uses it).

    CLI Example:

    .. code-block:: bash

        salt '*' ipsec.settings
    """
    conf = _conf(required=False)
    found = __utils__["ipsec_plan.parse_settings"](conf, __grains__.get("os_family"))
    found["keys"] = __utils__["ipsec_keys.parse_keys"](conf)
    found["events"] = _events(conf)
    return found


def _events(conf):
    """``ipsec:beacon`` / ``ipsec:metrics`` through their gate, with the
    verify levels this node's ipsec_verify accepts."""
    return __utils__["ipsec_events.pillar_settings"](
        conf, __utils__["ipsec_events.accepted_levels"](__utils__["ipsec_verify.verify"]))


def lookup():
    """
    Paths, package, service, control socket and agent the formula uses on
    this node: built-in defaults (``_utils/ipsec_plan.py`` ``DEFAULT_LOOKUP``),
    then per-OS-family values, then pillar ``ipsec:lookup``, validated
    (absolute normalised paths, names from a fixed character set). The SLS
    files read it through ``ipsec/map.jinja``.

    CLI Example:

    .. code-block:: bash

        salt '*' ipsec.lookup
    """
    return settings()["lookup"]


def version():
    """
    The Libreswan version as ``{"version": "4.10", "major": 4, "source": ...}``:
    pillar ``ipsec:libreswan_version`` if set (to plan for another release),
    else ``ipsec --version`` of the lookup's ``ipsec_bin``; ``None`` values
    when Libreswan is not installed.

    CLI Example:

    .. code-block:: bash

        salt '*' ipsec.version
    """
    pinned = __utils__["ipsec_plan.parse_libreswan_version"](_conf(required=False))
    if pinned is not None:
        return {"version": pinned[0], "major": pinned[1], "source": "pillar"}
    return __salt__["ipsec_pluto.version"]()


def local_addresses():
    """
    This node's addresses as the kernel has them now (``network.ip_addrs``
    and ``ip_addrs6``), VIPs included; grains are read when the minion
    starts and do not follow a VIP that moves.

    CLI Example:

    .. code-block:: bash

        salt '*' ipsec.local_addresses
    """
    return list(__salt__["network.ip_addrs"]()) + list(__salt__["network.ip_addrs6"]())


def _own_ips():
    return list(__grains__.get("ipv4", [])) + list(__grains__.get("ipv6", []))


def addresses():
    """
    This node's address on each network of pillar ``ipsec:networks``, from
    grains ``ipv4``/``ipv6`` matched by CIDR (VIP addresses excluded).
    Meant as the Salt mine function peers are discovered with.

    CLI Example:

    .. code-block:: bash

        salt '*' ipsec.addresses
    """
    return __utils__["ipsec_plan.node_addresses"](_conf(), _own_ips())


def cluster_node():
    """
    Whether this node is a cluster (pacemaker) node and so gets the VIP
    server conns: pillar ``ipsec:cluster`` (a list of minion ids, a grain
    match, or detection).

    CLI Example:

    .. code-block:: bash

        salt '*' ipsec.cluster_node
    """
    return _cluster_node(_conf(required=False))


def pacemaker_running():
    """
    Whether pacemaker runs on this node: its CIB answers
    (``cibadmin --query --local --scope nodes``; with lookup
    ``pacemaker:cib_file``, that file exists). Images that ship pacemaker
    to every role do not make every node a cluster node.

    CLI Example:

    .. code-block:: bash

        salt '*' ipsec.pacemaker_running
    """
    if "ipsec.pacemaker_running" in __context__:
        return __context__["ipsec.pacemaker_running"]
    cib_file = lookup()["pacemaker"]["cib_file"]
    if cib_file:
        running = os.path.isfile(cib_file)
    else:
        binary = salt.utils.path.which("cibadmin")
        running = bool(binary) and __salt__["cmd.run_all"](
            [binary, "--query", "--local", "--scope", "nodes"], python_shell=False, ignore_retcode=True,
            output_loglevel="quiet", timeout=15)["retcode"] == 0
    __context__["ipsec.pacemaker_running"] = running
    return running


def _cluster_node(conf):
    mode, value = __utils__["ipsec_plan.parse_cluster"](conf)
    if mode == "nodes":
        return __opts__["id"] in value
    if mode == "grain":
        return bool(__salt__["match.grain"](value))
    if mode == "detect":
        return pacemaker_running()
    return False


def _pacemaker_needed(conf):
    """Whether the plan needs to know if pacemaker runs: ``pacemaker:manage``
    is not set (then it follows pacemaker)."""
    return not isinstance((conf.get("pacemaker") or {}).get("manage") if isinstance(conf.get("pacemaker"), dict)
                          else None, bool)


def _mine_data(conf):
    if conf.get("nodes") is not None:
        return None
    mine = __utils__["ipsec_plan.parse_mine"](conf, [])
    return __salt__["mine.get"](mine["target"], mine["function"], tgt_type=mine["tgt_type"])


def _check_algorithms(conf, built):
    """Fail naming the pillar key of the first proposal Libreswan rejects.
    Without algparse, one warning names every proposal left to pluto."""
    unchecked = []
    for key, kind, proposal in __utils__["ipsec_plan.algorithm_sources"](conf):
        verdict = __salt__["ipsec_pluto.algparse"](kind, proposal)
        if verdict is None:
            unchecked.append("ipsec:{} {}={}".format(key, kind, proposal))
        elif verdict:
            raise SaltInvocationError("ipsec:{}: Libreswan rejects {!r}: {}".format(key, proposal, verdict))
    if unchecked:
        built["warnings"].append("algparse not found: not checked before pluto: " + ", ".join(unchecked))


def _fingerprint(conf):
    """What a plan depends on besides the mine, hashed (the PSK is in the
    pillar: only its digest is kept in memory)."""
    data = [conf, __opts__["id"], _own_ips(), __grains__.get("os_family")]
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=repr).encode("utf-8", "surrogatepass")).hexdigest()


def build(check_algorithms=True):
    """The plan as a Python dict, for the formula's states and modules; see
    ``plan``. Built once per run: a state run shares one ``__context__``,
    and the plan is kept there for the same pillar, id, addresses and OS
    family (one ``mine.get`` per run). The wait state's polls reuse it."""
    conf = _conf()
    keys = __utils__["ipsec_keys.parse_keys"](conf)
    key = _fingerprint(conf)
    cached = __context__.get("ipsec.plan")
    if cached is None or cached[0] != key:
        found = version()
        major = found["major"] or FALLBACK_MAJOR
        # Overrides this release would ignore are refused, not rendered.
        __utils__["ipsec_releases.check_release"](conf, major)
        built = __utils__["ipsec_plan.build_plan"](
            conf,
            node_id=__opts__["id"],
            own_ips=_own_ips(),
            major=major,
            cluster_node=_cluster_node(conf),
            pacemaker_running=_pacemaker_needed(conf) and pacemaker_running(),
            mine_data=_mine_data(conf),
            os_family=__grains__.get("os_family"),
            require_psk=keys["mode"] == "shared",
        )
        __utils__["ipsec_keys.adapt_plan"](built, conf)
        # The beacon and metrics settings pass the same gate, at the same time.
        built["events"] = _events(conf)
        log.debug("ipsec: plan built for %s: %d conns", __opts__["id"], len(built["connections"]))
        if found["major"] is None:
            built["warnings"].append("Libreswan not installed: planned for {}.x keywords".format(FALLBACK_MAJOR))
        cached = [key, built, False]
        __context__["ipsec.plan"] = cached
    built = cached[1]
    if check_algorithms and not cached[2]:
        _check_algorithms(conf, built)
        cached[2] = True
    # Once per run: the wait state (ipsec.established) asks at every poll.
    warned = __context__.setdefault("ipsec.warned", set())
    for warning in built["warnings"]:
        if warning not in warned:
            warned.add(warning)
            log.warning("ipsec plan: %s", warning)
    return built


def plan():
    """
    The deterministic, JSON-able plan of this node: every connection (name,
    file, role, peer, keywords), every secrets entry (PSK redacted), every
    file with its mode, the VIPs that need a pacemaker resource, and
    warnings. Bad pillar raises an error naming the pillar key.

    CLI Example:

    .. code-block:: bash

        salt '*' ipsec.plan
        salt '*' ipsec.plan --out=json
    """
    return build()


# --- status and verify -------------------------------------------------------
# The pure parts are _utils/ipsec_status.py (text -> data) and
# _utils/ipsec_verify.py (plan + status -> verdict); these functions only
# run whack and read files.

VERIFY_LEVELS = ("ike", "child", "traffic")
PROBE_TIMEOUT = 5  # s: the traffic level's one probe round


def _bool(value, name):
    if not isinstance(value, bool):
        raise SaltInvocationError("{} must be true or false, got {!r}".format(name, value))
    return value


def status(traffic=False):
    """
    The live state of pluto, parsed from ``ipsec whack --status`` on the
    lookup's ``ctlsocket``: ``summary`` (connections loaded/active/routed,
    IKE SAs and IPsec SAs counters), ``connections`` (per name as pluto
    prints it, template instances as ``name[N]``: endpoints, routing,
    orientation, IKE SAs and Child SAs with serial, established flag, SPIs
    and bytes), ``interfaces``/``addresses`` pluto listens on, and
    ``version`` (output generation "3", "4" or "5").

    traffic
        Also run ``--trafficstatus``: exact byte counts per Child SA (the
        status text rounds them to KB/MB).

    Raises an error naming the socket when pluto is not running.

    CLI Example:

    .. code-block:: bash

        salt '*' ipsec.status
        salt '*' ipsec.status traffic=True --out=json
    """
    _bool(traffic, "traffic")
    text = __salt__["ipsec_pluto.whack"](["--status"])
    traffic_text = __salt__["ipsec_pluto.whack"](["--trafficstatus"]) if traffic else None
    try:
        return __utils__["ipsec_status.parse_status"](text, traffic_text)
    except SaltInvocationError as exc:
        raise CommandExecutionError("ipsec whack --status gave unexpected output: {}".format(exc))


def parse_status(text=None, path=None, traffic=None):
    """
    Parse saved ``ipsec status`` output (Libreswan 3.x, 4.x or 5.x) into the
    same data as ``ipsec.status``, without asking pluto anything.

    text
        The status text (``ipsec whack --status``, ``--showstates``, or
        either followed by ``--trafficstatus`` output).
    path
        Instead of ``text``: a file on the minion holding it.
    traffic
        Optional ``ipsec whack --trafficstatus`` text (exact byte counts).

    CLI Example:

    .. code-block:: bash

        salt '*' ipsec.parse_status path=/tmp/ipsec-status.txt
    """
    if (text is None) == (path is None):
        raise SaltInvocationError("ipsec.parse_status: give exactly one of text or path")
    if path is not None:
        try:
            with open(path, encoding="utf-8", errors="replace") as handle:
                text = handle.read()
        except OSError as exc:
            raise SaltInvocationError("ipsec.parse_status: cannot read {}: {}".format(path, exc.strerror))
    return __utils__["ipsec_status.parse_status"](text, traffic)


def verify(level="child", traffic=True, timeout=PROBE_TIMEOUT):
    """
    Compare this node's plan (``ipsec.plan``) with live pluto
    (``ipsec.status``), per planned connection: loaded, oriented, IKE SA
    established, Child SA established, bytes in/out, whether it is as
    planned (``ok``) and why not (``reason``); plus conns pluto has loaded
    that the plan does not (``unplanned``).

    ``result`` is true only when every tunnel that should be up here is up:
    both ends of every node-to-node tunnel (one initiates, the other
    answers), VIP client conns, and VIP server conns with their clients
    where this node holds the VIP (pluto listens on it and the node has it
    now; a VIP pluto still listens on after it left the node fails both VIP
    conns, see ``ipsec_pacemaker.release_stale_vips``). Otherwise the
    return code is non-zero, so ``salt '*' ipsec.verify`` fails in scripts
    and CI.

    level
        ``child`` (default): IKE SA and Child SA established. ``ike``: an
        established IKE SA is enough (kernels without ESP, where the Child
        SA cannot be installed). ``traffic``: the Child level, then one
        round of ICMP echo probes from this node through each of those
        tunnels (to the peer's tunnel address; from the VIP to each client
        on the VIP holder): each tunnel must have exactly one IKE SA and
        one Child SA, and its Child SA's byte counters must have moved out
        (the request) and in (the reply, or the peer's own traffic). It
        catches a tunnel that is "up" but drops packets; the peers must
        answer ICMP echo through the tunnel.
    traffic
        Read exact byte counts from ``--trafficstatus`` (default true;
        always for ``level=traffic``).
    timeout
        ``level=traffic`` only: seconds the probe round waits for replies
        (default 5; one round for the whole node).

    CLI Example:

    .. code-block:: bash

        salt '*' ipsec.verify
        salt '*' ipsec.verify level=ike --out=yaml
        salt '*' ipsec.verify level=traffic timeout=3
    """
    if level not in VERIFY_LEVELS:
        raise SaltInvocationError("ipsec.verify: level must be one of {}, got {!r}".format(
            ", ".join(VERIFY_LEVELS), level))
    _bool(traffic, "traffic")
    timeout = _seconds(timeout, "timeout", 0.1, 60)
    built = build(check_algorithms=False)
    # The node's addresses are read right after the status they judge: a
    # VIP arriving in between would otherwise read as stale.
    if level == "traffic":
        # The steps of ipsec_verify.verify_traffic, run here: a module
        # function (status) cannot be called back from inside a utils call
        # (Salt's loader has no __utils__ in that context).
        before = status(traffic=True)
        targets = __utils__["ipsec_verify.probe_targets"](built, before)
        replies = __utils__["ipsec_probe.probe"](sorted(targets), timeout) if targets else {}
        after = status(traffic=True)
        verdict = __utils__["ipsec_verify.traffic"](built, before, after, targets, replies, timeout,
                                                    local=local_addresses())
    else:
        live = status(traffic=traffic)
        verdict = __utils__["ipsec_verify.verify"](built, live, level, local=local_addresses())
    if not verdict["result"]:
        __context__["retcode"] = 1
    return verdict


def _seconds(value, name, minimum, maximum):
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = None
    if seconds is None or seconds != seconds or not minimum <= seconds <= maximum:
        raise SaltInvocationError("ipsec.verify: {} must be a number of seconds from {:g} to {:g}, got {!r}".format(
            name, minimum, maximum, value))
    return seconds
