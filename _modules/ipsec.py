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
from salt.exceptions import SaltInvocationError

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
    """Fail naming the pillar key of the first proposal Libreswan rejects."""
    for key, kind, proposal in __utils__["ipsec_plan.algorithm_sources"](conf):
        verdict = _algparse("{}={}".format(kind, proposal))
        if verdict is None:
            built["warnings"].append("algparse not found: {} {!r} not checked before pluto".format(kind, proposal))
            return
        if verdict:
            raise SaltInvocationError("ipsec:{}: Libreswan rejects {!r}: {}".format(key, proposal, verdict))


def build(check_algorithms=True):
    """The plan as a Python dict (for the formula's states); see ``plan``."""
    conf = _conf()
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
    )
    if found["major"] is None:
        built["warnings"].append("Libreswan not installed: planned for {}.x keywords".format(FALLBACK_MAJOR))
    if check_algorithms:
        _check_algorithms(conf, built)
    for warning in built["warnings"]:
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
