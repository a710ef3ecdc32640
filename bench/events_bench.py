#!/usr/bin/env python3
"""Benchmark (issue 18): the ipsec beacon's cost per interval with ~4000 conns.

A real, isolated pluto (test/labkit) in a network namespace loads the plan
of one node of a 1000-node cluster x 4 IPv6 networks (bench/apply_bench.py's
setup, conns loaded with one ``ipsec addconn``, planned ``auto=start`` but
not initiated: nothing answers, so every tunnel is down, the beacon's worst
case). The formula's code runs in-process through Salt's loader, as the
minion runs the beacon: ``ipsec_events.tick`` (whack --status, parse,
verify against the cached plan, debounce, events; with ``textfile`` also
--trafficstatus and the metrics file).

Floor, measured in the same run: one bare ``ipsec whack --status`` of the
same pluto (the text the beacon has to read anyway).

    .venv/bin/python bench/events_bench.py [--nodes 1000] [--repeat 5]
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

import apply_bench  # bench/ (the script's folder); labkit and _utils: make pth
from labkit import loader
from labkit.pluto import IPSEC


def timed(function):
    start, cpu = time.perf_counter(), time.process_time()
    result = function()
    return time.perf_counter() - start, time.process_time() - cpu, result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--debounce", type=int, default=2)
    args = parser.parse_args()

    bench = apply_bench.Bench(args.nodes, "start")
    try:
        bench.floor()  # every conn loaded, none initiated
        pillar = dict(bench.pillar, lookup=bench.pluto.lookup())
        mods = loader.minion_modules({"ipsec": pillar}, grains={"ipv6": apply_bench.own_addresses()},
                                     node_id="node-0000",
                                     opts={"root_dir": os.path.join(bench.workdir, "salt-events")})
        config = [{"debounce": args.debounce}, {"level": "child"}, {"plan_ttl": 300}, {"max_events": 100}]
        prom = os.path.join(tempfile.mkdtemp(dir=bench.workdir), "ipsec.prom")
        memory = {}
        whack = [IPSEC, "whack", "--ctlsocket", bench.pluto.ctlsocket, "--status"]
        floors, first, steady, storm, metrics = [], None, [], None, []
        for index in range(args.repeat):
            floors.append(timed(lambda: subprocess.run(whack, capture_output=True, check=True))[0])
        first = timed(lambda: mods["ipsec_events.tick"](config, memory))
        events_per_tick = [len(first[2])]
        for index in range(max(args.repeat, args.debounce + 1)):
            wall, cpu, events = timed(lambda: mods["ipsec_events.tick"](config, memory))
            events_per_tick.append(len(events))
            if events:
                storm = (wall, cpu, events)
            else:
                steady.append((wall, cpu))
        with_file = config + [{"textfile": prom}]
        for index in range(args.repeat):
            metrics.append(timed(lambda: mods["ipsec_events.tick"](with_file, memory))[:2])
        rows = len(memory["tunnels"])
        loaded = len(mods["ipsec_pluto.loaded"]())
        size = os.path.getsize(prom)
    finally:
        bench.close()

    floor = statistics.median(floors)

    def line(label, wall, cpu):
        print("{:<52} {:>8.3f} {:>8.3f} {:>8.1f}x".format(label, wall, cpu, wall / floor))

    print("ipsec beacon, one node of {} nodes x 4 networks: {} conns loaded in pluto, {} tunnels watched "
          "(all down: nothing answers), load average {:.2f}".format(args.nodes, loaded, rows, os.getloadavg()[0]))
    print("{:<52} {:>8} {:>8} {:>9}".format("per interval", "wall s", "CPU s", "ratio"))
    line("floor: bare `ipsec whack --status` (median)", floor, 0.0)
    line("first interval (builds the plan)", first[0], first[1])
    line("steady interval, no event (median of {})".format(len(steady)),
         statistics.median(w for w, _ in steady), statistics.median(c for _, c in steady))
    if storm:
        line("interval firing {} events (cap 100 + summary)".format(len(storm[2])), storm[0], storm[1])
    line("steady interval + --trafficstatus + textfile (median)",
         statistics.median(w for w, _ in metrics), statistics.median(c for _, c in metrics))
    print("events per interval: {}; metrics file {} bytes".format(events_per_tick, size))
    return 0


if __name__ == "__main__":
    sys.exit(main())
