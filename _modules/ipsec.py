"""
Libreswan IPsec tunnels of a cluster, planned from pillar, grains and mine.

The pure logic lives in ``_utils/ipsec_plan.py`` (what this node should
have) and ``_utils/ipsec_render.py`` (how it is written); this module feeds
them the Salt data (pillar, grains, mine) and the facts only the node knows
(Libreswan version, pacemaker presence, algparse's verdict).

Sync before first use: ``salt '*' saltutil.sync_all``.
"""

import copy
import logging
import os
import re

import salt.utils.dictupdate
import salt.utils.path
from salt.exceptions import CommandExecutionError, SaltInvocationError

log = logging.getLogger(__name__)

__virtualname__ = "ipsec"

# Must stay equal to ipsec/defaults.yaml and ipsec/osfamilymap.yaml (a unit
# test compares them): module functions run outside the state tree too.
DEFAULT_LOOKUP = {
    "pkg": {"name": "libreswan", "manage": True},
    "service": {"name": "ipsec", "manage": True},
    "config_file": "/etc/ipsec.conf",
    "secrets_file": "/etc/ipsec.secrets",
    "config_dir": "/etc/ipsec.d",
    "nss_dir": "/var/lib/ipsec/nss",
    "rundir": "/run/pluto",
    "ctlsocket": "/run/pluto/pluto.ctl",
    "ipsec_bin": "/usr/sbin/ipsec",
    "algparse": "/usr/libexec/ipsec/algparse",
    # VIP tunnel resources (_modules/ipsec_pacemaker.py, ipsec/pacemaker.sls):
    # the agent is installed as <ocf_root>/resource.d/<provider>/<agent>;
    # cib_file: a CIB file instead of the live cluster (tests).
    "pacemaker": {
        "ocf_root": "/usr/lib/ocf",
        "provider": "ipsec-formula",
        "agent": "vip-tunnel",
        "cib_file": None,
    },
}
OS_FAMILY_LOOKUP = {
    "RedHat": {"nss_dir": "/etc/ipsec.d"},
    "Suse": {"nss_dir": "/etc/ipsec.d"},
}
# Planning before Libreswan is installed (first highstate render): assume
# the major version of current LTS distributions; the state that writes the
# files plans again once the package is there.
FALLBACK_MAJOR = 4


def __virtual__():
    return __virtualname__


def _conf():
    conf = __pillar__.get("ipsec")
    if conf is None:
        raise SaltInvocationError("ipsec: pillar key is missing: nothing to plan")
    if not isinstance(conf, dict):
        raise SaltInvocationError("ipsec: pillar key must be a mapping")
    return conf


def lookup():
    """
    Paths, package, service and control socket the formula uses on this node:
    built-in defaults, then per-OS-family values, then pillar ``ipsec:lookup``.

    CLI Example:

    .. code-block:: bash

        salt '*' ipsec.lookup
    """
    merged = copy.deepcopy(DEFAULT_LOOKUP)
    salt.utils.dictupdate.update(merged, copy.deepcopy(OS_FAMILY_LOOKUP.get(__grains__.get("os_family"), {})))
    override = (__pillar__.get("ipsec") or {}).get("lookup") or {}
    if not isinstance(override, dict):
        raise SaltInvocationError("ipsec:lookup: must be a mapping")
    salt.utils.dictupdate.update(merged, copy.deepcopy(override))
    return merged


def _parse_version(text):
    match = re.search(r"Libreswan\s+U?(\d+)\.(\d+)", text or "")
    return (int(match.group(1)), int(match.group(2))) if match else None


