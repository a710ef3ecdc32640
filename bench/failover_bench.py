#!/usr/bin/env python3
"""Benchmark: VIP failovers on the live cluster lab (labkit.clusterlab).

Three controllers with real corosync and pacemaker, the formula's tunnel
resources created through the DC; then ``--rounds`` failovers of each kind
(labkit.failover: standby of the holder, crm_resource --move, power cut of
the holder), the VIPs in turn, each followed by the old holder's return.
Per kind, median and max of the seconds from the command to:

- ``vip_moved``: pacemaker reports the VIP on another controller;
- ``tunnel_moved``: the tunnel resource is there too;
- ``holder_serves``: the new holder's pluto listens on the VIP, server
  conn oriented;
- ``clients_up``: every other node's client conn has an established IKE
  SA again (``clients_after_vip``: the same from the VIP's move).

IKE level: this host's kernel has no ESP, so pluto runs no liveness (it
runs it on Child SAs) and the clients other than the old holder are
nudged as liveness would (failover.nudge_clients): their figure here is
pacemaker + agent + IKE, without the liveness detection a real node adds
(dpddelay 5 s + retransmit-timeout 15 s at most, then the revival).

    .venv/bin/python bench/failover_bench.py [--rounds 10]
"""

import argparse
import statistics

import benchlib
from labkit import clusterlab, failover

MEASURES = ("vip_moved", "tunnel_moved", "holder_serves", "clients_up", "clients_after_vip")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10, help="failovers of each kind")
    args = parser.parse_args()
    made = clusterlab.ClusterLab()
    records = []
    try:
        plans = made.deploy()
        names = sorted(failover.vip_facts(plans))
        for index in range(args.rounds * len(failover.KINDS)):
            kind = failover.KINDS[index % len(failover.KINDS)]
            record = failover.failover(made, plans, names[index % len(names)], kind)
            failover.restore(made, plans, record)
            records.append(record)
            print("{:2d} {:8s} {:13s} {} -> {}: {}".format(
                index + 1, kind, record["vip"], record["from"], record["to"],
                " ".join("{}={}".format(m, record.get(m)) for m in MEASURES)
                + (" PROBLEMS {}".format(record["problems"]) if record["problems"] else "")), flush=True)
    finally:
        made.close()
    summary = {}
    for kind in failover.KINDS:
        mine = [r for r in records if r["kind"] == kind]
        summary[kind] = {"rounds": len(mine), "with_problems": sum(1 for r in mine if r["problems"])}
        for measure in MEASURES:
            values = [r[measure] for r in mine if r.get(measure) is not None]
            summary[kind][measure] = {"median": round(statistics.median(values), 2) if values else None,
                                      "max": round(max(values), 2) if values else None}
    print("\n| kind | rounds | VIP moved | tunnel moved | holder serves | clients up | clients after the VIP |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for kind, row in summary.items():
        print("| {} | {} | {} |".format(kind, row["rounds"], " | ".join(
            "{} / {} s".format(row[m]["median"], row[m]["max"]) for m in MEASURES)))
    benchlib.save("failover_bench", {"summary": summary, "records": records})


if __name__ == "__main__":
    main()
