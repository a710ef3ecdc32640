#!/usr/bin/env python3
"""Benchmark (issue 6): hitless apply into a real pluto vs the restart approach.

A real, isolated pluto (test/labkit) runs in a network namespace holding
this node's addresses; its peers are addresses nobody holds, so nothing
answers and nothing leaves the namespace. The formula's code runs
in-process through Salt's loader (ipsec_pluto, ipsec.lookup, cmd.run_all,
the _utils), as a state would call it.

(a) plan + render for 10/100/1000 nodes x 4 networks (bench/plan_bench.py).
(b) full apply of ~4000 conns (1000 nodes x 4 IPv6 networks + VIPs) into
    an empty pluto: render + loaded + diff + checkconfig + write + one
    batched ``ipsec_pluto.add`` (no initiation), against the floor measured
    in the same run: one bare ``ipsec addconn NAME...`` of the same config
    into an empty pluto. Target: <= 2x the floor.
(c) one changed conn in the 4000-conn pluto: render + loaded() + diff +
    checkconfig of the changed file + write + add, and the number of conns
    touched in pluto (counted in pluto's log). Target: 1.
(d) the restart approach on the same config: shut pluto down, start it
    again, time until it has loaded all conns again (pluto's log; confirmed
    with ``ipsec_pluto.loaded()``).

Conns are planned with ``auto=add`` by default (``--auto start`` for the
plan's own value): the numbers are about loading; with auto=start a
restarted pluto would also initiate every conn at once (and, with real
peers, every tunnel renegotiates), while the hitless apply initiates only
the conns it added or replaced.

    .venv/bin/python bench/apply_bench.py [--nodes 1000] [--repeat 3] [--json out.json]
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time

import benchlib
import ipsec_plan
import ipsec_reconcile
import ipsec_render
import plan_bench
from labkit import loader
from labkit.pluto import IPSEC

PSK = plan_bench.PSK
NETWORKS = ("internal_api", "storage", "storage_mgmt", "tenant")
ADDED = "added IKEv2 connection"


def make_pillar(nodes, auto):
    """nodes x 4 IPv6 networks (2001:db8:N::/64), VIPs on two of them."""
    networks = {name: {"cidr": "2001:db8:{}::/64".format(i + 1)} for i, name in enumerate(NETWORKS)}
    networks["internal_api"]["vip"] = "2001:db8:1::ffff"
    networks["storage"]["vip"] = "2001:db8:2::ffff"
    inventory = {
        "node-{:04d}".format(i): {"addresses": {
            name: "2001:db8:{}::{:x}".format(j + 1, i + 1) for j, name in enumerate(NETWORKS)}}
        for i in range(nodes)
    }
    pillar = {"psk": PSK, "networks": networks, "nodes": inventory, "cluster": {"nodes": ["node-0000"]},
              "firewall": {"manage": False}}
    if auto != "start":
        pillar["conn_options"] = {"auto": auto}
    return pillar


def own_addresses():
    return ["2001:db8:{}::1".format(j + 1) for j in range(len(NETWORKS))]


def read_files(paths):
    found = {}
    for path in paths:
        try:
            with open(path, encoding="utf-8") as handle:
                found[path] = handle.read()
        except FileNotFoundError:
            found[path] = None
    return found


def write_atomic(path, text, mode):
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".ipsec-formula-")
    os.fchmod(fd, int(mode, 8))
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(tmp, path)


def hitless_apply(mods, plan, timings, check_all=False, initiate=True):
    """What the state should do, in this order; returns the diff.

    render -> loaded -> diff -> checkconfig (changed conf files) -> write ->
    rereadsecrets (if changed) -> delete -> add (one addconn: new + changed)
    -> initiate (auto=start among them).
    """
    def lap(key, start):
        timings[key] = timings.get(key, 0.0) + time.perf_counter() - start
        return time.perf_counter()

    t = time.perf_counter()
    new = ipsec_render.render_files(plan, PSK)
    t = lap("render", t)
    old = read_files(new)
    live = mods["ipsec_pluto.loaded"]()
    t = lap("loaded", t)
    changes = ipsec_reconcile.diff(old, new, loaded=live)
    t = lap("diff", t)
    to_check = {p: new[p] for p in (new if check_all else changes["files"]["write"]) if p.endswith(".conf")}
    problems = mods["ipsec_pluto.checkconfig"](to_check) if to_check else []
    if problems:
        raise SystemExit("checkconfig: {}".format(problems[:3]))
    t = lap("checkconfig", t)
    for path in changes["files"]["write"]:
        write_atomic(path, new[path], plan["files"][path]["mode"])
    t = lap("write", t)
    if changes["secrets_changed"]:
        mods["ipsec_pluto.rereadsecrets"]()
    if changes["delete"]:
        mods["ipsec_pluto.delete"](changes["delete"])
    if changes["add"] or changes["replace"]:
        mods["ipsec_pluto.add"](changes["add"] + changes["replace"])
    t = lap("pluto", t)
    if changes["start"] and initiate:
        mods["ipsec_pluto.initiate"](changes["start"])
    lap("initiate", t)
    return changes


class Bench(benchlib.PlutoNode):
    def __init__(self, nodes, auto):
        super().__init__("bench", [address + "/64" for address in own_addresses()])
        self.mods = loader.minion_modules({"ipsec": {"lookup": self.pluto.lookup()}},
                                          opts={"root_dir": os.path.join(self.workdir, "salt")})
        self.pillar = make_pillar(nodes, auto)
        self.plan = ipsec_plan.build_plan(self.pillar, "node-0000", own_addresses(), cluster_node=True,
                                          config_dir=self.pluto.config_dir)
        self.names = list(self.plan["connections"])
        with open(self.pluto.secrets_file, "w") as handle:
            handle.write("include {}/*.secrets\n".format(self.pluto.config_dir))

    def write_main_config(self, include):
        with open(self.pluto.config_file, "w") as handle:
            handle.write("config setup\n\tuniqueids=no\n\n")
            if include:
                handle.write("include {}/*.conf\n".format(self.pluto.config_dir))

    def clear_files(self):
        for name in os.listdir(self.pluto.config_dir):
            os.unlink(os.path.join(self.pluto.config_dir, name))

    def start_empty(self):
        """A fresh pluto with no conns loaded, the main config including the
        formula's files again once it is up."""
        self.pluto.stop()
        self.write_main_config(include=False)
        self.pluto.start(timeout=120)
        self.write_main_config(include=True)
        return len(self.pluto.log())

    def added_in_log(self, since=0):
        return self.pluto.log()[since:].count(ADDED)

    def floor(self):
        """Bare batched addconn of the whole config into an empty pluto."""
        self.clear_files()
        for path, text in ipsec_render.render_files(self.plan, PSK).items():
            write_atomic(path, text, self.plan["files"][path]["mode"])
        since = self.start_empty()
        # Same namespace as the module's calls (the host's): the control
        # socket is a path, reachable from outside the pluto's namespace.
        cmd = [IPSEC, "addconn", "--config", self.pluto.config_file, "--ctlsocket", self.pluto.ctlsocket] + self.names
        start = time.perf_counter()
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        elapsed = time.perf_counter() - start
        assert self.added_in_log(since) == len(self.names), "floor: not every conn was added"
        return elapsed

    def full_apply(self):
        self.clear_files()
        since = self.start_empty()
        timings = {}
        start = time.perf_counter()
        # Without initiating (--auto start): one whack per conn, and on this
        # machine a pluto with thousands of half-open IKE SAs toward silent
        # peers answers whack only every ~2 s.
        changes = hitless_apply(self.mods, self.plan, timings, check_all=True, initiate=False)
        elapsed = time.perf_counter() - start
        assert len(changes["add"]) == len(self.names)
        assert self.added_in_log(since) == len(self.names)
        return elapsed, timings

    def one_change(self, index):
        """Change one keyword of one conn, apply; (seconds, touched, timings)."""
        name = self.names[(index * 997) % len(self.names)]
        keywords = self.plan["connections"][name]["keywords"]
        keywords["ikelifetime"] = "{}h".format(2 + index)
        log_before = self.pluto.log()
        timings = {}
        start = time.perf_counter()
        changes = hitless_apply(self.mods, self.plan, timings)
        elapsed = time.perf_counter() - start
        told = self.pluto.log()[len(log_before):]
        touched_plan = len(changes["add"]) + len(changes["replace"]) + len(changes["delete"])
        touched_pluto = told.count(ADDED) + told.count("terminating SAs using this connection") \
            - told.count('"{}": terminating SAs'.format(name))
        assert changes["replace"] == [name], changes
        return elapsed, touched_plan, touched_pluto, timings

    def restart(self):
        """Shut pluto down and start it on the same config: (until log shows
        every conn loaded, until loaded() confirms)."""
        start = time.perf_counter()
        self.pluto.stop()
        os.unlink(self.pluto.logfile)
        self.pluto.start(timeout=120)
        total = len(self.names)
        while self.added_in_log() < total:
            time.sleep(0.02)
        logged = time.perf_counter() - start
        while len(self.mods["ipsec_pluto.loaded"]()) < total:
            time.sleep(0.05)
        confirmed = time.perf_counter() - start
        return logged, confirmed


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--nodes", type=int, default=1000, help="cluster size for (b)-(d) (default 1000)")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions of (b), (d); (c) runs 2x as many")
    parser.add_argument("--plan-sizes", default="10,100,1000")
    parser.add_argument("--auto", default="add", choices=("add", "start"))
    parser.add_argument("--json", help="write the results here instead of bench/results/")
    args = parser.parse_args()
    results = {"plan": [], "auto": args.auto}

    print("(a) plan + render, one node of N nodes x 4 networks (median of {})".format(args.repeat))
    print("{:>6} {:>8} {:>10} {:>10}".format("nodes", "conns", "plan s", "render s"))
    for nodes in (int(n) for n in args.plan_sizes.split(",")):
        conns, plan_s, render_s, _ = plan_bench.measure(nodes, args.repeat)
        results["plan"].append({"nodes": nodes, "conns": conns, "plan_s": plan_s, "render_s": render_s})
        print("{:>6} {:>8} {:>10.4f} {:>10.4f}".format(nodes, conns, plan_s, render_s))

    bench = Bench(args.nodes, args.auto)
    try:
        count = len(bench.names)
        floors, applies, apply_timings = [], [], []
        for _ in range(args.repeat):
            floors.append(bench.floor())
            seconds, timings = bench.full_apply()
            applies.append(seconds)
            apply_timings.append(timings)
        changes, change_timings = [], []
        for index in range(2 * args.repeat):
            seconds, touched_plan, touched_pluto, timings = bench.one_change(index)
            changes.append((seconds, touched_plan, touched_pluto))
            change_timings.append(timings)
        restarts = [bench.restart() for _ in range(args.repeat)]
        assert bench.mods["ipsec_pluto.loaded"]() == sorted(bench.names)
    finally:
        bench.close()

    floor = benchlib.median(floors)
    full = benchlib.median(applies)
    one = benchlib.median([c[0] for c in changes])
    touched = max(max(c[1], c[2]) for c in changes)
    restart_log = benchlib.median([r[0] for r in restarts])
    restart_confirmed = benchlib.median([r[1] for r in restarts])

    def breakdown(runs):
        keys = ("render", "loaded", "diff", "checkconfig", "write", "pluto", "initiate")
        return ", ".join("{} {:.3f}".format(k, benchlib.median([r.get(k, 0.0) for r in runs])) for k in keys)

    print()
    print("pluto: Libreswan in namespace {}, {} conns (auto={}), median of {} runs ((c): {})".format(
        "bench", count, args.auto, args.repeat, len(changes)))
    rows = [
        ("(b) floor: one bare batched addconn, {} conns".format(count), floor, count, ""),
        ("(b) full apply into empty pluto", full, count, "target <= 2x floor"),
        ("(c) one changed conn, hitless", one, touched, "target: 1 conn touched"),
        ("(d) restart: all loaded (pluto log)", restart_log, count, "{:.1f}x (c)".format(restart_log / one)),
        ("(d) restart: confirmed by loaded()", restart_confirmed, count,
         "{:.1f}x (c)".format(restart_confirmed / one)),
    ]
    width = max(len(r[0]) for r in rows)
    print("{:<{w}} {:>9} {:>8} {:>10}  {}".format("step", "seconds", "touched", "/ floor", "", w=width))
    for label, seconds, conns, note in rows:
        print("{:<{w}} {:>9.3f} {:>8} {:>9.2f}x  {}".format(
            label, seconds, conns, benchlib.ratio(seconds, floor), note, w=width))
    print("/ floor: seconds divided by the floor's, both medians of this run")
    print("touched: conns pluto deleted/added (the restart tears down every SA of every conn)")
    print()
    print("(b) full apply breakdown (s): " + breakdown(apply_timings))
    print("(c) one change breakdown (s): " + breakdown(change_timings))
    print("(c) touched per run (plan diff / pluto log): " + ", ".join(
        "{}/{}".format(c[1], c[2]) for c in changes))

    results.update({
        "conns": count, "floor_median_s": floor, "full_apply_ratio": benchlib.ratio(full, floor),
        "one_change_ratio": benchlib.ratio(one, floor), "restart_ratio": benchlib.ratio(restart_log, floor),
        "floor_s": floors, "full_apply_s": applies, "one_change_s": [c[0] for c in changes],
        "touched": [[c[1], c[2]] for c in changes], "restart_log_s": [r[0] for r in restarts],
        "restart_loaded_s": [r[1] for r in restarts], "full_apply_breakdown": apply_timings,
        "one_change_breakdown": change_timings,
    })
    benchlib.save("apply_bench", results, args.json)
    ok = full <= 2 * floor and touched == 1
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