def version():
    """
    The Libreswan version as ``{"version": "4.10", "major": 4, "source": ...}``:
    pillar ``ipsec:libreswan_version`` if set (to plan for another release),
    else ``ipsec --version``; ``None`` values when Libreswan is not installed.

    CLI Example:

    .. code-block:: bash

        salt '*' ipsec.version
    """
    pinned = (__pillar__.get("ipsec") or {}).get("libreswan_version")
    if pinned is not None:
        parsed = _parse_version("Libreswan {}".format(pinned))
        if not parsed or parsed[0] not in (3, 4, 5):
            raise SaltInvocationError(
                "ipsec:libreswan_version: {!r} is not a Libreswan 3.x, 4.x or 5.x version".format(pinned)
            )
        return {"version": "{}.{}".format(*parsed), "major": parsed[0], "source": "pillar"}
    return _installed_version()


def _installed_version():
    """What ``ipsec --version`` says (cached once known)."""
    if "ipsec.version" in __context__:
        return __context__["ipsec.version"]
    binary = lookup()["ipsec_bin"]
    if not os.path.exists(binary) and not salt.utils.path.which(binary):
        return {"version": None, "major": None, "source": "not installed"}
    result = __salt__["cmd.run_all"]([binary, "--version"], python_shell=False, ignore_retcode=True)
    parsed = _parse_version(result.get("stdout", ""))
    if not parsed:
        return {"version": None, "major": None, "source": "unrecognised: " + result.get("stdout", "")[:80]}
    found = {"version": "{}.{}".format(*parsed), "major": parsed[0], "source": binary}
    # Only a real answer is cached: the package may be installed later in
    # this same run.
    __context__["ipsec.version"] = found
    return found


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


def _cluster_node(conf):
    mode, value = __utils__["ipsec_plan.parse_cluster"](conf)
    if mode == "nodes":
        return __opts__["id"] in value
    if mode == "grain":
        return bool(__salt__["match.grain"](value))
    if mode == "detect":
        # pacemakerd is the daemon: the CLI tools alone do not make a node
        # a cluster member.
        return bool(salt.utils.path.which("pacemakerd")) or os.path.exists("/usr/sbin/pacemakerd")
    return False


def _mine_data(conf):
    if conf.get("nodes") is not None:
        return None
    mine = conf.get("mine") or {}
    return __salt__["mine.get"](
        mine.get("target", "*"),
        mine.get("function", "ipsec.addresses"),
        tgt_type=mine.get("tgt_type", "glob"),
    )


def _algparse(proposal):
    """Ask the installed Libreswan whether it accepts ``proposal``
    (``esp=...``/``ike=...``): "" yes, a message no, None cannot tell."""
    key = "ipsec.algparse:" + proposal
    if key in __context__:
        return __context__[key]
    paths = lookup()
    # The command line depends on the installed release, not on the release
    # the plan is written for (pillar ipsec:libreswan_version).
    if (_installed_version()["major"] or FALLBACK_MAJOR) >= 5:
        cmd = [paths["ipsec_bin"], "algparse", "--ikev2", proposal]
        available = os.path.exists(paths["ipsec_bin"])
    else:
        cmd = [paths["algparse"], "-v2", proposal]
        available = os.path.exists(paths["algparse"])
    if not available:
        return None
    result = __salt__["cmd.run_all"](cmd, python_shell=False, ignore_retcode=True, output_loglevel="quiet")
    verdict = ""
    if result["retcode"] != 0:
        lines = (result.get("stdout", "") + "\n" + result.get("stderr", "")).splitlines()
        errors = [line.split("ERROR:", 1)[1].strip() for line in lines if "ERROR:" in line]
        verdict = errors[0] if errors else "rejected (exit {})".format(result["retcode"])
    __context__[key] = verdict
    return verdict


def _check_algorithms(conf, built):
    """Fail naming the pillar key of the first proposal Libreswan rejects.
    Without algparse, one warning names every proposal left to pluto."""
    unchecked = []
    for key, kind, proposal in __utils__["ipsec_plan.algorithm_sources"](conf):
        verdict = _algparse("{}={}".format(kind, proposal))
        if verdict is None:
            unchecked.append("ipsec:{} {}={}".format(key, kind, proposal))
        elif verdict:
            raise SaltInvocationError("ipsec:{}: Libreswan rejects {!r}: {}".format(key, proposal, verdict))
    if unchecked:
        built["warnings"].append("algparse not found: not checked before pluto: " + ", ".join(unchecked))


