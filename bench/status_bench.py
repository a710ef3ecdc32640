#!/usr/bin/env python3
"""Benchmark of ipsec_status.parse_status on a generated big status.

Generates a Libreswan 4.x-style ``ipsec whack --status`` (the 4.10 layout of
test/../reference samples: ~23 lines per connection, an established IKE SA,
an established Child SA and its SPI/traffic line per connection) plus the
matching ``--trafficstatus``, then times the parse. Not a test: it prints a
table. Target: 10,000 connections in < 0.5 s.

    .venv/bin/python bench/status_bench.py [--connections 10000] [--repeat 5]
"""

import argparse
import gc
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "_utils"))

import ipsec_status  # noqa: E402

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
        peer = "10.{}.{}.{}".format(index // 65536 % 256, index // 256 % 256, index % 256)
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
    return min(walls), min(cpus), sorted(walls)[len(walls) // 2], result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=10000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--target", type=float, default=0.5, help="seconds for the status parse")
    args = parser.parse_args()

    status, traffic = generate(args.connections)
    rows = []
    wall, cpu, median, parsed = timed(lambda: ipsec_status.parse_status(status), args.repeat)
    assert len(parsed["connections"]) == args.connections, len(parsed["connections"])
    assert all(c["child_sas"][0]["established"] for c in parsed["connections"].values())
    rows.append(("status", status, wall, cpu, median))
    wall, cpu, median, parsed = timed(lambda: ipsec_status.parse_status(status, traffic), args.repeat)
    assert all(c["child_sas"][0]["bytes_exact"] for c in parsed["connections"].values())
    rows.append(("status + trafficstatus", status + traffic, wall, cpu, median))

    print("parse_status, {} connections, {} runs each (Python {}, load average {:.2f})".format(
        args.connections, args.repeat, sys.version.split()[0], os.getloadavg()[0]))
    print("{:<24} {:>8} {:>6} {:>10} {:>10} {:>12} {:>10}".format(
        "input", "lines", "MB", "best wall", "best CPU", "median wall", "lines/s"))
    for label, text, wall, cpu, median in rows:
        lines = text.count("\n")
        print("{:<24} {:>8} {:>6.1f} {:>9.3f}s {:>9.3f}s {:>11.3f}s {:>10,.0f}".format(
            label, lines, len(text) / 1e6, wall, cpu, median, lines / wall))
    ok = rows[0][2] < args.target
    print("target: status parse < {:.2f} s (best wall): {}".format(args.target, "OK" if ok else "MISSED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
