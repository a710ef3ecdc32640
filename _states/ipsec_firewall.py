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
    Accept IKE, NAT-T, ESP and AH for every tunneled network of the plan.
    With ``ipsec:firewall:manage: false`` nothing is done.

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
        if found["in_place"]:
            ret["comment"] = "{} rules in place ({})".format(
                len(__salt__["ipsec_firewall.rules"]()), found["backend"])
            return ret
        changes = {"backend": found["backend"], "add": found["add"], "remove": found["remove"]}
        if __opts__["test"]:
            ret.update(result=None, changes=changes, comment="firewall rules would change")
            return ret
        __salt__["ipsec_firewall.apply"](firewall)
        ret.update(changes=changes, comment="firewall rules updated")
    except (SaltInvocationError, CommandExecutionError) as exc:
        ret.update(result=False, comment=str(exc))
    return ret


def absent(name, backend="nftables", table="ipsec_formula", **kwargs):
    """
    Remove the formula's firewall rules: its nftables table, or its
    ``ipsec-formula``-commented iptables rules. Other rules stay.

    .. code-block:: yaml

        ipsec-firewall-absent:
          ipsec_firewall.absent:
            - backend: nftables
    """
    ret = {"name": name, "changes": {}, "result": True, "comment": ""}
    try:
        present = __salt__["ipsec_firewall.present"](backend=backend, table=table)
        if not present:
            ret["comment"] = "no firewall rules of the formula"
            return ret
        if __opts__["test"]:
            ret.update(result=None, changes={"removed": present}, comment="firewall rules would be removed")
            return ret
        removed = __salt__["ipsec_firewall.remove"](backend=backend, table=table)
        ret.update(changes={"removed": removed}, comment="firewall rules removed")
    except (SaltInvocationError, CommandExecutionError) as exc:
        ret.update(result=False, comment=str(exc))
    return ret
