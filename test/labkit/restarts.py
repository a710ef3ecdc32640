"""Restart rounds and the traffic level of verify, in the lab's VM phase.

Run by labkit.labvm inside the VM (real ESP) after the mesh is up:

- ``traffic_verdicts(mesh, plans)``: ``ipsec_verify.verify_traffic`` on
  every node at once (the formula's own code, as ``ipsec.verify
  level=traffic`` runs it), its probe round sent from the node's namespace;
- ``run_rounds(mesh, plans, kind, count)``: restart every pluto at once
  (``all``: alternately a clean restart and a power cut of every node) or
  one node's (``one``: the nodes in turn, each round the next of VARIANTS:
  a clean restart, a clean stop held longer than the liveness timeout, a
  power cut rebooted after as long, a network partition healed after as
  long); after each: every tunnel up, then traffic both ways through every
  tunnel, from both ends;
- ``xfrm_fault(mesh, plans, node_id, conn)``: delete that node's inbound
  ESP state of one tunnel; the Child level still passes, the traffic level
  must fail naming the tunnel.
"""

import json
import os
import re
import subprocess
import sys
import time

import ipsec_status
import ipsec_verify

from labkit import tunnels, waiting

PROBE_TIMEOUT = 3  # s, per probe round
UP_TIMEOUT = 240  # s from the restart to every tunnel at the Child level (emulated: an all-node restart took 117 s)
SETTLE = 60  # s more for the traffic level to pass (it is retried)
INITIATING = re.compile(r'"([^"]+)"(?:\[\d+\])? #\d+: initiating IKEv2 connection')

# Runs in a node's namespace: one probe round (pairs on stdin).
PROBE = ("import json, sys, ipsec_probe; "
         "pairs = [tuple(p) for p in json.load(sys.stdin)]; "
         "out = ipsec_probe.probe(pairs, float(sys.argv[1])); "
         "print(json.dumps([[list(k), v] for k, v in out.items()]))")


def _prober(node):
    def send(pairs, timeout):
        done = subprocess.run(["ip", "netns", "exec", node.ns.name, sys.executable, "-c", PROBE, str(timeout)],
                              input=json.dumps(pairs), capture_output=True, text=True, timeout=timeout + 120,
                              check=True)
        return {tuple(pair): result for pair, result in json.loads(done.stdout)}
    return send


def _reader(node):
    return lambda: ipsec_status.parse_status(node.pluto.status(), node.pluto.trafficstatus())


def child_verdicts(mesh, plans):
    out = {}
    for node_id, node in mesh.nodes.items():
        try:
            out[node_id] = ipsec_verify.verify(plans[node_id], _reader(node)(), "child")
        except Exception as exc:  # noqa: BLE001 - a pluto still starting
            out[node_id] = {"result": False, "comment": "status failed: {}".format(exc), "failed": {}}
    return out


def traffic_verdicts(mesh, plans, timeout=PROBE_TIMEOUT):
    """{node: the traffic-level verdict}, every node's probe round at once."""
    ids = sorted(mesh.nodes)
    verdicts = tunnels.in_parallel(*[
        (lambda node_id=node_id: ipsec_verify.verify_traffic(
            plans[node_id], _reader(mesh.nodes[node_id]), _prober(mesh.nodes[node_id]), timeout))
        for node_id in ids])
    return dict(zip(ids, verdicts))


def failed_tunnels(verdicts):
    return sorted("{}: {}: {}".format(node_id, name, reason)
                  for node_id, verdict in verdicts.items() for name, reason in (verdict.get("failed") or {}).items())


def _initiations(mesh):
    """{"node conn": IKE_SA_INIT exchanges it started so far}."""
    found = {}
    for node_id, node in mesh.nodes.items():
        for name in INITIATING.findall(node.pluto.raw_log()):
            key = "{} {}".format(node_id, name)
            found[key] = found.get(key, 0) + 1
    return found


# Longer than the liveness timeout (dpddelay 5 s + retransmit-timeout 15 s):
# the peers have given the node up before it comes back.
LONG_OUTAGE = 25  # s
# One node's rounds, in turn (see _disturb).
VARIANTS = ("restart", "stop", "power-cut", "partition")
# Drops everything but loopback in a node's namespace: a partition.
PARTITION = """table inet lab-partition {
    chain input { type filter hook input priority -300; policy drop; iif lo accept; }
    chain output { type filter hook output priority -300; policy drop; oif lo accept; }
}
"""


def _power_cut(node):
    """SIGKILL: no DELETE reaches the peers; and what a power cut leaves of
    the kernel's SAs and policies (what ipsec.service's stop leaves too):
    nothing."""
    node.pluto.process.kill()
    node.pluto.process.wait(10)
    for name in os.listdir(node.pluto.rundir):  # the pid file and socket it left
        os.unlink(os.path.join(node.pluto.rundir, name))
    for what in ("state", "policy"):
        node.ns.exec(["ip", "xfrm", what, "flush"])


