#!/usr/bin/env python3
"""Benchmark of ipsec_status.parse_status as a ratio to pluto's own
``whack --status`` printing the same conns, timed in the same run.

The floor: a real, isolated pluto (test/labkit) in a network namespace
with N conns of the formula's own plan loaded (one node of an N/4-node
inventory on 4 networks, auto=add: nothing is sent), ``whack --status``
timed. Against it:
- the parse of that very output (what ``ipsec.status`` does after whack);
- the parse of a generated status of N conns that all have an established
  IKE SA and Child SA (the 4.10 layout: ~23 lines per conn plus the SA and
  SPI/traffic lines; this kernel has no ESP, so a real pluto here cannot
  show them), with and without the matching ``--trafficstatus``.
Not a test: it prints a table and writes bench/results/status_bench-*.json.

    make bench     # or: .venv/bin/python bench/status_bench.py [--connections 10000] [--repeat 5]
"""

import argparse
import os
import sys

import apply_bench
import benchlib
import ipsec_status

HEAD = """000 using kernel interface: xfrm
000  
000 interface lo UDP [::1]:500
000 interface lo UDP 127.0.0.1:500
000 interface eth1 UDP 198.51.100.1:4500
000 interface eth1 UDP 198.51.100.1:500
000  
000 fips mode=disabled;
000 config setup options:
000  
000 configdir=/etc, configfile=/etc/ipsec.conf, secrets=/etc/ipsec.secrets, ipsecdir=/etc/ipsec.d
000 pluto_version=4.10, pluto_vendorid=OE-Libreswan-4.10, audit-log=yes
000  
000 Connection list:
000  
"""

CONN = """000 "{n}": 198.51.100.1...{peer}; erouted; eroute owner: #{child}
000 "{n}":     oriented; my_ip=unset; their_ip=unset; my_updown=ipsec _updown;
000 "{n}":   xauth us:none, xauth them:none,  my_username=[any]; their_username=[any]
000 "{n}":   our auth:secret, their auth:secret, our autheap:none, their autheap:none;
000 "{n}":   modecfg info: us:none, them:none, modecfg policy:push, dns:unset, domains:unset, cat:unset;
000 "{n}":   sec_label:unset;
000 "{n}":   ike_life: 28800s; ipsec_life: 28800s; ipsec_max_bytes: 2^63B; ipsec_max_packets: 2^63; replay_window: 128; rekey_margin: 540s; rekey_fuzz: 100%; keyingtries: 0;
000 "{n}":   retransmit-interval: 500ms; retransmit-timeout: 2s; iketcp:no; iketcp-port:4500;
000 "{n}":   initial-contact:no; cisco-unity:no; fake-strongswan:no; send-vendorid:no; send-no-esp-tfc:no;
000 "{n}":   policy: IKEv2+PSK+ENCRYPT+TUNNEL+PFS+UP+IKE_FRAG_ALLOW+ESN_NO+ESN_YES+failureDROP;
000 "{n}":   v2-auth-hash-policy: none;
000 "{n}":   conn_prio: 32,32; interface: eth1; metric: 0; mtu: unset; sa_prio:auto; sa_tfc:none;
000 "{n}":   nflog-group: unset; mark: unset; vti-iface:unset; vti-routing:no; vti-shared:no; nic-offload:auto;
000 "{n}":   our idtype: ID_IPV4_ADDR; our id=198.51.100.1; their idtype: ID_IPV4_ADDR; their id={peer}
000 "{n}":   liveness: passive; dpdaction:hold; dpddelay:0s; retransmit-timeout:2s
000 "{n}":   nat-traversal: encaps:auto; keepalive:20s
000 "{n}":   newest IKE SA: #{ike}; newest IPsec SA: #{child}; conn serial: ${serial};
000 "{n}":   IKEv2 algorithm newest: AES_GCM_16_256-HMAC_SHA2_512-MODP2048
000 "{n}":   ESP algorithms: AES_GCM_16_128-NONE
000 "{n}":   ESP algorithm newest: AES_GCM_16_128-NONE; pfsgroup=<Phase1>
"""

STATES = """000 #{ike}: "{n}":500 STATE_V2_ESTABLISHED_IKE_SA (established IKE SA); REKEY in 28522s; REPLACE in 28792s; newest; idle;
000 #{child}: "{n}":500 STATE_V2_ESTABLISHED_CHILD_SA (established Child SA); REKEY in 28522s; REPLACE in 28792s; newest; eroute owner; IKE SA #{ike}; idle;
000 #{child}: "{n}" esp.{spi_out:08x}@{peer} esp.{spi_in:08x}@198.51.100.1 tun.0@{peer} tun.0@198.51.100.1 Traffic: ESPin=84KB ESPout=1MB ESPmax=2^63B
"""