def build(check_algorithms=True):
    """The plan as a Python dict (for the formula's states); see ``plan``."""
    conf = _conf()
    keys = __utils__["ipsec_keys.parse_keys"](conf)
    found = version()
    major = found["major"] or FALLBACK_MAJOR
    built = __utils__["ipsec_plan.build_plan"](
        conf,
        node_id=__opts__["id"],
        own_ips=_own_ips(),
        major=major,
        config_dir=lookup()["config_dir"],
        cluster_node=_cluster_node(conf),
        mine_data=_mine_data(conf),
        require_psk=keys["mode"] == "shared",
    )
    __utils__["ipsec_keys.adapt_plan"](built, conf)
    if found["major"] is None:
        built["warnings"].append("Libreswan not installed: planned for {}.x keywords".format(FALLBACK_MAJOR))
    if check_algorithms:
        _check_algorithms(conf, built)
    # Once per run: the wait state (ipsec.established) builds the plan
    # again at every poll.
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

VERIFY_LEVELS = ("ike", "child")


def _whack(*args):
    """stdout of ``ipsec whack --ctlsocket <lookup ctlsocket> ARGS``.

    A unix socket path works across network namespaces: a pluto running in
    one is reachable from outside through its socket.
    """
    paths = lookup()
    binary, socket = paths["ipsec_bin"], paths["ctlsocket"]
    if not os.path.exists(binary) and not salt.utils.path.which(binary):
        raise CommandExecutionError("{} not found: is Libreswan installed?".format(binary))
    cmd = [binary, "whack", "--ctlsocket", socket] + list(args)
    result = __salt__["cmd.run_all"](cmd, python_shell=False, ignore_retcode=True, output_loglevel="trace")
    if result["retcode"] != 0:
        message = " ".join(
            part.strip() for part in (result.get("stderr"), result.get("stdout")) if part and part.strip()
        ) or "exit {}".format(result["retcode"])
        if "not running" in message or "connect()" in message or not os.path.exists(socket):
            raise CommandExecutionError(
                "pluto is not running (no answer on control socket {}): {}".format(socket, message)
            )
        raise CommandExecutionError("ipsec whack {} failed (exit {}): {}".format(
            " ".join(args), result["retcode"], message))
    return result.get("stdout") or ""


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
    text = _whack("--status")
    traffic_text = _whack("--trafficstatus") if traffic else None
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


def verify(level="child", traffic=True):
    """
    Compare this node's plan (``ipsec.plan``) with live pluto
    (``ipsec.status``), per planned connection: loaded, oriented, IKE SA
    established, Child SA established, bytes in/out, whether it is as
    planned (``ok``) and why not (``reason``); plus conns pluto has loaded
    that the plan does not (``unplanned``).

    ``result`` is true only when every tunnel that should be up here is up:
    ``auto=start`` node-to-node and VIP client conns, and VIP server conns
    with their clients where this node holds the VIP (read from the
    addresses pluto listens on). Otherwise the return code is non-zero, so
    ``salt '*' ipsec.verify`` fails in scripts and CI.

    level
        ``child`` (default): IKE SA and Child SA established. ``ike``: an
        established IKE SA is enough (kernels without ESP, where the Child
        SA cannot be installed).
    traffic
        Read exact byte counts from ``--trafficstatus`` (default true).

    CLI Example:

    .. code-block:: bash

        salt '*' ipsec.verify
        salt '*' ipsec.verify level=ike --out=yaml
    """
    if level not in VERIFY_LEVELS:
        raise SaltInvocationError("ipsec.verify: level must be 'ike' or 'child', got {!r}".format(level))
    _bool(traffic, "traffic")
    built = build(check_algorithms=False)
    live = status(traffic=traffic)
    verdict = __utils__["ipsec_verify.verify"](built, live, level)
    if not verdict["result"]:
        __context__["retcode"] = 1
    return verdict
