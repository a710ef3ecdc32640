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
"""

from salt.exceptions import CommandExecutionError, SaltInvocationError

__virtualname__ = "ipsec_pacemaker"


def __virtual__():
    if "ipsec_pacemaker.reconcile" in __salt__ and "ipsec.plan" in __salt__:
        return __virtualname__
    return (False, "the ipsec and ipsec_pacemaker execution modules are not loaded (run saltutil.sync_all)")


def _run(name, remove, cib_file):
    ret = {"name": name, "changes": {}, "result": True, "comment": ""}
    test = bool(__opts__["test"])
    try:
        outcome = __salt__["ipsec_pacemaker.reconcile"](remove=remove, test=test, cib_file=cib_file)
    except (SaltInvocationError, CommandExecutionError) as exc:
        ret["result"] = False
        ret["comment"] = str(exc)
        return ret
    if outcome["skipped"]:
        ret["comment"] = "Nothing to do here: {}".format(outcome["skipped"])
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
