"""
One round of ICMP echo probes through this node's tunnels (``ipsec.verify
level=traffic``). No Salt dunders: the lab runs it inside its namespaces
too.

``probe(pairs, timeout)`` sends one echo request from each ``src`` (an
address of this node, the tunnel's local end) to its ``dst`` (the peer's
end) and collects the echo replies until every pair has one or
``timeout`` seconds have passed; unanswered pairs are sent again once a
second. The replies only say what happened: the verdict comes from the
Child SA byte counters, which move for the request (out) and the reply (in)
only if both halves of the tunnel carry packets.

Raw sockets (root, CAP_NET_RAW), one per local address, bound to it so the
request leaves from the tunnel's own address (the policy selects on it).
No process per probe: the cost is one socket per local address and one
datagram per tunnel per second.
"""

import errno
import ipaddress
import os
import select
import socket
import struct
import time

ECHO_REQUEST = {4: 8, 6: 128}
ECHO_REPLY = {4: 0, 6: 129}
PAYLOAD = b"ipsec-formula verify probe"
RESEND = 1.0  # s between sends to a pair still unanswered


def _checksum(data):
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack("!{}H".format(len(data) // 2), data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def echo_request(version, ident, sequence, payload=PAYLOAD):
    """An ICMP (v4) or ICMPv6 echo request. The kernel fills in the ICMPv6
    checksum (it needs the addresses); ICMP's is ours."""
    header = struct.pack("!BBHHH", ECHO_REQUEST[version], 0, 0, ident, sequence)
    if version == 6:
        return header + payload
    checksum = _checksum(header + payload)
    return struct.pack("!BBHHH", ECHO_REQUEST[version], 0, checksum, ident, sequence) + payload


def parse_reply(version, packet):
    """(ident, sequence) of an echo reply, or None for any other packet.
    IPv4 raw sockets hand over the IP header too; IPv6 ones do not."""
    if version == 4:
        if len(packet) < 20:
            return None
        packet = packet[(packet[0] & 0x0F) * 4:]
    if len(packet) < 8:
        return None
    kind, code, _, ident, sequence = struct.unpack("!BBHHH", packet[:8])
    if kind != ECHO_REPLY[version] or code != 0:
        return None
    return ident, sequence


def _canonical(address):
    return str(ipaddress.ip_address(address))


def _socket(version, source):
    family, proto = (socket.AF_INET, socket.IPPROTO_ICMP) if version == 4 else (
        socket.AF_INET6, socket.IPPROTO_ICMPV6)
    sock = socket.socket(family, socket.SOCK_RAW, proto)
    try:
        sock.setblocking(False)
        sock.bind((source, 0))
    except OSError:
        sock.close()
        raise
    return sock


def probe(pairs, timeout=5.0):
    """Send echo requests ``src -> dst`` for every ``(src, dst)`` of
    ``pairs`` and wait for the replies.

    Returns ``{(src, dst): {"sent": n, "answered": bool, "error": str or
    None}}`` keyed by the pairs as given. ``error`` says why nothing could
    be sent (the address is not on this node, no route, the kernel refused
    the packet: no SA and ``failureshunt=drop``).
    """
    pairs = list(dict.fromkeys((str(src), str(dst)) for src, dst in pairs))
    results = {pair: {"sent": 0, "answered": False, "error": None} for pair in pairs}
    ident = os.getpid() & 0xFFFF
    sockets, waiting = {}, {}  # source -> (version, socket); (source, target, sequence) -> pair
    try:
        for sequence, (src, dst) in enumerate(pairs, start=1):
            try:
                version = ipaddress.ip_address(src).version
                key = (_canonical(src), _canonical(dst))
                if key[0] not in sockets:
                    sockets[key[0]] = (version, _socket(version, key[0]))
                waiting[(key[0], key[1], sequence)] = (src, dst)
            except (OSError, ValueError) as exc:
                results[(src, dst)]["error"] = "cannot send from {}: {}".format(src, exc)
        deadline = time.monotonic() + float(timeout)
        next_send = time.monotonic()
        while waiting and time.monotonic() < deadline:
            if time.monotonic() >= next_send:
                for (source, target, sequence), pair in list(waiting.items()):
                    version, sock = sockets[source]
                    try:
                        sock.sendto(echo_request(version, ident, sequence), (target, 0))
                        results[pair]["sent"] += 1
                        results[pair]["error"] = None
                    except OSError as exc:
                        results[pair]["error"] = "cannot send to {}: {}".format(
                            target, os.strerror(exc.errno) if exc.errno else exc)
                next_send = time.monotonic() + RESEND
            wait = max(0.0, min(next_send, deadline) - time.monotonic())
            readable, _, _ = select.select([sock for _, sock in sockets.values()], [], [], wait)
            for sock in readable:
                source = next(addr for addr, (_, s) in sockets.items() if s is sock)
                version = sockets[source][0]
                while True:
                    try:
                        packet, sender = sock.recvfrom(65535)
                    except OSError as exc:
                        if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
                            break
                        raise
                    reply = parse_reply(version, packet)
                    if reply is None or reply[0] != ident:
                        continue
                    pair = waiting.pop((source, _canonical(sender[0]), reply[1]), None)
                    if pair is not None:
                        results[pair]["answered"] = True
    finally:
        for _, sock in sockets.values():
            sock.close()
    return results
