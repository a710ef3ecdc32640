"""The lab (labkit.lab) with the formula's events switched on: the ``ipsec``
beacon on every minion (pillar ``ipsec:beacon``, applied through the master
with ``state.apply ipsec.beacon``), the metrics textfile in each node's own
directory, the shipped reactor in the master's config, and a listener on the
master's event bus (``EventTrail``: ``salt-run state.event`` in the
master's namespace, every event kept with the time it arrived).
"""

import json
import os
import subprocess
import threading
import time

from labkit.lab import BIN, Lab

REACTOR = "salt://ipsec/files/reactor/tunnel-down.sls"
BEACON_TAG = "salt/beacon/{}/ipsec/"


class EventTrail:
    """Every event on the master's bus from now on: [(monotonic time, tag, data)]."""

    def __init__(self, lab):
        self.events = []
        self.lock = threading.Lock()
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.process = subprocess.Popen(
            ["ip", "netns", "exec", lab.switch.name, os.path.join(BIN, "salt-run"), "-c", lab.master_dir,
             "state.event", "count=-1", "pretty=False"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        for line in self.process.stdout:
            tag, _, body = line.rstrip("\n").partition("\t")
            try:
                data = json.loads(body) if body else {}
            except ValueError:
                data = {"_raw": body}
            with self.lock:
                self.events.append((time.monotonic(), tag, data))

    def mark(self):
        with self.lock:
            return len(self.events)

    def since(self, mark=0, prefix=""):
        with self.lock:
            return [event for event in self.events[mark:] if event[1].startswith(prefix)]

    def beacon_events(self, mark=0, node="*"):
        """(time, node, tail, data) of the ipsec beacon's events since mark
        (tail: "tunnel/down", "pluto/up", ...)."""
        out = []
        for when, tag, data in self.since(mark, "salt/beacon/"):
            parts = tag.split("/")
            if len(parts) >= 5 and parts[3] == "ipsec" and node in ("*", parts[2]):
                out.append((when, parts[2], "/".join(p for p in parts[4:] if p), data))
        return out

    def wait_listening(self, lab, timeout=30):
        """Until the listener sees an event (one fired for it)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            lab.salt("controller-0", "event.send", "ipsec-lab/listening")
            if self.since(0, "ipsec-lab/listening"):
                return True
            time.sleep(1)
        return False

    def close(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


class EventLab(Lab):
    """Lab with pillar ``ipsec:beacon`` / ``ipsec:metrics`` and the
    reactor. ``beacon``: the pillar's beacon settings; ``reactor``: the
    master's ``ipsec_reactor`` settings."""

    def __init__(self, beacon, reactor, **kw):
        super().__init__(**kw)
        self.beacon = dict(beacon, enabled=True)
        self.master_options = {
            "reactor": [{BEACON_TAG.format("*") + "tunnel/down": [REACTOR]}],
            "ipsec_reactor": dict(reactor),
        }
        self.trail = None

    def prom_dir(self, node_id):
        return os.path.join(self.nodes[node_id].root, "prom")

    def prom_file(self, node_id):
        return os.path.join(self.prom_dir(node_id), "ipsec.prom")

    def write_pillar(self, common, per_node=None):
        common["ipsec"]["beacon"] = dict(self.beacon)
        common["ipsec"]["metrics"] = {"enabled": True}

        def own(node):
            data = per_node(node) if per_node else {}
            # Every minion shares this host's file system: a directory each.
            data.setdefault("ipsec", {})["metrics"] = {"directory": self.prom_dir(node.id)}
            return data

        super().write_pillar(common, own)

    def start_salt(self, timeout=90):
        super().start_salt(timeout)
        self.trail = EventTrail(self)
        if not self.trail.wait_listening(self):
            raise RuntimeError("the event listener saw nothing on the master's bus")

    def enable_beacon(self):
        """``state.apply ipsec.beacon`` through the master; its result per node."""
        rc, data = self.salt("*", "state.apply", "ipsec.beacon")
        if rc != 0 or set(data or {}) != set(self.nodes):
            raise RuntimeError("state.apply ipsec.beacon failed (rc={}): {}".format(rc, json.dumps(data)[:3000]))
        return data

    def close(self):
        if self.trail is not None:
            self.trail.close()
        super().close()