TRAFFIC = """006 #{child}: "{n}", type=ESP, add_time=1795708793, inBytes={inb}, outBytes={outb}, maxBytes=2^63B, id='{peer}'
"""


def generate(count):
    conns, states, traffic = [HEAD], [], []
    for index in range(count):
        peer = "198.{}.{}.{}".format(18 + index // 65536 % 2, index // 256 % 256, index % 256)  # RFC 2544
        values = {
            "n": "overcloud-internal_api-198.51.100.1-{}".format(peer),
            "peer": peer,
            "ike": 2 * index + 1,
            "child": 2 * index + 2,
            "serial": index + 1,
            "spi_out": 0x10000000 + index,
            "spi_in": 0x20000000 + index,
            "inb": 86016 + index,
            "outb": 1048576 + index,
        }
        conns.append(CONN.format(**values))
        states.append(STATES.format(**values))
        traffic.append(TRAFFIC.format(**values))
    tail = [
        "000  \n",
        "000 Total IPsec connections: loaded {0}, active {0}\n".format(count),
        "000  \n",
        "000 State Information: DDoS cookies not required, Accepting new IKE connections\n",
        "000 IKE SAs: total({0}), half-open(0), open(0), authenticated({0}), anonymous(0)\n".format(count),
        "000 IPsec SAs: total({0}), authenticated({0}), anonymous(0)\n".format(count),
        "000  \n",
    ]
    return "".join(conns + tail + states + ["000  \n000 Bare Shunt list:\n000  \n"]), "".join(traffic)


def pluto_floor(connections, repeat):
    """(whack --status seconds: best, median; its text) for a real pluto
    holding ``connections`` conns of the formula's plan."""
    bench = apply_bench.Bench(connections // 4 + 1, "add")
    try:
        bench.names = bench.names[:connections]
        bench.floor()
        best, _, median, text = benchlib.timed(bench.pluto.status, repeat)
        return best, median, text
    finally:
        bench.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=10000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", help="write the results here instead of bench/results/")
    args = parser.parse_args()

    floor, floor_median, real = pluto_floor(args.connections, args.repeat)
    status, traffic = generate(args.connections)
    rows = [("floor: whack --status (real pluto)", real, floor, None, floor_median)]
    best, cpu, median, parsed = benchlib.timed(lambda: ipsec_status.parse_status(real), args.repeat)
    assert len(parsed["connections"]) == args.connections, len(parsed["connections"])
    rows.append(("parse of that output", real, best, cpu, median))
    best, cpu, median, parsed = benchlib.timed(lambda: ipsec_status.parse_status(status), args.repeat)
    assert len(parsed["connections"]) == args.connections, len(parsed["connections"])
    assert all(c["child_sas"][0]["established"] for c in parsed["connections"].values())
    rows.append(("parse, every SA established", status, best, cpu, median))
    best, cpu, median, parsed = benchlib.timed(lambda: ipsec_status.parse_status(status, traffic), args.repeat)
    assert all(c["child_sas"][0]["bytes_exact"] for c in parsed["connections"].values())
    rows.append(("  + trafficstatus", status + traffic, best, cpu, median))

    print("parse_status vs whack --status, {} connections, best of {} runs (Python {}, load average {:.2f})".format(
        args.connections, args.repeat, sys.version.split()[0], os.getloadavg()[0]))
    print("{:<36} {:>8} {:>6} {:>10} {:>10} {:>12} {:>11}".format(
        "step", "lines", "MB", "best wall", "best CPU", "median wall", "ratio"))
    results = {"connections": args.connections, "repeat": args.repeat, "rows": []}
    for label, text, best, cpu, median in rows:
        print("{:<36} {:>8} {:>6.1f} {:>9.3f}s {:>10} {:>11.3f}s {:>10.2f}x".format(
            label, text.count("\n"), len(text) / 1e6, best, "-" if cpu is None else "{:.3f}s".format(cpu),
            median, benchlib.ratio(best, floor)))
        results["rows"].append({"step": label.strip(), "lines": text.count("\n"), "bytes": len(text),
                                "best_s": best, "cpu_s": cpu, "median_s": median,
                                "ratio": benchlib.ratio(best, floor)})
    print("ratio: best wall / best wall of the floor")
    benchlib.save("status_bench", results, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
