#!/usr/bin/env python3
"""Benchmark: a no-change ``salt-call --local state.apply ipsec`` on one node
of a 1000-node mesh, as a ratio to ``salt-call --local test.ping`` with the
same minion config, timed in the same run.

One node (node-0000) of a 1000-node inventory on 4 IPv6 networks (the
pillar of bench/apply_bench.py: ~4000 conns, VIPs, peers from the pillar
inventory) in a network namespace holding its addresses, with a real,
isolated pluto (test/labkit) into which a first ``state.apply`` loads every
conn. Then, interleaved, ``--repeat`` times each: ``test.ping`` (the floor:
salt-call's own start-up, grains, pillar compilation of the same 1000-node
pillar) and a ``state.apply ipsec`` that changes nothing (checked: no state
reports a change, every state passes, pluto still has every conn). Both run
inside the namespace with the same config; nothing leaves it.

Conns are planned with ``auto=add`` (as apply_bench): the peers are
addresses nobody holds, and a pluto initiating 4000 conns toward silence
answers whack only every few seconds, which would measure that instead.

    make bench       # or: .venv/bin/python bench/salt_bench.py [--nodes 1000] [--repeat 5]
"""

import argparse
import json
import os
import subprocess
import sys

import apply_bench
import benchlib
import ipsec_status
from labkit import saltenv

NODE = "node-0000"
SALT_CALL = os.path.join(os.path.dirname(sys.executable), "salt-call")


class Node(benchlib.PlutoNode):
    """node-0000 in its namespace: a pluto, a masterless minion config."""

    def __init__(self, nodes):
        own = apply_bench.own_addresses()
        super().__init__("saltbench", [address + "/64" for address in own])
        with open(self.pluto.config_file, "w") as handle:
            handle.write("config setup\n\tuniqueids=no\n")
        self.pluto.start(timeout=60)
        pillar = apply_bench.make_pillar(nodes, "add")
        pillar["lookup"] = self.pluto.lookup()
        pillar_dir = os.path.join(self.workdir, "pillar")
        saltenv.write_pillar(pillar_dir, pillar)
        self.config_dir = saltenv.write_minion_config(
            os.path.join(self.workdir, "minion"), NODE, pillar_dir, saltenv.node_grains(own),
            root_dir=os.path.join(self.workdir, "salt-root"), log_level_logfile="quiet")

    def salt_call(self, *args, timeout=1800):
        """(seconds, parsed "local" return) of one salt-call in the namespace."""
        cmd = ["ip", "netns", "exec", self.ns.name, SALT_CALL, "--local", "-c", self.config_dir,
               "--out=json", "--retcode-passthrough"] + list(args)
        seconds, result = benchlib.wall(
            lambda: subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False))
        try:
            data = json.loads(result.stdout)["local"]
        except (ValueError, KeyError, TypeError):
            raise SystemExit("salt-call {} failed (rc {}):\n{}{}".format(
                " ".join(args), result.returncode, result.stdout[-3000:], result.stderr[-3000:]))
        if result.returncode != 0:
            raise SystemExit("salt-call {} rc {}: {}".format(" ".join(args), result.returncode,
                                                              json.dumps(data)[-3000:]))
        return seconds, data

    def loaded(self):
        """Conns pluto has loaded (the formula's own status parser)."""
        return len(ipsec_status.parse_status(self.pluto.status())["connections"])


def changed(states):
    return sorted(s.get("__id__", key) for key, s in states.items() if s.get("changes"))


def failed(states):
    return sorted(s.get("__id__", key) for key, s in states.items() if s.get("result") is not True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5, help="timed runs of each (interleaved)")
    parser.add_argument("--json", help="write the results here instead of bench/results/")
    args = parser.parse_args()

    node = Node(args.nodes)
    try:
        first, states = node.salt_call("state.apply", "ipsec")
        if failed(states):
            raise SystemExit("first state.apply failed: {}".format(failed(states)))
        conns = node.loaded()
        print("first state.apply (loads {} conns into an empty pluto): {:.1f} s, {} states, {} changed".format(
            conns, first, len(states), len(changed(states))), flush=True)
        # One untimed run of each: the first calls fill caches both share.
        node.salt_call("test.ping")
        node.salt_call("state.apply", "ipsec")
        pings, applies, state_count = [], [], 0
        for index in range(args.repeat):
            seconds, pong = node.salt_call("test.ping")
            assert pong is True, pong
            pings.append(seconds)
            seconds, states = node.salt_call("state.apply", "ipsec")
            assert not changed(states) and not failed(states), (changed(states), failed(states))
            applies.append(seconds)
            state_count = len(states)
            print("  run {}: test.ping {:.2f} s, state.apply (no change, {} states) {:.2f} s".format(
                index + 1, pings[-1], state_count, seconds), flush=True)
        assert node.loaded() == conns, "pluto lost conns during the no-change runs"
    finally:
        node.close()

    floor, apply = benchlib.median(pings), benchlib.median(applies)
    print()
    print("one node of a {}-node mesh, {} conns loaded in pluto (auto=add), median of {} interleaved runs".format(
        args.nodes, conns, args.repeat))
    print("{:<44} {:>9}  {}".format("salt-call --local", "seconds", "ratio"))
    print("{:<44} {:>9.2f}  {}".format("floor: test.ping (same minion config)", floor, "1.00x floor"))
    print("{:<44} {:>9.2f}  {:.2f}x floor".format("state.apply ipsec, nothing to change", apply,
                                                  benchlib.ratio(apply, floor)))
    print("{:<44} {:>9.2f}  (apply minus floor)".format("  the formula's own share", apply - floor))
    benchlib.save("salt_bench", {
        "nodes": args.nodes, "conns": conns, "states": state_count, "first_apply_s": first,
        "test_ping_s": pings, "state_apply_s": applies, "floor_s": floor, "apply_s": apply,
        "ratio": benchlib.ratio(apply, floor),
    }, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
