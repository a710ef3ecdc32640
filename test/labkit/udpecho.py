"""UDP echo for the lab (there is no ping binary): run with ``ip netns exec``.

    python udpecho.py serve READY_FILE STOP_FILE PORT ADDRESS...
        echo every datagram back from the address it arrived on (one socket
        per address), until STOP_FILE exists (or 600 s).
    python udpecho.py send OUT_JSON PORT COUNT SRC,DST...
        send COUNT datagrams from SRC to DST (a socket bound to SRC) and
        count the echoes: {"SRC,DST": {"sent": n, "echoed": m}} to OUT_JSON.
Standard library only.
"""

import json
import os
import selectors
import socket
import sys
import time

PAYLOAD = 400  # bytes per datagram


def _socket(address, port):
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((address, port))
    sock.setblocking(False)
    return sock


def serve(ready_file, stop_file, port, addresses):
    selector = selectors.DefaultSelector()
    for address in addresses:
        selector.register(_socket(address, port), selectors.EVENT_READ)
    with open(ready_file, "w") as handle:
        handle.write("ready\n")
    deadline = time.monotonic() + 600
    while not os.path.exists(stop_file) and time.monotonic() < deadline:
        for key, _ in selector.select(0.2):
            try:
                data, peer = key.fileobj.recvfrom(65535)
                key.fileobj.sendto(data, peer)
            except OSError:
                pass


def send(out_file, port, count, pairs, wait=8.0):
    selector = selectors.DefaultSelector()
    results = {}
    for pair in pairs:
        src, dst = pair.split(",")
        sock = _socket(src, 0)
        results[pair] = {"sent": 0, "echoed": 0, "errors": []}
        selector.register(sock, selectors.EVENT_READ, (pair, dst))
    payload = b"ipsec-lab " + b"x" * (PAYLOAD - 10)
    for index in range(count):
        for key in list(selector.get_map().values()):
            pair, dst = key.data
            try:
                key.fileobj.sendto(payload, (dst, port))
                results[pair]["sent"] += 1
            except OSError as exc:
                results[pair]["errors"].append(str(exc))
        _drain(selector, results, 0.05)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline and any(r["echoed"] < r["sent"] for r in results.values()):
        _drain(selector, results, 0.2)
    with open(out_file, "w") as handle:
        json.dump(results, handle, indent=1)


def _drain(selector, results, timeout):
    for key, _ in selector.select(timeout):
        try:
            key.fileobj.recvfrom(65535)
            results[key.data[0]]["echoed"] += 1
        except OSError:
            pass


def main(argv):
    if argv[0] == "serve":
        serve(argv[1], argv[2], int(argv[3]), argv[4:])
    elif argv[0] == "send":
        send(argv[1], int(argv[2]), int(argv[3]), argv[4:])
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