def _disturb(nodes, variant):
    """Apply one VARIANT to ``nodes`` at once and bring them back:
    restart: clean shutdown (DELETEs sent), started again at once;
    stop: clean shutdown, started again after LONG_OUTAGE;
    power-cut: killed and the kernel's SAs gone, started after LONG_OUTAGE;
    partition: pluto runs on, the node's namespace drops every packet for
    LONG_OUTAGE (both ends' liveness gives up), then the network heals."""
    if variant == "partition":
        for node in nodes:
            subprocess.run(["ip", "netns", "exec", node.ns.name, "nft", "-f", "-"], input=PARTITION,
                           text=True, check=True)
        time.sleep(LONG_OUTAGE)
        for node in nodes:
            node.ns.exec(["nft", "delete", "table", "inet", "lab-partition"])
        return
    if variant == "power-cut":
        for node in nodes:
            _power_cut(node)
    else:
        tunnels.in_parallel(*[node.pluto.stop for node in nodes])
    if variant != "restart":
        time.sleep(LONG_OUTAGE)
    for node in nodes:
        node.pluto.start(timeout=120)


def one_round(mesh, plans, nodes, variant):
    """Disturb ``nodes``; time to every tunnel up at the Child level and to
    the traffic level passing on every node, and what failed on the way."""
    started = time.monotonic()
    initiated = _initiations(mesh)
    _disturb(nodes, variant)
    entry = {"nodes": sorted(node.id for node in nodes), "variant": variant}
    deadline = started + UP_TIMEOUT
    while True:
        polled = time.monotonic()
        verdicts = child_verdicts(mesh, plans)
        if all(v["result"] for v in verdicts.values()) or time.monotonic() > deadline:
            break
        waiting.pause(1, polled)
    entry["child_up"] = all(v["result"] for v in verdicts.values())
    entry["child_seconds"] = round(time.monotonic() - started, 1)
    entry["child_failed"] = failed_tunnels(verdicts)
    checks, first = 0, None
    deadline = time.monotonic() + SETTLE
    while True:
        checks += 1
        polled = time.monotonic()
        verdicts = traffic_verdicts(mesh, plans)
        failed = failed_tunnels(verdicts)
        first = failed if first is None else first
        if not failed or time.monotonic() > deadline:
            break
        waiting.pause(2, polled)
    entry.update(traffic_checks=checks, first_traffic_failed=first, traffic_failed=failed,
                 stale={"{} {}".format(node_id, label): note for node_id, v in verdicts.items()
                        for label, note in (v.get("stale") or {}).items()},
                 traffic_seconds=round(time.monotonic() - started, 1),
                 initiations={k: n - initiated.get(k, 0) for k, n in _initiations(mesh).items()
                              if n > initiated.get(k, 0)},
                 probed=sum(len([1 for e in v["connections"].values() if e.get("traffic")])
                            + sum(1 for e in v["connections"].values() for c in (e.get("clients") or {}).values()
                                  if c.get("traffic")) for v in verdicts.values()))
    return entry


def round_plan(kind, count, ids):
    """[(node ids, variant)] of ``count`` rounds: ``all``: every node,
    alternately restarted and power-cut; ``one``: node i % 3 with variant
    i % 4, so 12 rounds meet every node with every variant."""
    if kind == "all":
        return [(list(ids), ("restart", "power-cut")[index % 2]) for index in range(count)]
    return [([ids[index % len(ids)]], VARIANTS[index % len(VARIANTS)]) for index in range(count)]


def run_rounds(mesh, kind, count, plans):
    """``count`` rounds of round_plan(kind, ...)."""
    return [one_round(mesh, plans, [mesh.nodes[i] for i in node_ids], variant)
            for node_ids, variant in round_plan(kind, count, sorted(mesh.nodes))]


def inbound_spi(node, conn):
    """(peer, own address, inbound SPI) of the Child SA of ``conn``."""
    status = ipsec_status.parse_status(node.pluto.status())
    record = next(r for r in status["connections"][conn]["child_sas"] if r["established"])
    own, peer = status["connections"][conn]["local"], status["connections"][conn]["remote"]
    return peer, own, record["spi_in"]


def xfrm_fault(mesh, plans, node_id, conn):
    """Delete ``node_id``'s inbound ESP state of ``conn``: the verdicts of
    both levels right after, on that node."""
    node = mesh.nodes[node_id]
    peer, own, spi = inbound_spi(node, conn)
    deleted = node.ns.exec(["ip", "xfrm", "state", "delete", "src", peer, "dst", own, "proto", "esp",
                            "spi", "0x" + spi], check=False)
    child = ipsec_verify.verify(plans[node_id], _reader(node)(), "child")
    traffic = traffic_verdicts(mesh, plans)
    return {"node": node_id, "conn": conn, "spi": spi, "deleted": deleted.returncode == 0,
            "delete_stderr": deleted.stderr, "child": {"result": child["result"], "failed": child["failed"]},
            "traffic": {n: {"result": v["result"], "failed": v["failed"]} for n, v in traffic.items()}}
