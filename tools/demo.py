#!/usr/bin/env python3
"""make demo: the formula on the built-in 3-node example, with real plutos.

Builds the lab (labkit.lab: one network namespace per node, a bridge per
network), applies the `ipsec` states on every node with salt-call --local
into the node's own root, starts an isolated pluto per node on what the
formula wrote, and prints, per node, every planned connection and what
pluto reports for it. Tears everything down at the end unless KEEP=1.

This machine's kernel has no ESP, so Child SAs cannot be installed here;
IKE SAs (authentication with the PSK) are what this demo can show.
"""

import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "test"))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "_utils"))

from labkit import examples  # noqa: E402
from labkit.lab import Lab  # noqa: E402


def established_ike(status):
    """Names of conns with an established IKE SA, from `ipsec status` text."""
    names = set()
    for line in status.splitlines():
        text = line[4:] if line[:4] in ("000 ", "006 ") else line
        if text.startswith("#") and "established IKE SA" in text and '"' in text:
            names.add(text.split('"')[1])
    return names


def main():
    keep = os.environ.get("KEEP") == "1"
    started = time.monotonic()
    lab = Lab()
    try:
        print("lab: {} nodes, networks {}".format(len(lab.nodes), ", ".join(examples.NETWORKS)))
        results = lab.apply(lambda node: examples.pillar(lookup=node.pluto.lookup()))
        for node_id, states in results.items():
            changed = sum(1 for s in states.values() if s["changes"])
            failed = [s["__id__"] for s in states.values() if s["result"] is False]
            print("{:<13} state.apply ipsec: {} states, {} changed, {} failed".format(
                node_id, len(states), changed, len(failed)))
            if failed:
                raise SystemExit("state failures on {}: {}".format(node_id, failed))
        plans = {node_id: node.salt_call("ipsec.plan")[1] for node_id, node in lab.nodes.items()}
        lab.start_plutos()

        def expected_up():
            return all(
                {n for n, c in plans[i]["connections"].items()
                 if c["role"] == "node-to-node"} <= established_ike(node.pluto.status())
                for i, node in lab.nodes.items()
            )

        lab.wait(expected_up, timeout=40)
        print()
        print("{:<13} {:<52} {:<12} {:<7} {}".format("node", "connection", "role", "loaded", "IKE SA"))
        all_up = True
        for node_id, node in lab.nodes.items():
            status = node.pluto.status()
            loaded, ike = node.pluto.connection_names(), established_ike(status)
            for name, conn in plans[node_id]["connections"].items():
                up = name in ike
                if conn["role"] == "node-to-node" and not up:
                    all_up = False
                print("{:<13} {:<52} {:<12} {:<7} {}".format(
                    node_id, name, conn["role"], "yes" if name in loaded else "NO",
                    "established" if up else "-"))
        print()
        print("node-to-node IKE SAs: {}".format("all established" if all_up else "NOT all established"))
        print("demo took {:.0f}s".format(time.monotonic() - started))
        if keep:
            print("\nKEEP=1: lab left up in {}".format(lab.workdir))
            for node in lab.nodes.values():
                print("  ip netns exec {} ipsec whack --rundir {} --status".format(node.ns.name, node.pluto.rundir))
            print("tear down: pkill -f 'pluto --config {}' ; ip -all netns delete ; rm -rf {}".format(
                lab.workdir, lab.workdir))
        return 0 if all_up else 1
    finally:
        if not keep:
            lab.close()


if __name__ == "__main__":
    sys.exit(main())
