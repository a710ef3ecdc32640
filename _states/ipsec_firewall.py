"""
States for the firewall rules of ipsec-formula (see the execution module
``ipsec_firewall``): ``managed`` makes them match the plan, ``absent``
removes them (and only them).
"""

from salt.exceptions import CommandExecutionError, SaltInvocationError

__virtualname__ = "ipsec_firewall"


def __virtual__():
    return __virtualname__


def managed(name, **kwargs):
    """
    Accept IKE, NAT-T, ESP and AH for every tunneled network of the plan,
    and (``ipsec:firewall:persist``, default true) keep the same rules where
    the distribution loads them at boot. With ``ipsec:firewall:manage:
    false`` nothing is done.

    .. code-block:: yaml

        ipsec-firewall-managed:
          ipsec_firewall.managed
    """
    ret = {"name": name, "changes": {}, "result": True, "comment": ""}
    try:
        firewall = __salt__["ipsec.build"]()["firewall"]
        if not firewall["manage"]:
            ret["comment"] = "firewall not managed (ipsec:firewall:manage is false)"
            return ret
        found = __salt__["ipsec_firewall.diff"](firewall)
        persisted = __salt__["ipsec_firewall.persist_diff"](firewall)
        if found["in_place"] and not persisted:
            ret["comment"] = "{} rules in place ({}){}".format(
                len(__salt__["ipsec_firewall.rules"]()), found["backend"],
                ", persisted" if firewall["persist"] else "")
            return ret
        changes = {}
        if not found["in_place"]:
            changes.update(backend=found["backend"], add=found["add"], remove=found["remove"])
        if persisted:
            changes["persisted"] = persisted
        if __opts__["test"]:
            ret.update(result=None, changes=changes, comment="firewall rules would change")
            return ret
        if not found["in_place"]:
            __salt__["ipsec_firewall.apply"](firewall)
        if persisted:
            __salt__["ipsec_firewall.persist"](firewall)
        ret.update(changes=changes, comment="firewall rules updated")
    except (SaltInvocationError, CommandExecutionError) as exc:
        ret.update(result=False, comment=str(exc))
    return ret


def absent(name, backend="nftables", table="ipsec_formula", persist_files=None, **kwargs):
    """
    Remove the formula's firewall rules: its nftables table, or its
    ``ipsec-formula``-commented iptables rules, and their persisted copy
    (its table file, its include line, its block of saved rules; pass the
    settings' ``persist_files``). Other rules and lines stay.

    .. code-block:: yaml

        ipsec-firewall-absent:
          ipsec_firewall.absent:
            - backend: nftables
    """
    ret = {"name": name, "changes": {}, "result": True, "comment": ""}
    try:
        present = __salt__["ipsec_firewall.present"](backend=backend, table=table)
        unpersisted = {}
        if persist_files:
            unpersisted = __salt__["ipsec_firewall.unpersist"](backend=backend, table=table,
                                                                persist_files=persist_files, test=True)
        if not present and not unpersisted:
            ret["comment"] = "no firewall rules of the formula"
            return ret
        changes = {}
        if present:
            changes["removed"] = present
        if unpersisted:
            changes["persisted"] = unpersisted
        if __opts__["test"]:
            ret.update(result=None, changes=changes, comment="firewall rules would be removed")
            return ret
        if present:
            changes["removed"] = __salt__["ipsec_firewall.remove"](backend=backend, table=table)
        if unpersisted:
            __salt__["ipsec_firewall.unpersist"](backend=backend, table=table, persist_files=persist_files)
        ret.update(changes=changes, comment="firewall rules removed")
    except (SaltInvocationError, CommandExecutionError) as exc:
        ret.update(result=False, comment=str(exc))
    return ret
