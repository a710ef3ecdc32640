"""Helpers for watching tunnels come up, shared by the tunnel tests, the
lab, its VM phases and the demo (no class: the nodes themselves are
labkit.mesh / labkit.lab / the tests' fixtures):

- ``wait_until(check, timeout)``: poll until something is true;
- ``in_parallel(*calls)``: run salt-calls of several nodes side by side;
- ``established_serials(status)``: the SA serials of a parsed status (the
  formula's own parser, ``ipsec_status.parse_status``);
- ``esp_available()``: what this machine can do (the Libreswan installs:
  labkit.libreswan).
"""

import functools
import ipaddress
import threading
import time

import ipsec_status

from labkit import netns


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

