"""The traffic level's probe round (_utils/ipsec_probe.py) with real raw
sockets between two namespaces (plain: no IPsec here; through ESP: the
lab's VM phase)."""

import json
import subprocess
import sys

from labkit import netns

PROBE = ("import json, sys, ipsec_probe; "
         "out = ipsec_probe.probe([tuple(p) for p in json.load(sys.stdin)], float(sys.argv[1])); "
         "print(json.dumps([[list(k), v] for k, v in out.items()]))")


def probe_in(ns, pairs, timeout):
    done = subprocess.run(["ip", "netns", "exec", ns.name, sys.executable, "-c", PROBE, str(timeout)],
                          input=json.dumps(pairs), capture_output=True, text=True, check=True, timeout=60)
    return {tuple(pair): result for pair, result in json.loads(done.stdout)}


def test_one_round_answers_who_answers_and_waits_no_longer_than_the_timeout(namespace_factory):
    a, b = namespace_factory("pra"), namespace_factory("prb")
    netns.link(a, b, ["198.51.100.1/24", "2001:db8:7::1/64"], ["198.51.100.2/24", "2001:db8:7::2/64"])
    # b drops echo requests to its second address: a tunnel whose reply never comes.
    b.add_address("lo", "198.51.100.3/32")
    a.exec(["ip", "route", "add", "198.51.100.3/32", "via", "198.51.100.2"])
    b.exec(["nft", "add table inet probe_test"])
    b.exec(["nft", "add chain inet probe_test input { type filter hook input priority 0 ; }"])
    b.exec(["nft", "add rule inet probe_test input ip daddr 198.51.100.3 drop"])
    pairs = [("198.51.100.1", "198.51.100.2"), ("2001:db8:7::1", "2001:db8:7::2"),
             ("198.51.100.1", "198.51.100.3"), ("198.51.100.9", "198.51.100.2")]
    result = probe_in(a, pairs, 2.5)
    assert result[pairs[0]] == {"sent": 1, "answered": True, "error": None}
    assert result[pairs[1]]["answered"] is True and result[pairs[1]]["error"] is None
    # Unanswered: sent again once a second until the timeout.
    assert result[pairs[2]]["answered"] is False and result[pairs[2]]["sent"] == 3, result[pairs[2]]
    assert result[pairs[3]] == {"sent": 0, "answered": False,
                                "error": "cannot send from 198.51.100.9: [Errno 99] Cannot assign requested address"}
