"""Network namespaces and veth links for test nodes (cleaned up on close)."""

import itertools
import os
import subprocess

PREFIX = "ipft"
_counter = itertools.count()


def run(cmd, check=True, netns=None):
    if netns:
        cmd = ["ip", "netns", "exec", netns] + list(cmd)
    return subprocess.run(cmd, check=check, capture_output=True, text=True)


def list_namespaces():
    out = run(["ip", "netns", "list"], check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def sweep_stale():
    """Remove namespaces a killed earlier run of this harness left behind."""
    for name in list_namespaces():
        if name.startswith(PREFIX + "-"):
            pid = name.split("-")[1]
            if pid.isdigit() and not os.path.exists("/proc/" + pid):
                run(["ip", "netns", "del", name], check=False)


class Namespace:
    """One test host: a namespace with loopback up."""

    def __init__(self, label):
        self.name = "{}-{}-{}-{}".format(PREFIX, os.getpid(), next(_counter), label)[:40]
        run(["ip", "netns", "add", self.name])
        run(["ip", "-n", self.name, "link", "set", "lo", "up"])
        self._links = 0

    def exec(self, cmd, check=True):
        return run(cmd, check=check, netns=self.name)

    def add_stub(self, addresses):
        """Give the host addresses on a link of its own (a veth pair kept
        inside the namespace: the kernel here has no dummy driver)."""
        index = self._links
        self._links += 1
        a, b = "s{}a".format(index), "s{}b".format(index)
        run(["ip", "-n", self.name, "link", "add", a, "type", "veth", "peer", "name", b])
        for dev in (a, b):
            run(["ip", "-n", self.name, "link", "set", dev, "up"])
        for address in addresses:
            self.add_address(a, address)
        return a

    def add_address(self, dev, address):
        cmd = ["ip", "-n", self.name, "addr", "add", address, "dev", dev]
        if ":" in address:
            cmd.append("nodad")
        run(cmd)

    def close(self):
        run(["ip", "netns", "del", self.name], check=False)


def link(ns_a, ns_b, addresses_a, addresses_b):
    """A veth pair between two namespaces with the given addresses (CIDR form)."""
    index = next(_counter)
    a, b = "l{}a".format(index), "l{}b".format(index)
    run(["ip", "link", "add", a, "netns", ns_a.name, "type", "veth", "peer", "name", b, "netns", ns_b.name])
    for ns, dev, addresses in ((ns_a, a, addresses_a), (ns_b, b, addresses_b)):
        run(["ip", "-n", ns.name, "link", "set", dev, "up"])
        for address in addresses:
            ns.add_address(dev, address)
    return a, b
