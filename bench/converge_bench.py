#!/usr/bin/env python3
"""Benchmark: how a node-to-node mesh converges, TripleO's both-ends-start
against the formula's one initiator per tunnel, in the same run.

N node plutos (Libreswan 4.10 by default), each in its own network namespace
on one bridged network (198.51.100.0/25), every tunnel of that network,
loaded from the formula's own rendered files (plan: _utils/ipsec_plan.py).
The old design is the same plan with ``conn_options`` giving both ends
``auto=start`` and TripleO's ``retransmit-timeout=2s`` without liveness.

For each design and N:
- all plutos started at once: seconds until every tunnel has exactly one
  established IKE SA on both ends (IKE level: this kernel has no ESP), and
  IKE_SA_INIT exchanges started per tunnel (``initiating IKEv2`` lines in
  the pluto logs of both ends);
- ``--rounds`` times, one node's pluto restarted (``whack --shutdown``, then
  started) while the others run, and all plutos restarted at once: seconds
  until every tunnel is back to exactly one IKE SA on both ends, and the
  initiations it took.

    .venv/bin/python bench/converge_bench.py [--nodes 12 24] [--rounds 5]
"""

import argparse
import re
import shutil
import statistics
import tempfile
import threading
import time

import benchlib
import ipsec_plan
import ipsec_render
import ipsec_status
from labkit import libreswan, netns
from labkit.mesh import Mesh

PSK = "bench-psk-3c9e1a7f5b2d8e4c6a0f1b3d5e7a9c2b"
NETWORK = "internal_api"
OLD = {"auto": "start", "dpddelay": None, "dpdaction": None, "dpdtimeout": None, "retransmit-timeout": "2s"}
INITIATING = re.compile(r'"([^"]+)"(?:\[\d+\])? #\d+: initiating IKEv2 connection')
TIMEOUT = 60  # s: the old design may never converge (two IKE SAs kept)


def inventory(count):
    return {"node-{:02d}".format(i): {NETWORK: "198.51.100.{}".format(i + 1)} for i in range(count)}


def pillar(nodes, design):
    net = {"cidr": "198.51.100.0/25"}
    if design == "both-start":
        net["conn_options"] = dict(OLD)
    return {"psk": PSK, "networks": {NETWORK: net, "ctlplane": {"cidr": "198.51.100.128/25"}},
            "nodes": {node: {"addresses": addrs} for node, addrs in nodes.items()},
            "cluster": {"nodes": []}, "firewall": {"manage": False}}


def configure(mesh, nodes, design, major):
    plans = {}
    for node_id, node in mesh.nodes.items():
        pluto = node.pluto
        plan = ipsec_plan.build_plan(pillar(nodes, design), node_id, sorted(nodes[node_id].values()), major=major,
                                     config_dir=pluto.config_dir)
        for path, text in ipsec_render.render_files(plan, PSK).items():
            with open(path, "w") as handle:
                handle.write(text)
        with open(pluto.config_file, "w") as handle:
            handle.write("config setup\n\tuniqueids=no\n\ninclude {}/*.conf\n".format(pluto.config_dir))
        with open(pluto.secrets_file, "w") as handle:
            handle.write("include {}/*.secrets\n".format(pluto.config_dir))
        plans[node_id] = sorted(plan["connections"])
    return plans


def ike_counts(node):
    parsed = ipsec_status.parse_status(node.pluto.status())
    return {name: sum(1 for sa in conn["ike_sas"] if sa["established"])
            for name, conn in parsed["connections"].items()}


def converged(mesh, plans):
    for node_id, node in mesh.nodes.items():
        counts = ike_counts(node)
        if any(counts.get(name) != 1 for name in plans[node_id]):
            return False
    return True


def initiations(mesh):
    """{tunnel: IKE_SA_INIT exchanges started, both ends} from the logs."""
    found = {}
    for node in mesh.nodes.values():
        for name in INITIATING.findall(node.pluto.raw_log()):
            found[name] = found.get(name, 0) + 1
    return found


