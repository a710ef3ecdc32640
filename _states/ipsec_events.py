"""
Tunnel metrics for Prometheus: ``ipsec_events.metrics`` keeps node_exporter's
textfile (``ipsec.prom``) current. The text comes from
``ipsec_events.write_metrics`` (one ``ipsec whack --status`` and
``--trafficstatus``, judged like ``ipsec.verify``).
"""

__virtualname__ = "ipsec_events"


def __virtual__():
    if "ipsec_events.write_metrics" not in __salt__:
        return (False, "ipsec_events: the ipsec_events execution module is not loaded (run saltutil.sync_all)")
    return __virtualname__


def metrics(name, level="child"):
    """
    Write the textfile ``name`` (a path ending in ``.prom``) when its text
    changed. With ``test=True``: whether it would change, nothing written.

    .. code-block:: yaml

        ipsec-metrics:
          ipsec_events.metrics:
            - name: /var/lib/prometheus/node-exporter/ipsec.prom
            - level: child
    """
    ret = {"name": name, "result": True, "changes": {}, "comment": ""}
    test = bool(__opts__.get("test"))
    written = __salt__["ipsec_events.write_metrics"](path=name, level=level, test=test)
    summary = "{} tunnels, {} up, pluto {}".format(
        written["tunnels"], written["up"], "answering" if written["pluto"] else "not answering")
    if not written["changed"]:
        ret["comment"] = "{} is current ({})".format(name, summary)
        return ret
    ret["changes"] = {"metrics": summary}
    if test:
        ret["result"] = None
        ret["comment"] = "{} would be written ({})".format(name, summary)
    else:
        ret["comment"] = "{} written ({})".format(name, summary)
    return ret
