#!/usr/bin/env python3
"""make demo: the formula on the built-in 3-node example, driven by a real
salt-master, with real plutos.

Builds the lab (labkit.lab: one network namespace per node, a bridge per
network, a salt-master on the control-plane bridge, a salt-minion and an
isolated pluto per node), then does what an operator does:
``saltutil.sync_all``, ``mine.update``, ``state.apply ipsec`` (peers come
from the mine), starts pluto on every node, and checks what pluto reports;
then re-applies with nothing changed (hitless: no state changes, no pluto is
told anything, every SA keeps its serial). Tears everything down at the end
unless KEEP=1.

Host phase: this machine's kernel has no ESP, so Child SAs cannot be
installed here; ``salt '*' ipsec.verify level=ike`` shows every IKE SA
(authentication with the PSK). ESP phase (labkit.labvm): the same mesh is
rebuilt in a throwaway VM running Debian's kernel (or directly, on a kernel
with ESP), the plutos start on the files the formula wrote, UDP datagrams
cross every tunnel, and the formula's own parser and verify (level=child)
judge the captured status. Exit 0 only when every tunnel is up with ESP
traffic both ways and the re-apply was hitless.
"""

import os
import sys
import time

import ipsec_status

from labkit import examples, labvm, tunnels, vm
from labkit.lab import Lab


def established_ike(status):
    """Names of conns with an established IKE SA, from `ipsec status` text
    (the formula's own parser)."""
    serials = tunnels.established_serials(ipsec_status.parse_status(status))
    return {name for name, sas in serials.items() if sas["ike"]}


def log_step(command, seconds, rc, data):
    print("salt '*' {:<28} rc={} ({:.1f}s)".format(command, rc, seconds), flush=True)
    if command.startswith("state.apply") and data:
        for node_id, states in sorted(data.items()):
            changed = sum(1 for s in states.values() if s["changes"])
            print("  {:<13} {} states, {} changed".format(node_id, len(states), changed))


def host_phase(lab, plans):
    """IKE on this host: every plan's node-to-node conn with an IKE SA, and
    ``salt '*' ipsec.verify level=ike``."""
    def expected_up():
        return all(
            {n for n, c in plans[i]["connections"].items()
             if c["role"] == "node-to-node"} <= established_ike(node.pluto.status())
            for i, node in lab.nodes.items()
        )

    lab.wait(expected_up, timeout=40)
    ok = lab.wait(lambda: lab.salt("*", "ipsec.verify", "level=ike")[0] == 0, timeout=40, interval=2)
    rc, verdicts = lab.salt("*", "ipsec.verify", "level=ike")
    print("\nhost phase (this kernel: {} ESP): salt '*' ipsec.verify level=ike rc={}".format(
        "with" if vm.host_has_esp() else "no", rc))
    for node_id, verdict in sorted((verdicts or {}).items()):
        print("  {:<13} {}".format(node_id, verdict.get("comment") if isinstance(verdict, dict) else verdict))
    return ok and rc == 0


def hitless_phase(lab):
    """Re-apply with nothing changed, as every deploy does: no state
    changes, no pluto is told anything, no SA renegotiates."""
    before, marks = lab.settled_serials(timeout=30), lab.log_marks()
    started = time.monotonic()
    rc, data = lab.salt("*", "state.apply", "ipsec", timeout=300)
    seconds = time.monotonic() - started
    changed = sum(1 for states in (data or {}).values() if isinstance(states, dict)
                  for state in states.values() if state.get("changes"))
    told = sum(len(lines) for lines in lab.told_since(marks).values())
    after = lab.sa_serials()
    total = sum(len(conns) for conns in before.values())
    kept = sum(1 for node_id, conns in before.items() for conn, sas in conns.items()
               if after.get(node_id, {}).get(conn) == sas)
    print("\nhitless re-apply, nothing changed: salt '*' state.apply ipsec rc={} ({:.1f}s): {} states changed, "
          "{} state-changing calls in the pluto logs, {}/{} conns kept their SAs (same serials)".format(
              rc, seconds, changed, told, kept, total))
    return rc == 0 and changed == 0 and told == 0 and kept == total


def _bytes(value):
    return "-" if value is None else str(value)


def print_table(report):
    header = ("node", "network", "peer", "role", "IKE", "Child", "ESP in", "ESP out", "ok")
    rows = []
    for node_id, node in sorted(report.items()):
        for row in node["rows"]:
            rows.append((row["node"], row["network"], row["peer"], row["role"],
                         "up" if row["ike"] else "DOWN", "up" if row["child"] else "DOWN",
                         "{} (+{})".format(_bytes(row["in"]), (row["in"] or 0) - (row["in_before"] or 0)),
                         "{} (+{})".format(_bytes(row["out"]), (row["out"] or 0) - (row["out_before"] or 0)),
                         "yes" if row["esp_ok"] else "NO"))
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    line = "  ".join("{:<%d}" % w for w in widths)
    print(line.format(*header))
    print(line.format(*["-" * w for w in widths]))
    for row in rows:
        print(line.format(*row))


