"""Tunnels between formula nodes in network namespaces, for verify tests.

A lab node is a namespace holding the node's addresses (and, on the VIP
holder, the VIP addresses), an isolated pluto on the node's temp root, and a
salt-call --local minion whose pillar points the formula at that root.
Nodes are linked by one veth pair per pair of nodes; everything stays in
documentation ranges.
"""

import functools
import ipaddress
import threading
import time

from labkit import examples, netns

PREFIX_LENGTHS = {
    name: ipaddress.ip_network(net["cidr"]).prefixlen for name, net in examples.NETWORKS.items()
}
VIP_CIDRS = ["198.51.100.100/32", "198.51.100.101/32", "203.0.113.100/32"]


def node_cidrs(addresses, vips=False):
    """The node's addresses in CIDR form (its network's prefix length)."""
    cidrs = ["{}/{}".format(address, PREFIX_LENGTHS[net]) for net, address in sorted(addresses.items())]
    return cidrs + (list(VIP_CIDRS) if vips else [])


def wait_until(check, timeout, interval=0.2, what="condition"):
    """Poll ``check()`` until it returns something truthy; return it.

    Fails with the last value seen after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    value = None
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError("{} not reached within {}s; last: {!r}".format(what, timeout, value))
        time.sleep(interval)


def in_parallel(*calls):
    """Run argument-less callables in threads; their results in order.

    salt-call spends most of its time starting up: two nodes' calls side by
    side take little longer than one.
    """
    results = [None] * len(calls)
    errors = []

    def run(index, call):
        try:
            results[index] = call()
        except BaseException as exc:  # pylint: disable=broad-except
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i, call)) for i, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results


def established_serials(status):
    """{conn: {"ike": [serials], "child": [serials]}} of the conns with an
    established SA, from a parsed status (``ipsec_status.parse_status`` or
    ``ipsec.status``; VIP server instances are ``name[N]``). A
    renegotiated SA gets a new serial."""
    out = {}
    for name, conn in status["connections"].items():
        ike = sorted(sa["serial"] for sa in conn["ike_sas"] if sa["established"])
        child = sorted(sa["serial"] for sa in conn["child_sas"] if sa["established"])
        if ike or child:
            out[name] = {"ike": ike, "child": child}
    return out


@functools.lru_cache(maxsize=None)
def esp_available():
    """Whether this kernel can install an ESP SA (AES-GCM, the formula's
    default), probed in a throwaway namespace. The machines this suite was
    written on have no ESP: Child SAs cannot be installed there."""
    ns = netns.Namespace("esp")
    try:
        probe = ns.exec([
            "ip", "xfrm", "state", "add", "src", "198.51.100.1", "dst", "198.51.100.2",
            "proto", "esp", "spi", "0x1000", "reqid", "1", "mode", "tunnel",
            "aead", "rfc4106(gcm(aes))", "0x" + "11" * 20, "128",
        ], check=False)
        return probe.returncode == 0
    finally:
        ns.close()