def together(calls):
    threads = [threading.Thread(target=call) for call in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def wait_converged(mesh, plans, started):
    deadline = started + TIMEOUT
    while time.monotonic() < deadline:
        if converged(mesh, plans):
            return round(time.monotonic() - started, 2)
        time.sleep(0.5)
    return None


def duplicated(mesh, plans):
    """Tunnel ends holding more than one established IKE SA."""
    return sum(1 for node_id, node in mesh.nodes.items() for name, count in ike_counts(node).items()
               if name in plans[node_id] and count > 1)


def since(before, after):
    return {name: after.get(name, 0) - before.get(name, 0) for name in after}


def per_tunnel(counts, tunnels):
    values = [counts.get(name, 0) for name in tunnels]
    return {"mean": round(statistics.mean(values), 2), "max": max(values)}


def run(count, design, rounds, install):
    nodes = inventory(count)
    workdir = tempfile.mkdtemp(prefix="ipsec-converge-")
    mesh = Mesh(workdir, nodes, vip_holder=None)
    try:
        for node in mesh.nodes.values():
            node.pluto.libreswan = install
            node.pluto.ipsec_bin = install.ipsec_bin
        plans = configure(mesh, nodes, design, install.major)
        tunnels = sorted({name for names in plans.values() for name in names})
        result = {"nodes": count, "design": design, "tunnels": len(tunnels)}
        started = time.monotonic()
        together([lambda n=n: n.pluto.start(timeout=60) for n in mesh.nodes.values()])
        result["start_all"] = {"seconds": wait_converged(mesh, plans, started),
                               "ike_sa_init_per_tunnel": per_tunnel(initiations(mesh), tunnels),
                               "ends_with_two_ike_sas": duplicated(mesh, plans)}
        for kind in ("restart_one", "restart_all"):
            samples = []
            for round_no in range(rounds):
                time.sleep(3)
                before = initiations(mesh)
                victims = [mesh.nodes[sorted(nodes)[round_no % count]]] if kind == "restart_one" \
                    else list(mesh.nodes.values())
                together([lambda n=n: n.pluto.stop() for n in victims])
                started = time.monotonic()
                together([lambda n=n: n.pluto.start(timeout=60) for n in victims])
                seconds = wait_converged(mesh, plans, started)
                samples.append({"seconds": seconds,
                                "ike_sa_init_per_tunnel": per_tunnel(since(before, initiations(mesh)), tunnels),
                                "ends_with_two_ike_sas": duplicated(mesh, plans)})
            done = [s["seconds"] for s in samples if s["seconds"] is not None]
            result[kind] = {"median_seconds": benchlib.median(done) if done else None,
                            "max_seconds": max(done) if done else None,
                            "not_converged": len(samples) - len(done), "rounds": samples}
        return result
    finally:
        for node in mesh.nodes.values():
            node.pluto.stop()
        mesh.close()
        shutil.rmtree(workdir, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, nargs="+", default=[12, 24])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--libreswan", default=libreswan.SYSTEM, choices=libreswan.LABELS)
    args = parser.parse_args()
    netns.sweep_stale()
    install = libreswan.get(args.libreswan)
    results = []
    for count in args.nodes:
        for design in ("both-start", "one-initiator"):
            result = run(count, design, args.rounds, install)
            results.append(result)
            print("N={nodes:3d} {design:14s} start all: {s}s (None: not within {t}s; {d} ends with 2 IKE SAs), "
                  "IKE_SA_INIT/tunnel {i}; restart one: median {o} max {om}; restart all: median {a} "
                  "max {am}".format(
                      s=result["start_all"]["seconds"], i=result["start_all"]["ike_sa_init_per_tunnel"],
                      t=TIMEOUT, d=result["start_all"]["ends_with_two_ike_sas"],
                      o=result["restart_one"]["median_seconds"], om=result["restart_one"]["max_seconds"],
                      a=result["restart_all"]["median_seconds"], am=result["restart_all"]["max_seconds"],
                      **result), flush=True)
    benchlib.save("converge_bench", {"libreswan": install.version, "runs": results})


if __name__ == "__main__":
    main()