def esp_phase(lab, plans):
    job_dir = os.path.join(lab.workdir, "esp")
    where = "this host (its kernel has ESP)" if vm.host_has_esp() else "a throwaway VM (Debian's kernel, qemu TCG)"
    print("\nESP phase in {}: same mesh, the files the formula wrote, real Child SAs ...".format(where), flush=True)
    started = time.monotonic()
    result, facts = labvm.run(lab, plans, job_dir)
    print("  took {:.0f}s ({}), timings {}".format(time.monotonic() - started, result.where, facts.get("timings")))
    if "error" in facts or not facts.get("udp"):
        print(facts.get("error") or result.describe())
        return False
    report = labvm.analyse(plans, job_dir)
    print()
    print_table(report)
    print()
    all_ok = True
    for node_id, node in sorted(report.items()):
        verdict = node["verdicts"]["after"]
        rows_ok = all(row["esp_ok"] for row in node["rows"])
        all_ok = all_ok and verdict["result"] and rows_ok
        print("verify {:<13} level=child: {}  ({})".format(node_id, "PASS" if verdict["result"] else "FAIL",
                                                           verdict["comment"]))
    lost = [(n, u["label"]) for n, sends in facts["udp"].items() for u in sends if u["echoed"] < u["sent"]]
    ctl = [u for sends in facts["udp"].values() for u in sends if u["label"].startswith("ctlplane:")]
    print("UDP echo ({} round(s)): {} paths, {} datagrams each; control plane (plain, no conn): {}/{} echoed{}".format(
        facts.get("udp_rounds"), sum(len(s) for s in facts["udp"].values()), labvm.COUNT,
        sum(u["echoed"] for u in ctl), sum(u["sent"] for u in ctl),
        "; LOST on {}".format(lost) if lost else ""))
    if facts.get("renegotiated"):
        print("renegotiated once after crossed negotiations left them dropping traffic: {}".format(
            ", ".join("{} {}".format(n, c) for n, c in facts["renegotiated"])))
    call = facts.get("salt_call")
    if call:
        print("salt-call --local ipsec.verify level=child on {} in the VM: rc={} result={} ({:.0f}s): {}".format(
            call["node"], call["returncode"], call.get("result"), call["seconds"], call.get("comment")))
    print("captured status/trafficstatus per node: {} (kept with KEEP=1)".format(job_dir))
    return all_ok and not lost


def main():
    keep = os.environ.get("KEEP") == "1"
    started = time.monotonic()
    lab = Lab()
    try:
        print("lab: {} nodes, networks {}; salt-master on the ctlplane bridge".format(
            len(lab.nodes), ", ".join(examples.NETWORKS)), flush=True)
        plans = lab.deploy(log=log_step)
        ike_ok = host_phase(lab, plans)
        hitless_ok = hitless_phase(lab)
        esp_ok = esp_phase(lab, plans)
        print()
        print("IKE (host, salt '*' ipsec.verify level=ike): {}".format("PASS" if ike_ok else "FAIL"))
        print("hitless re-apply (nothing changed, nothing told, no SA renegotiated): {}".format(
            "PASS" if hitless_ok else "FAIL"))
        print("ESP (every tunnel: IKE + Child SA + ESP bytes both ways, verify level=child): {}".format(
            "PASS" if esp_ok else "FAIL"))
        print("demo took {:.0f}s".format(time.monotonic() - started))
        if keep:
            print("\nKEEP=1: host lab left up in {} (IKE only: this kernel has no ESP)".format(lab.workdir))
            for node in lab.nodes.values():
                print("  ip netns exec {} ipsec whack --rundir {} --status".format(node.ns.name, node.pluto.rundir))
            print("  ip netns exec {} {} -c {} '*' ipsec.verify level=ike".format(
                lab.switch.name, os.path.join(os.path.dirname(sys.executable), "salt"), lab.master_dir))
            print("tear down: pkill -9 -f {0} ; for ns in {1}; do ip netns del $ns; done ; rm -rf {0}".format(
                lab.workdir, " ".join(lab.mesh.namespaces())))
        return 0 if ike_ok and hitless_ok and esp_ok else 1
    finally:
        if not keep:
            lab.close()


if __name__ == "__main__":
    sys.exit(main())
