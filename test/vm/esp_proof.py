"""Two pluto peers in two namespaces bring up a PSK tunnel and ping through it.

Runs wherever the kernel has ESP: inside the throwaway VM (labkit.vm) or
directly on such a host. Collects facts and writes them as JSON to the path
given as the only argument; the test asserts on them. Always cleans up its
namespaces and plutos.

    python esp_proof.py RESULT.json

The Libreswan install is the one $LABKIT_LIBRESWAN names (labkit.libreswan;
the test passes Libreswan.env()), 4.10 by default.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback

import ipsec_status

from labkit import libreswan, netns
from labkit.pluto import Pluto

CONN = "vm-esp"
ESP = "aes_gcm128-null"
PSK = "vm-esp-proof-Qw7zLk2Vb9Nc4Xr8Tp3Hs6Dm"
ADDRESSES = ("198.51.100.1", "198.51.100.2")
UP_TIMEOUT = 90  # emulated CPUs are slow; pluto retransmits meanwhile

CONFIG = """config setup
\tuniqueids=yes

conn {name}
\tleft={left}
\tright={right}
\tauthby=secret
\ttype=tunnel
\tesp={esp}
\tike=aes_gcm128-sha2_256;dh19
\tauto=add
"""

def traffic(pluto):
    """--trafficstatus text and its ESP records (the formula's own parser)."""
    out = pluto.trafficstatus()
    rows = [{"conn": r["name"], "in": r["in_bytes"], "out": r["out_bytes"]}
            for r in ipsec_status.parse_traffic(out) if r["type"] == "ESP"]
    return {"text": out, "rows": rows}


def xfrm_states(ns):
    """ESP states of a namespace with their byte counters (ip -s xfrm state)."""
    out = ns.exec(["ip", "-s", "xfrm", "state"], check=False).stdout
    states = []
    for block in re.split(r"\n(?=src )", out.strip()):
        if "proto esp" not in block:
            continue
        src_dst = re.match(r"src (\S+) dst (\S+)", block)
        current = re.search(r"lifetime current:\s*\n\s*(\d+)\(bytes\), (\d+)\(packets\)", block)
        aead = re.search(r"aead (\S+)", block)
        states.append({
            "src": src_dst.group(1) if src_dst else None,
            "dst": src_dst.group(2) if src_dst else None,
            "aead": aead.group(1) if aead else None,
            "bytes": int(current.group(1)) if current else None,
            "packets": int(current.group(2)) if current else None,
        })
    return {"text": out, "states": states}


def ping_cmd():
    found = shutil.which("ping")
    return [found] if found else ["/bin/busybox", "ping"]


def snapshot(plutos, namespaces):
    return {
        "traffic": [traffic(p) for p in plutos],
        "xfrm": [xfrm_states(ns) for ns in namespaces],
    }


def prove(facts, root):
    started = time.monotonic()
    namespaces, plutos = [], []
    try:
        a = netns.Namespace("espa")
        namespaces.append(a)
        b = netns.Namespace("espb")
        namespaces.append(b)
        netns.link(a, b, [ADDRESSES[0] + "/24"], [ADDRESSES[1] + "/24"])
        for ns, (left, right) in zip(namespaces, (ADDRESSES, ADDRESSES[::-1])):
            pluto = Pluto(os.path.join(root, ns.name), ns.name, libreswan.get())
            with open(pluto.config_file, "w", encoding="utf-8") as handle:
                handle.write(CONFIG.format(name=CONN, left=left, right=right, esp=ESP))
            with open(pluto.secrets_file, "w", encoding="utf-8") as handle:
                handle.write('{} {} : PSK "{}"\n'.format(left, right, PSK))
            os.chmod(pluto.secrets_file, 0o600)
            plutos.append(pluto)
        for pluto in plutos:
            pluto.start(timeout=60)
        facts["t_plutos_started"] = round(time.monotonic() - started, 2)

        initiator = plutos[0]
        try:
            up = initiator.up(CONN, timeout=UP_TIMEOUT)
            facts["up"] = {"returncode": up.returncode, "stdout": up.stdout[-3000:], "stderr": up.stderr[-2000:]}
        except subprocess.TimeoutExpired as expired:
            facts["up"] = {"returncode": None, "stdout": (expired.stdout or b"").decode(errors="replace"),
                           "stderr": "no result within {}s".format(UP_TIMEOUT)}
        facts["t_up"] = round(time.monotonic() - started, 2)
        # Responder side: its Child SA is in place once it shows traffic status.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if all(CONN in traffic(p)["text"] for p in plutos):
                break
            time.sleep(0.2)
        facts["status"] = [p.status() for p in plutos]
        facts["before"] = snapshot(plutos, namespaces)

        ping = subprocess.run(["ip", "netns", "exec", a.name] + ping_cmd()
                              + ["-c", "5", "-i", "0.2", "-w", "10", ADDRESSES[1]],
                              capture_output=True, text=True, timeout=30)
        facts["ping"] = {"returncode": ping.returncode, "stdout": ping.stdout, "stderr": ping.stderr}
        facts["t_ping"] = round(time.monotonic() - started, 2)
        facts["after"] = snapshot(plutos, namespaces)
    finally:
        facts["logs"] = [p.log()[-6000:] for p in plutos]
        # Both at once (SIGTERM is pluto's orderly shutdown): each whack is
        # slow under emulation.
        running = [p.process for p in plutos if p.process is not None and p.process.poll() is None]
        for process in running:
            process.terminate()
        for process in running:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        for ns in namespaces:
            ns.close()
        names = [ns.name for ns in namespaces]
        facts["namespaces_left"] = [n for n in netns.list_namespaces() if n in names]
        facts["t_total"] = round(time.monotonic() - started, 2)
        with open("/proc/meminfo", encoding="utf-8") as handle:
            meminfo = dict(line.split(":", 1) for line in handle)
        facts["mem_kb"] = {k: int(meminfo[k].split()[0]) for k in ("MemTotal", "MemAvailable")}


def main():
    out_file = sys.argv[1]
    facts = {"kernel": os.uname().release, "in_vm": os.environ.get("IPSEC_VM") == "1",
             "ipsec_version": subprocess.run([libreswan.get().ipsec_bin, "--version"], capture_output=True,
                                             text=True).stdout.strip()}
    root = tempfile.mkdtemp(prefix="esp-proof-")
    try:
        prove(facts, root)
    except Exception:  # noqa: BLE001 - reported to the test
        facts["error"] = traceback.format_exc()
    finally:
        shutil.rmtree(root, ignore_errors=True)
        with open(out_file, "w", encoding="utf-8") as handle:
            json.dump(facts, handle, indent=1)
    return 1 if "error" in facts else 0


if __name__ == "__main__":
    raise SystemExit(main())
