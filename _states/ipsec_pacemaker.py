"""
States of ipsec-formula for pacemaker: the VIP tunnel resources in the CIB.

``ipsec_pacemaker.vip_resources_managed`` makes the CIB hold, for every VIP
of the plan, the tunnel resource (agent ``ocf:ipsec-formula:vip-tunnel``),
its colocation with the VIP resource and its two order constraints, and
removes the formula's resources whose VIP left the plan.
``ipsec_pacemaker.absent`` removes all of them (clean).

Both do nothing on non-cluster nodes and on cluster nodes that are not the
applier (pillar ``ipsec:pacemaker:apply_from``, else the DC), so minions
applying at the same time do not race on the CIB.

Two repairs run on every cluster node, each about this node only:
``ipsec_pacemaker.agent_missing_cleared`` (this node's "not installed"
records of the formula's resources, from probes that ran before its agent
was there) and ``ipsec_pacemaker.stale_vips_released`` (pluto still
listening on a VIP that left this node without the agent's stop).
"""

from salt.exceptions import CommandExecutionError, SaltInvocationError

__virtualname__ = "ipsec_pacemaker"


def __virtual__():
    if "ipsec_pacemaker.reconcile" in __salt__ and "ipsec.plan" in __salt__:
        return __virtualname__
    return (False, "the ipsec and ipsec_pacemaker execution modules are not loaded (run saltutil.sync_all)")


def _call(name, function, **kwargs):
    """(ret, test, outcome) of ipsec_pacemaker ``function`` (it takes
    ``test`` and returns a ``skipped`` reason). outcome is None when ret
    is final: the call failed, or there is nothing to do here."""
    ret = {"name": name, "changes": {}, "result": True, "comment": ""}
    test = bool(__opts__["test"])
    try:
        outcome = __salt__[function](test=test, **kwargs)
    except (SaltInvocationError, CommandExecutionError) as exc:
        ret["result"] = False
        ret["comment"] = str(exc)
        return ret, test, None
    if outcome["skipped"]:
        ret["comment"] = "Nothing to do here: {}".format(outcome["skipped"])
        return ret, test, None
    return ret, test, outcome


def _run(name, remove, cib_file):
    ret, test, outcome = _call(name, "ipsec_pacemaker.reconcile", remove=remove, cib_file=cib_file)
    if outcome is None:
        return ret
    changes = outcome["changes"]
    comments = []
    if changes:
        verb = "would change" if test else "changed"
        comments.append("{} {} CIB objects: {}".format(verb, len(changes), ", ".join(changes)))
        ret["changes"] = changes
        ret["result"] = None if test else True
    else:
        comments.append("the CIB holds the VIP tunnel resources of the plan" if not remove
                        else "no VIP tunnel resources of the formula in the CIB")
    if outcome["errors"]:
        ret["result"] = False
        comments.extend(outcome["errors"])
    ret["comment"] = "; ".join(comments) + " ({})".format(outcome["applier"])
    return ret


def vip_resources_managed(name, cib_file=None):
    """
    Create, correct and remove the pacemaker resources of the plan's VIP
    tunnels, at the CIB level (``cibadmin``; pcs and crmsh clusters alike).

    name
        Any ID; the resources come from ``ipsec.plan``.

    cib_file
        Work on this CIB file instead of the live cluster (tests). Default:
        lookup ``pacemaker:cib_file``, else the ``CIB_file`` environment.

    A VIP whose own resource (pillar ``ipsec:pacemaker:vip_resource``,
    default ``ip-{address}``) is not in the CIB fails the state; its tunnel
    resource is not created (it would run anywhere).

    .. code-block:: yaml

        ipsec-pacemaker-vip-resources-managed:
          ipsec_pacemaker.vip_resources_managed
    """
    return _run(name, False, cib_file)


def absent(name, cib_file=None):
    """
    Remove every VIP tunnel resource of the formula (id prefix
    ``ipsec:pacemaker:resource_prefix`` and the formula's agent) and every
    constraint naming them.

    .. code-block:: yaml

        ipsec-pacemaker-vip-resources-absent:
          ipsec_pacemaker.absent
    """
    return _run(name, True, cib_file)


def _repair(name, function, report):
    """One of the node's own repairs (``function``: an ipsec_pacemaker
    function taking ``test``). ``report(outcome, test)`` gives (changes,
    comment) for what was (or would be) done, or (None, comment) when
    nothing needs doing."""
    ret, test, outcome = _call(name, function)
    if outcome is None:
        return ret
    changes, ret["comment"] = report(outcome, test)
    if changes:
        ret["changes"] = changes
        ret["result"] = None if test else True
    return ret


def agent_missing_cleared(name):
    """
    Clean up this node's "not installed" records of the formula's tunnel
    resources: probes that ran before this node had the agent (a first
    deployment where the CIB was changed before this node's state ran).
    Require it after the agent's file state. Nothing on non-cluster nodes.

    .. code-block:: yaml

        ipsec-pacemaker-agent-missing-cleared:
          ipsec_pacemaker.agent_missing_cleared:
            - require:
              - ipsec-pacemaker-agent-installed
    """
    def report(outcome, test):
        node, cleared = outcome["node"], outcome["cleared"]
        if not cleared:
            return None, "no resource of the formula is marked not installed on {}".format(node)
        changes = {"cleaned_up": {resource: "not installed on {}: probed before the agent was there".format(node)
                                  for resource in cleared}}
        return changes, "{} {} on {} (pacemaker probes them again)".format(
            "would clean up" if test else "cleaned up", ", ".join(cleared), node)
    return _repair(name, "ipsec_pacemaker.clear_agent_missing", report)


def stale_vips_released(name):
    """
    Make pluto let go of the plan's VIPs this node no longer has, when they
    left without the agent's stop running here, and initiate this node's
    client conns toward them (``ipsec_pacemaker.release_stale_vips``).
    Nothing on non-cluster nodes or while pluto is not running.

    .. code-block:: yaml

        ipsec-pacemaker-stale-vips-released:
          ipsec_pacemaker.stale_vips_released:
            - require:
              - ipsec-service-running
    """
    def report(outcome, test):
        if not outcome["released"]:
            return None, "pluto listens on no VIP this node does not hold"
        changes = {"released": outcome["released"], "initiated": outcome["initiated"]}
        return changes, "{} of VIP(s) {} (gone from this node); client conns {}initiated".format(
            "pluto would let go" if test else "pluto let go", ", ".join(sorted(outcome["released"].values())),
            "would be " if test else "")
    return _repair(name, "ipsec_pacemaker.release_stale_vips", report)
