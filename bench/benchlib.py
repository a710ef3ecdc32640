"""What every benchmark here shares: timing, medians, ratios to a floor
measured in the same run, and the results file.

Machines (and the load on them) differ by 1.5x and more, so each figure is
stated as a ratio to a floor timed in the same run, interleaved with it
where the bench allows (the neighbours' load then weighs on both).
Results go to stdout and, as JSON, to bench/results/<name>-<UTC time>.json
(ignored by git).
"""

import datetime
import gc
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

from labkit import netns
from labkit.pluto import Pluto

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def median(values):
    return statistics.median(values) if values else float("nan")


def timed(function, repeat):
    """(best wall seconds, best CPU seconds, median wall, last result).

    CPU time is reported too: on a shared machine the wall clock also
    measures the neighbours.
    """
    walls, cpus, result = [], [], None
    for _ in range(repeat):
        gc.collect()
        start, start_cpu = time.perf_counter(), time.process_time()
        result = function()
        walls.append(time.perf_counter() - start)
        cpus.append(time.process_time() - start_cpu)
    return min(walls), min(cpus), median(walls), result


def wall(function):
    """(seconds, result) of one call."""
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def ratio(value, floor):
    return value / floor if floor else float("inf")


def context():
    """Where and when: stated with every result."""
    return {
        "python": sys.version.split()[0],
        "load_average": os.getloadavg()[0],
        "cpus": os.cpu_count(),
        "utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def save(name, results, path=None):
    """Write ``results`` (plus context()) as JSON; returns the path."""
    data = dict(results, context=context())
    if path is None:
        os.makedirs(RESULTS, exist_ok=True)
        path = os.path.join(RESULTS, "{}-{}.json".format(name, data["context"]["utc"].replace(":", "")))
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2)
    print("results: {}".format(path))
    return path


class PlutoNode:
    """A work dir, a network namespace holding ``addresses`` (CIDR form) and
    an isolated pluto rooted in the work dir (not started); close() removes
    all three, whatever state they are in."""

    def __init__(self, label, addresses):
        netns.sweep_stale()
        self.workdir = tempfile.mkdtemp(prefix="ipsec-{}-".format(label))
        self.ns = netns.Namespace(label)
        try:
            self.ns.add_stub(addresses)
            self.pluto = Pluto(os.path.join(self.workdir, "root"), self.ns.name)
        except BaseException:
            self.close()
            raise

    def close(self):
        try:
            if getattr(self, "pluto", None):
                self.pluto.stop()
        finally:
            self.ns.close()
            shutil.rmtree(self.workdir, ignore_errors=True)
