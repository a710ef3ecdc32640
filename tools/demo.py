#!/usr/bin/env python3
"""make demo: the formula on the built-in 3-node example, driven by a real
salt-master, with real plutos.

Builds the lab (labkit.lab: one network namespace per node, a bridge per
network, a salt-master on the control-plane bridge, a salt-minion and an
isolated pluto per node), then does what an operator does:
``saltutil.sync_all``, ``mine.update``, ``state.apply ipsec`` (peers come
from the mine), starts pluto on every node, and prints, per node, every
planned connection and what pluto reports for it. Tears everything down at
the end unless KEEP=1.

This machine's kernel has no ESP, so Child SAs cannot be installed here;
IKE SAs (authentication with the PSK) are what this demo can show.
"""

import json
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


def lab_pillar(lab):
    common = {
        "ipsec": examples.pillar(inventory=False),
        "mine_functions": {"ipsec.addresses": []},
    }
    # The lab's nodes are namespaces: their firewall is theirs to change.
    common["ipsec"]["firewall"] = {"manage": True}
    lab.write_pillar(common, lambda node: {"ipsec": {"lookup": node.pluto.lookup()}})


def step(lab, title, *command):
    started = time.monotonic()
    rc, data = lab.salt("*", *command)
    print("salt '*' {:<28} rc={} ({:.1f}s)  {}".format(" ".join(command), rc, time.monotonic() - started, title))
    if rc != 0:
        raise SystemExit("{} failed: {}".format(" ".join(command), json.dumps(data, indent=1)[:3000]))
    return data


def main():
    keep = os.environ.get("KEEP") == "1"
    started = time.monotonic()
    lab = Lab()
    try:
        print("lab: {} nodes, networks {}; salt-master on the ctlplane bridge".format(
            len(lab.nodes), ", ".join(examples.NETWORKS)))
        lab_pillar(lab)
        lab.start_salt()
        step(lab, "the formula's modules to every minion", "saltutil.sync_all")
        step(lab, "every node publishes its addresses", "mine.update")
        applied = step(lab, "peers from the mine", "state.apply", "ipsec")
        for node_id, states in sorted(applied.items()):
            changed = sum(1 for s in states.values() if s["changes"])
            print("  {:<13} {} states, {} changed".format(node_id, len(states), changed))
        plans = step(lab, "what each node planned", "ipsec.plan")
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
            print("  ip netns exec {} salt -c {} '*' ipsec.plan".format(lab.switch.name, lab.master_dir))
            print("tear down: pkill -f {0} ; for ns in {1}; do ip netns del $ns; done ; rm -rf {0}".format(
                lab.workdir, " ".join([lab.switch.name] + [n.ns.name for n in lab.nodes.values()])))
        return 0 if all_up else 1
    finally:
        if not keep:
            lab.close()


if __name__ == "__main__":
    sys.exit(main())
