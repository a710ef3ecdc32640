#!/usr/bin/env python3
"""Benchmark: ipsec plan (+ file rendering) for 10/100/1000 nodes x 4 networks.

Times ``build_plan`` for one node of an N-node inventory (that node gets
4 x (N-1) node-to-node conns plus VIP conns), then the rendering of its
files. Prints a table; the median of several runs is reported.
Target (issue 2): 1000 nodes x 4 networks < 1 s, growth roughly linear.

    make bench        # or: .venv/bin/python bench/plan_bench.py [--repeat 5]
"""

import argparse
import statistics
import time
import tracemalloc

import ipsec_plan
import ipsec_render

PSK = "bench-psk-0123456789abcdef0123456789abcdef"
def make_pillar(nodes):
    """N nodes on two IPv4 and two IPv6 networks. IPv4 uses the benchmarking
    range 198.18.0.0/15 (RFC 2544) so 1000 nodes fit; nothing is sent."""
    networks = {
        "internal_api": {"cidr": "198.18.0.0/16", "vip": "198.18.255.1"},
        "storage": {"cidr": "198.19.0.0/16", "vip": "198.19.255.1"},
        "storage_mgmt": {"cidr": "2001:db8:1::/64"},
        "tenant": {"cidr": "2001:db8:2::/64"},
    }
    inventory = {}
    for i in range(nodes):
        host = "{}.{}".format(i // 250, i % 250 + 1)
        inventory["node-{:04d}".format(i)] = {"addresses": {
            "internal_api": "198.18." + host,
            "storage": "198.19." + host,
            "storage_mgmt": "2001:db8:1::{:x}".format(i + 1),
            "tenant": "2001:db8:2::{:x}".format(i + 1),
        }}
    return {"psk": PSK, "networks": networks, "nodes": inventory, "cluster": {"nodes": ["node-0000"]}}


def measure(nodes, repeat):
    pillar = make_pillar(nodes)
    me = "node-0000"
    own = list(pillar["nodes"][me]["addresses"].values())
    plan_times, render_times = [], []
    for _ in range(repeat):
        start = time.perf_counter()
        plan = ipsec_plan.build_plan(pillar, me, own, cluster_node=True)
        plan_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        ipsec_render.render_files(plan, PSK)
        render_times.append(time.perf_counter() - start)
    tracemalloc.start()
    ipsec_render.render_files(ipsec_plan.build_plan(pillar, me, own, cluster_node=True), PSK)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return len(plan["connections"]), statistics.median(plan_times), statistics.median(render_times), peak


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--sizes", default="10,100,1000")
    args = parser.parse_args()
    print("{:>6} {:>8} {:>10} {:>10} {:>12} {:>10}".format("nodes", "conns", "plan s", "render s", "s/1000conns", "peak MiB"))
    for nodes in (int(n) for n in args.sizes.split(",")):
        conns, plan_s, render_s, peak = measure(nodes, args.repeat)
        print("{:>6} {:>8} {:>10.4f} {:>10.4f} {:>12.4f} {:>10.1f}".format(
            nodes, conns, plan_s, render_s, plan_s / conns * 1000, peak / 2 ** 20))


if __name__ == "__main__":
    main()
