"""
Pacemaker resources of ipsec-formula's VIP tunnels, managed at the CIB level.

One resource per VIP of the plan (``ipsec.plan``'s ``vips``), of the
formula's agent ``ocf:ipsec-formula:vip-tunnel``, colocated (INFINITY) with
the VIP's own resource and ordered after it on start and on stop (both
non-symmetrical). Everything goes through ``cibadmin`` (and ``crm_diff``),
so it works the same on pcs-based (RHEL) and crmsh-based (SUSE) clusters;
Salt 3008 has no pcs module any more.

The XML logic is pure and lives in ``_utils/ipsec_cib.py``; this module
queries the CIB, decides whether this node is the one that changes it, and
pushes the difference as one ``cibadmin --patch`` (atomic). Two repairs of
this node only, for a first deployment: ``clear_agent_missing``
(``crm_resource --cleanup`` of probes that found no agent here) and
``release_stale_vips`` (``whack --listen`` when pluto still listens on a
VIP that left this node without the agent's stop).

A CIB file instead of the live cluster (tests, offline preparation):
argument ``cib_file``, else lookup ``pacemaker:cib_file``, else the
``CIB_file`` environment variable; the commands then run with
``CIB_file=<path>`` like every pacemaker CLI tool understands.

Sync before first use: ``salt '*' saltutil.sync_all``.
"""

import logging
import os
import shutil
import tempfile

import salt.utils.path
from salt.exceptions import CommandExecutionError, SaltInvocationError

log = logging.getLogger(__name__)

__virtualname__ = "ipsec_pacemaker"

CLI_PACKAGES = "pacemaker-cli-utils (Debian/Ubuntu) or pacemaker-cli (RHEL/SUSE)"


def __virtual__():
    # Always loadable: on nodes without pacemaker the functions say so (and
    # the states do nothing on non-cluster nodes).
    return __virtualname__


def _settings():
    """The validated settings (``ipsec.settings``: the plan's gate)."""
    return __salt__["ipsec.settings"]()


def _cib_file(cib_file=None):
    if cib_file:
        return str(cib_file)
    configured = _settings()["lookup"]["pacemaker"]["cib_file"]
    if configured:
        return str(configured)
    return os.environ.get("CIB_file") or None


def _binary(name):
    path = salt.utils.path.which(name)
    if not path:
        raise CommandExecutionError("{} not found: install {}".format(name, CLI_PACKAGES))
    return path


def _run(cmd, what, cib_file=None, ok=(0,), stdin=None):
    env = {"CIB_file": cib_file} if cib_file else None
    # The CIB may hold other resources' secrets (fence device passwords):
    # its text is never logged.
    result = __salt__["cmd.run_all"](
        cmd, python_shell=False, env=env, stdin=stdin, ignore_retcode=True, output_loglevel="quiet",
    )
    if result["retcode"] not in ok:
        message = (result.get("stderr") or result.get("stdout") or "").strip().splitlines()
        raise CommandExecutionError("{} failed (exit {}): {}".format(
            what, result["retcode"], " / ".join(message[-3:]) or "no output"))
    return result


def _query(cib_file):
    if cib_file and not os.path.isfile(cib_file):
        raise CommandExecutionError("CIB file {} does not exist".format(cib_file))
    text = _run([_binary("cibadmin"), "--query"], "cibadmin --query", cib_file)["stdout"]
    return __utils__["ipsec_cib.parse"](text)


def _push(old_root, new_root, cib_file):
    """Apply the difference old -> new as one patch (one CIB transaction)."""
    serialize = __utils__["ipsec_cib.serialize"]
    workdir = tempfile.mkdtemp(prefix="ipsec-cib-")
    try:
        original = os.path.join(workdir, "original.xml")
        wanted = os.path.join(workdir, "new.xml")
        for path, root in ((original, old_root), (wanted, new_root)):
            with open(path, "w", encoding="utf-8") as handle:
                handle.write(serialize(root))
        # Both documents come from the same parse, so the patch holds only
        # the formula's changes. --no-version: no epoch check, the patch's
        # paths name the objects by id (pcs pushes its changes the same way).
        diff = _run([_binary("crm_diff"), "--original", original, "--new", wanted, "--no-version"],
                    "crm_diff", ok=(0, 1))
        if diff["retcode"] == 0:
            return
        _run([_binary("cibadmin"), "--patch", "--xml-pipe"], "cibadmin --patch", cib_file, stdin=diff["stdout"])
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def options():
    """
    The ``ipsec:pacemaker`` settings (validated, with their defaults), plus
    the agent name (``ocf:<provider>:<agent>`` from lookup ``pacemaker``)
    and the CIB file in use (``None``: the live cluster).

    CLI Example:

    .. code-block:: bash

        salt '*' ipsec_pacemaker.options
    """
    settings = _settings()
    opts = dict(settings["pacemaker"])
    pcmk = settings["lookup"]["pacemaker"]
    opts["agent"] = __utils__["ipsec_cib.agent_name"](pcmk["provider"], pcmk["agent"])
    opts["cib_file"] = _cib_file()
    return opts


