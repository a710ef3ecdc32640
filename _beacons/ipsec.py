"""
The ``ipsec`` beacon: tells the master within seconds when a tunnel of this
node goes down or comes back, and when pluto stops answering.

At each interval it compares this node's plan with pluto the way
``ipsec.verify`` does (at the configured level) and fires an event only on a
change that has held for ``debounce`` consecutive intervals. Tags (under
``salt/beacon/<minion id>/ipsec/``): ``tunnel/down``, ``tunnel/up``,
``pluto/down``, ``pluto/up``, ``tunnel/summary``. The work is
``ipsec_events.tick`` (``_modules/ipsec_events.py``).

Configuration (minion config or ``beacons.present``; the ``ipsec.beacon``
state writes it from pillar ``ipsec:beacon``):

.. code-block:: yaml

    beacons:
      ipsec:
        - interval: 10       # seconds between checks
        - debounce: 3        # intervals a new state must hold
        - level: child       # ike, child (or traffic where verify has it)
        - plan_ttl: 300      # seconds the plan (pillar + mine) is reused
        - remind: 0          # repeat "tunnel down" every N s while down (0: never)
        - max_events: 100    # tunnel events per interval, then one summary
        - textfile: /var/lib/prometheus/node-exporter/ipsec.prom  # optional
"""

import logging

log = logging.getLogger(__name__)

__virtualname__ = "ipsec"

MEMORY = "ipsec_beacon.memory"


def __virtual__():
    return __virtualname__


def validate(config):
    """Check the beacon's configuration: (True, "valid") or (False, why)."""
    if "ipsec_events.check_beacon_config" not in __salt__:
        return False, "ipsec beacon: the ipsec_events module is not loaded (run saltutil.sync_all)"
    return __salt__["ipsec_events.check_beacon_config"](config)


def beacon(config):
    """One interval: the events to fire (each with its ``tag`` tail)."""
    memory = __context__.setdefault(MEMORY, {})
    events = __salt__["ipsec_events.tick"](config, memory)
    log.debug("ipsec beacon: %d events, %.3f s", len(events), memory.get("last_cost", 0.0))
    return events
