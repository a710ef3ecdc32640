"""
What one Libreswan major release no longer honours, for the plan's pillar
validation (pure; no Salt).

Measured with ``ipsec addconn --checkconfig`` of Libreswan 4.10 and 5.3.2
on every keyword ``ipsec:conn_options`` / ``ipsec:networks:<net>:conn_options``
and ``ipsec:config_setup`` accept: 5.3.2 prints ``warning: obsolete keyword
ignored: <keyword>=<value>`` (exit 0) for exactly the two below, and loads
the conn without them. An operator's override would silently do nothing,
so the plan refuses it, naming the pillar key.
"""

from salt.exceptions import SaltInvocationError

OBSOLETE_CONN_KEYWORDS = {
    5: {
        "dpdaction": "obsolete in Libreswan 5.x (ignored with a warning): IKEv2 liveness is dpddelay + "
                     "retransmit-timeout, and what follows a dead peer is decided by auto=",
        "keyingtries": "obsolete in Libreswan 5.x (ignored with a warning): pluto retries as long as the "
                       "conn is up (auto=start)",
    },
}


def obsolete_options(conf, major):
    """[(pillar key, problem)] of the conn keyword overrides in the ``ipsec``
    pillar ``conf`` that Libreswan ``major`` ignores."""
    table = OBSOLETE_CONN_KEYWORDS.get(major, {})
    if not table or not isinstance(conf, dict):
        return []
    scopes = [("conn_options", conf.get("conn_options"))]
    networks = conf.get("networks")
    if isinstance(networks, dict):
        scopes += [("networks:{}:conn_options".format(name), (net or {}).get("conn_options"))
                   for name, net in sorted(networks.items(), key=lambda item: str(item[0]))
                   if isinstance(net, dict)]
    found = []
    for key, options in scopes:
        if isinstance(options, dict):
            for keyword in sorted(options, key=str):
                if keyword in table and options[keyword] is not None:
                    found.append(("{}:{}".format(key, keyword), table[keyword]))
    return found


def check_release(conf, major):
    """Raise the plan's SaltInvocationError (``ipsec:<key>: <problem>``) for
    the first override ``major`` ignores. build_plan calls this once it knows
    the major release."""
    for key, problem in obsolete_options(conf, major):
        raise SaltInvocationError("ipsec:{}: {}".format(key, problem))