def desired():
    """
    The CIB objects this node's plan asks for, per VIP: the tunnel primitive
    (agent, parameters, monitor/start/stop ops), the colocation with the VIP resource and
    the two order constraints. Empty on non-cluster nodes.

    CLI Example:

    .. code-block:: bash

        salt '*' ipsec_pacemaker.desired
    """
    plan = __salt__["ipsec.build"]()
    if not plan["cluster_node"]:
        return {}
    return _desired(plan)


def _desired(plan):
    pcmk = plan["lookup"]["pacemaker"]
    return __utils__["ipsec_cib.desired"](
        plan["vips"], pcmk["provider"], pcmk["agent"],
        extra_params=__utils__["ipsec_cib.agent_params"](plan["lookup"]),
        ops=__utils__["ipsec_cib.operations"](
            plan["pacemaker"]["monitor_interval"], plan["pacemaker"]["start_timeout"],
            plan["pacemaker"]["stop_timeout"]),
    )


def _applier(root, cib_file, opts):
    dc = local = None
    if not opts["apply_from"] and not cib_file:
        dc = __utils__["ipsec_cib.dc_name"](root)
        if dc:
            local = _run([_binary("crm_node"), "-n"], "crm_node -n")["stdout"].strip()
    return __utils__["ipsec_cib.decide_applier"](__opts__["id"], opts["apply_from"], cib_file, dc, local)


def show(cib_file=None):
    """
    The formula's objects in the CIB now (its primitives and every
    constraint naming them), and which node changes the CIB.

    CLI Example:

    .. code-block:: bash

        salt '*' ipsec_pacemaker.show
        salt-call ipsec_pacemaker.show cib_file=/tmp/cib.xml
    """
    cib_file = _cib_file(cib_file)
    opts = options()
    root = _query(cib_file)
    applies, reason = _applier(root, cib_file, opts)
    return {
        "applier": {"this_node": applies, "reason": reason},
        "objects": __utils__["ipsec_cib.owned"](root, opts["resource_prefix"], opts["agent"]),
    }


def reconcile(remove=False, test=False, cib_file=None):
    """
    Make the CIB hold exactly the VIP tunnel resources of the plan: create
    what is missing, correct what differs (agent, parameters, monitor/start/stop ops,
    constraint attributes), remove the formula's resources whose VIP left
    the plan (with every constraint naming them). ``remove=True`` removes
    all of the formula's resources (clean).

    Nothing happens on non-cluster nodes, nor on cluster nodes other than
    the one that applies (pillar ``ipsec:pacemaker:apply_from``, else the
    DC; with a CIB file, this node). ``test=True`` only reports.

    Returns ``{"skipped": reason or None, "applier": reason, "changes":
    {object id: {"old", "new"}}, "errors": [...]}``.

    CLI Example:

    .. code-block:: bash

        salt '*' ipsec_pacemaker.reconcile test=True
        salt-call ipsec_pacemaker.reconcile cib_file=/tmp/cib.xml
    """
    outcome = {"skipped": None, "applier": None, "changes": {}, "errors": []}
    # Removing needs no plan (clean works with an otherwise broken pillar).
    plan = None if remove else __salt__["ipsec.build"]()
    if not (__salt__["ipsec.cluster_node"]() if remove else plan["cluster_node"]):
        outcome["skipped"] = "not a cluster node (ipsec:cluster): no pacemaker resources managed here"
        return outcome
    opts = options()
    wanted = {} if remove else _desired(plan)
    cib_file = _cib_file(cib_file)
    root = _query(cib_file)
    applies, reason = _applier(root, cib_file, opts)
    outcome["applier"] = reason
    if applies is None:
        outcome["errors"].append(reason)
        return outcome
    if not applies:
        outcome["skipped"] = reason
        return outcome

    new, changes, errors = __utils__["ipsec_cib.reconcile"](root, wanted, opts["resource_prefix"], opts["agent"],
                                                            adopt=_settings()["adopt_tripleo"])
    outcome["changes"] = changes
    outcome["errors"] = errors
    if not changes or test:
        return outcome
    _push(root, new, cib_file)
    _, left, _ = __utils__["ipsec_cib.reconcile"](_query(cib_file), wanted, opts["resource_prefix"], opts["agent"])
    if left:
        raise CommandExecutionError("the CIB did not take the change of {}".format(", ".join(sorted(left))))
    log.info("ipsec_pacemaker: changed %s", ", ".join(changes))
    return outcome


def clear_agent_missing(test=False, cib_file=None):
    """
    Clean up this node's records of the formula's resources that failed
    because the agent was not installed here yet (pacemaker's "not
    installed"), so pacemaker probes them again, now with the agent.

    On a first deployment the node that changes the CIB can create the
    tunnel resources before this node's state has installed the agent; the
    probe that runs here then bans the resource from this node until a
    cleanup, and the tunnel could not follow its VIP here. Only this node's
    records are cleaned (``crm_resource --cleanup --node``), and only those
    whose agent was missing; an agent that itself answered "not installed"
    (this node lacks the conn, say) is a real problem and is left alone.
    ``test=True`` only reports.

    Returns ``{"skipped": reason or None, "node": uname, "cleared": [ids]}``.

    CLI Example:

    .. code-block:: bash

        salt '*' ipsec_pacemaker.clear_agent_missing test=True
    """
    outcome = {"skipped": None, "node": None, "cleared": []}
    if not __salt__["ipsec.cluster_node"]():
        outcome["skipped"] = "not a cluster node (ipsec:cluster)"
        return outcome
    cib_file = _cib_file(cib_file)
    if cib_file:
        outcome["skipped"] = "CIB file {}: no cluster to probe again".format(cib_file)
        return outcome
    opts = options()
    root = _query(None)
    node = _run([_binary("crm_node"), "-n"], "crm_node -n")["stdout"].strip()
    outcome["node"] = node
    owned = __utils__["ipsec_cib.owned_resources"](root, opts["resource_prefix"], opts["agent"])
    missing = __utils__["ipsec_cib.agent_missing"](root, node, owned)
    outcome["cleared"] = missing
    if test:
        return outcome
    for resource in missing:
        _run([_binary("crm_resource"), "--cleanup", "--resource", resource, "--node", node],
             "crm_resource --cleanup --resource {} --node {}".format(resource, node))
        log.info("ipsec_pacemaker: cleaned up %s on %s (probed before the agent was installed)", resource, node)
    return outcome


def release_stale_vips(test=False):
    """
    Make pluto let go of the plan's VIPs that left this node without the
    agent's stop running here (the VIP moved while its tunnel resource did
    not run on this node: before the resources existed, or while they were
    banned from it): ``whack --listen``, then this node's client conns
    toward those VIPs are initiated, as the agent's stop does. Otherwise
    pluto keeps the gone VIP as its own address and this node can never be
    a client of the VIP's new holder. ``test=True`` only reports.

    Returns ``{"skipped": reason or None, "released": {vip name: address},
    "initiated": [client conns]}``.

    CLI Example:

    .. code-block:: bash

        salt '*' ipsec_pacemaker.release_stale_vips test=True
    """
    outcome = {"skipped": None, "released": {}, "initiated": []}
    plan = __salt__["ipsec.build"]()
    if not plan["cluster_node"]:
        outcome["skipped"] = "not a cluster node (ipsec:cluster)"
        return outcome
    if not __salt__["ipsec_pluto.running"]():
        outcome["skipped"] = "pluto is not running"
        return outcome
    status = __salt__["ipsec.status"]()
    local = __salt__["ipsec.local_addresses"]()
    stale = __utils__["ipsec_verify.stale_vips"](plan["vips"], status["addresses"], local)
    outcome["released"] = stale
    # Only the client conns pluto holds (pillar may make them auto=ignore:
    # then they are not loaded, and nothing initiates them).
    loaded = {conn["base"] for conn in status["connections"].values()}
    outcome["initiated"] = sorted(plan["vips"][name]["fallback_tunnel"] for name in stale
                                  if plan["vips"][name].get("fallback_tunnel") in loaded)
    if test or not stale:
        return outcome
    __salt__["ipsec_pluto.listen"]()
    if outcome["initiated"]:
        __salt__["ipsec_pluto.initiate"](outcome["initiated"])
    log.info("ipsec_pacemaker: pluto let go of %s (gone from this node)", ", ".join(sorted(stale.values())))
    return outcome
