"""The lab's ESP phase: the same mesh, the formula's files, a kernel with ESP.

This machine's kernel has no ESP, so after the host phase (Salt applied the
formula to every node; the files are under the lab's workdir) the lab runs
this module inside a throwaway VM (labkit.vm.run: directly on a host whose
kernel has ESP). Inside, ``python -m labkit.labvm JOB_DIR``:

- rebuilds the lab's namespaces and bridges (labkit.mesh, no Salt),
- starts every node's pluto on the files the formula wrote,
- waits until ``ipsec_verify.verify(plan, status, "child")`` is true on
  every node (every planned tunnel has its IKE SA and Child SA),
- saves every node's ``whack --status`` and ``--trafficstatus`` (and
  ``ip -s xfrm state``) into JOB_DIR/<node>/ before and after sending UDP
  datagrams (labkit.udpecho, echoed back) across every node-to-node tunnel,
  every VIP tunnel and, in plain, the control plane,
- writes JOB_DIR/facts.json and cleans up.

On the host, ``run(lab, plans, job_dir)`` starts it and ``analyse(plans,
job_dir)`` turns the captured text into verdicts (ipsec_status +
ipsec_verify, the formula's own parser and comparison) and table rows.
"""

import json
import os
import subprocess
import sys
import time
import traceback

import ipsec_status
import ipsec_verify

from labkit import examples, waiting

HERE = os.path.dirname(os.path.abspath(__file__))
TEST_DIR = os.path.dirname(HERE)

PORT = 7777
COUNT = 10
UDP_ROUNDS = 4
SETTLE = 60  # s at most for the set of Child SAs to stop changing
UP_TIMEOUT = 300  # emulated CPUs: 12 IKE SAs with DH take a while
VM_TIMEOUT = 600
SNAPSHOTS = ("before", "after")


# ------------------------------------------------------------ shared (pure)

def traffic_pairs(plans, node_id, vip_holder, nodes=examples.THREE_NODES):
    """(label, src, dst) this node sends to: the peer of every node-to-node
    conn, every VIP it is a client of (unless it holds it), and, in plain,
    every other node's control-plane address."""
    plan = plans[node_id]
    networks = plan["networks"]
    pairs = []
    for name, conn in sorted(plan["connections"].items()):
        network = networks.get(conn["network"]) or {}
        if conn["role"] == "node-to-node":
            pairs.append((name, network["address"], network["peers"][conn["peer"]]))
        elif conn["role"] == "vip-client" and node_id != vip_holder:
            pairs.append((name, network["address"], conn["peer"]))
    for other, addresses in sorted(nodes.items()):
        if other != node_id:
            pairs.append(("ctlplane:" + other, nodes[node_id]["ctlplane"], addresses["ctlplane"]))
    return pairs


def read_snapshot(job_dir, node_id, when):
    def text(kind):
        with open(os.path.join(job_dir, node_id, "{}-{}.txt".format(kind, when)), encoding="utf-8") as handle:
            return handle.read()
    return text("status"), text("traffic")


def analyse(plans, job_dir):
    """Per node: the verdicts before/after the traffic
    (``ipsec_verify.verify(plan, parse_status(...), "child")``) and table
    rows (node, network, peer, role, ike, child, in/out bytes before and
    after, esp_ok)."""
    report = {}
    for node_id, plan in sorted(plans.items()):
        verdicts = {}
        for when in SNAPSHOTS:
            status_text, traffic_text = read_snapshot(job_dir, node_id, when)
            verdicts[when] = ipsec_verify.verify(plan, ipsec_status.parse_status(status_text, traffic_text), "child")
        rows = []
        for name, conn in sorted(plan["connections"].items(), key=lambda kv: (kv[1]["role"], kv[0])):
            after = verdicts["after"]["connections"][name]
            before = verdicts["before"]["connections"][name]
            if after["expect"] == "nothing":
                continue
            if conn["role"] == "vip-server":
                for address, client in sorted((after.get("clients") or {}).items()):
                    was = (before.get("clients") or {}).get(address) or {}
                    rows.append(_row(node_id, conn, name, "VIP {} <- {} {}".format(
                        conn["peer"], client["node"], address), client, was))
            else:
                peer = conn["peer"]
                if conn["role"] == "node-to-node":
                    peer = "{} {}".format(peer, plan["networks"][conn["network"]]["peers"][conn["peer"]])
                else:
                    peer = "VIP {} (client)".format(peer)
                rows.append(_row(node_id, conn, name, peer, after, before))
        report[node_id] = {"verdicts": verdicts, "rows": rows}
    return report


def _row(node_id, conn, name, peer, now, was):
    def grew(key):
        return (now.get(key) or 0) > (was.get(key) or 0)
    return {
        "node": node_id, "conn": name, "role": conn["role"], "network": conn["network"], "peer": peer,
        "ike": bool(now.get("ike_sa")), "child": bool(now.get("child_sa")),
        "in_before": was.get("in_bytes"), "out_before": was.get("out_bytes"),
        "in": now.get("in_bytes"), "out": now.get("out_bytes"),
        "esp_ok": bool(now.get("ike_sa") and now.get("child_sa") and grew("in_bytes") and grew("out_bytes")),
    }


def _prepare_salt_call(lab, job_dir, node_id, ipsec_pillar=None, name="salt-call"):
    """A masterless minion config for one node under JOB_DIR/<name> (the
    example's inventory pillar instead of the mine, the node's own pluto):
    the VM runs ``salt-call --local`` with it."""
    from labkit import saltenv
    node = lab.nodes[node_id]
    base = os.path.join(job_dir, name)
    pillar_dir = os.path.join(base, "pillar")
    saltenv.write_minion_config(base, node_id, pillar_dir, root_dir="/tmp/{}-root".format(name),
                                log_level_logfile="quiet")
    if ipsec_pillar is None:
        ipsec_pillar = examples.pillar()
    saltenv.write_pillar(pillar_dir, dict(ipsec_pillar, lookup=node.pluto.lookup()))
    with open(os.path.join(base, "node"), "w") as handle:
        handle.write(node_id)
    return base


def _salt_call_in(mesh, base, *args, timeout=600):
    """Start ``salt-call --local -c BASE ARGS`` in the node's namespace (the
    node named in BASE/node): (node_id, Popen, started)."""
    with open(os.path.join(base, "node"), encoding="utf-8") as handle:
        node_id = handle.read().strip()
    node = mesh.nodes[node_id]
    cmd = ["ip", "netns", "exec", node.ns.name, os.path.join(os.path.dirname(sys.executable), "salt-call"),
           "--local", "-c", base, "--out=json", "--retcode-passthrough"] + list(args)
    out, err = open(os.path.join(base, "stdout"), "w"), open(os.path.join(base, "stderr"), "w")
    return node_id, subprocess.Popen(cmd, stdout=out, stderr=err), time.monotonic()


def _salt_call_result(base, process, started, timeout=600):
    try:
        process.wait(max(1, timeout - (time.monotonic() - started)))
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)
    with open(os.path.join(base, "stdout"), encoding="utf-8") as handle:
        stdout = handle.read()
    with open(os.path.join(base, "stderr"), encoding="utf-8") as handle:
        stderr = handle.read()
    entry = {"returncode": process.returncode, "seconds": round(time.monotonic() - started, 1),
             "stderr": stderr[-2000:]}
    try:
        entry["data"] = json.loads(stdout)["local"]
    except (ValueError, KeyError, TypeError):
        entry["stdout"] = stdout[-3000:]
    return entry


def _salt_call(mesh, job_dir, facts, key="salt_call"):
    base = os.path.join(job_dir, "salt-call")
    if not os.path.exists(os.path.join(base, "node")):
        return
    node_id, process, started = _salt_call_in(mesh, base, "ipsec.verify", "level=traffic")
    entry = _salt_call_result(base, process, started, timeout=300)
    verdict = entry.pop("data", None)
    entry["node"] = node_id
    if isinstance(verdict, dict):
        entry.update(result=verdict.get("result"), comment=verdict.get("comment"), level=verdict.get("level"),
                     failed=verdict.get("failed"))
    facts[key] = entry


def run(lab, plans, job_dir, timeout=VM_TIMEOUT, prefer_vm=None, salt_call_node="compute-0", rounds=None, fault=None):
    """Run the ESP phase for ``lab`` (its workdir holds the formula's files)
    in a VM (or directly on a kernel with ESP). Returns (vm.Result, facts).
    salt_call_node: also run one real ``salt-call --local ipsec.verify
    level=traffic`` there (None: skip; ~90 s in the VM). rounds: {"all": n,
    "one": m}, then that many rounds of disturbing every node at once and
    one node (labkit.restarts.round_plan); fault: (node, conn) whose inbound ESP state is then
    deleted, followed by a second salt-call when that is the salt-call node."""
    write_job(job_dir, plans, {"workdir": lab.workdir, "vip_holder": lab.vip_holder, "rounds": rounds,
                               "fault": fault})
    if salt_call_node:
        _prepare_salt_call(lab, job_dir, salt_call_node)
    return run_job("labkit.labvm", job_dir, prefer_vm=prefer_vm, timeout=timeout)


def write_job(job_dir, plans, params):
    """JOB_DIR/plans.json and params.json, what ``read_job`` reads in the VM."""
    os.makedirs(job_dir, exist_ok=True)
    with open(os.path.join(job_dir, "plans.json"), "w") as handle:
        json.dump(plans, handle)
    with open(os.path.join(job_dir, "params.json"), "w") as handle:
        json.dump(params, handle)


def run_job(module, job_dir, **vm_kwargs):
    """``python -m MODULE JOB_DIR`` in a VM (labkit.vm.run: directly on a
    kernel with ESP): (vm.Result, the facts it wrote in JOB_DIR/facts.json)."""
    from labkit import vm
    result = vm.run([sys.executable, "-m", module, job_dir], job_dir=job_dir, cwd=TEST_DIR, **vm_kwargs)
    facts = {}
    path = os.path.join(job_dir, "facts.json")
    if os.path.exists(path):
        with open(path, encoding="utf-8") as handle:
            facts = json.load(handle)
    return result, facts


# ------------------------------------------------------------- in the VM

def _write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)


def _verdicts(mesh, plans):
    out = {}
    for node_id, node in mesh.nodes.items():
        try:
            status = ipsec_status.parse_status(node.pluto.status(), node.pluto.trafficstatus())
            out[node_id] = ipsec_verify.verify(plans[node_id], status, "child")
        except Exception as exc:  # noqa: BLE001 - a pluto still starting
            out[node_id] = {"result": False, "comment": "status failed: {}".format(exc)}
    return out


def _snapshot(mesh, job_dir, when):
    for node_id, node in mesh.nodes.items():
        _write(os.path.join(job_dir, node_id, "status-{}.txt".format(when)), node.pluto.status())
        _write(os.path.join(job_dir, node_id, "traffic-{}.txt".format(when)), node.pluto.trafficstatus())
        _write(os.path.join(job_dir, node_id, "xfrm-{}.txt".format(when)),
               node.ns.exec(["ip", "-s", "xfrm", "state"], check=False).stdout)


def _traffic(mesh, plans, vip_holder, job_dir, facts, name="udp"):
    """UDP across every tunnel (JOB_DIR/<name>/ for the servers' files):
    facts["udp"], ["udp_rounds"], ["udp_lost"]."""
    udp = os.path.join(HERE, "udpecho.py")
    work = os.path.join(job_dir, name)
    os.makedirs(work, exist_ok=True)
    stop = os.path.join(work, "stop")
    servers = []
    try:
        for node_id, node in mesh.nodes.items():
            addresses = sorted(node.addresses.values())
            if node_id == vip_holder:
                addresses += [v for v in examples.VIPS.values() if v not in addresses]
            ready = os.path.join(work, node_id + ".ready")
            servers.append((ready, subprocess.Popen(
                ["ip", "netns", "exec", node.ns.name, sys.executable, udp, "serve", ready, stop, str(PORT)]
                + addresses, stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, node_id + ".serve.err"), "w"))))
        deadline = time.monotonic() + 60
        while not all(os.path.exists(ready) for ready, _ in servers) and time.monotonic() < deadline:
            if any(p.poll() is not None for _, p in servers):
                raise RuntimeError("a UDP echo server exited")
            time.sleep(0.2)
        # A datagram sent while a Child SA is still being installed can be
        # lost: another round (counters only grow) after a pause. Nothing is
        # taken down and up again: one end of each tunnel initiates, so no
        # two negotiations cross (the lab needed that workaround while both
        # ends initiated).
        for round_no in range(1, UDP_ROUNDS + 1):
            results = _send_round(mesh, plans, vip_holder, udp, work, round_no)
            facts["udp_rounds"] = round_no
            lost = [(n, u["label"]) for n, sends in results.items() for u in sends if u["echoed"] < u["sent"]]
            facts.setdefault("udp_lost", []).append(lost)
            if not lost or round_no == UDP_ROUNDS:
                break
            time.sleep(5)
        facts["udp"] = results
    finally:
        _write(stop, "stop\n")
        for _, process in servers:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


def _send_round(mesh, plans, vip_holder, udp, work, round_no):
    senders = []
    for node_id, node in mesh.nodes.items():
        pairs = traffic_pairs(plans, node_id, vip_holder, mesh_nodes(mesh))
        out = os.path.join(work, "{}.{}.json".format(node_id, round_no))
        senders.append((node_id, pairs, out, subprocess.Popen(
            ["ip", "netns", "exec", node.ns.name, sys.executable, udp, "send", out, str(PORT), str(COUNT)]
            + ["{},{}".format(src, dst) for _, src, dst in pairs],
            stdout=subprocess.DEVNULL, stderr=open(out + ".err", "w"))))
    results = {}
    for node_id, pairs, out, process in senders:
        try:
            process.wait(120)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        with open(out, encoding="utf-8") as handle:
            sent = json.load(handle)
        results[node_id] = [dict(sent["{},{}".format(src, dst)], label=label, src=src, dst=dst)
                            for label, src, dst in pairs]
    return results


def _child_serials(mesh):
    """Which Child SAs exist (serial and conn per node): changes while
    negotiations still cross and replace each other."""
    out = {}
    for node_id, node in mesh.nodes.items():
        out[node_id] = sorted((sa["serial"], sa["name"]) for sa in ipsec_status.parse_traffic(node.pluto.trafficstatus()))
    return out


def mesh_nodes(mesh):
    """{node: {network: address}} of the nodes the mesh has now."""
    return {node_id: node.addresses for node_id, node in mesh.nodes.items()}


def clear_run_state(node):
    """The host's pluto of this node may still run (or left its pid file):
    in the VM these are the VM's own copies (overlay)."""
    node.pluto.clear_run_state(log=True)


def wait_child_up(mesh, plans, timeout=UP_TIMEOUT):
    """Wait until every node's Child-level verdict passes, then until the
    set of Child SAs stops changing (crossed negotiations replace each
    other for a while). Returns the last verdicts."""
    deadline = time.monotonic() + timeout
    while True:
        polled = time.monotonic()
        verdicts = _verdicts(mesh, plans)
        if all(v["result"] for v in verdicts.values()) or time.monotonic() > deadline:
            break
        waiting.pause(2, polled)
    previous, settle_end = None, time.monotonic() + SETTLE
    while time.monotonic() < settle_end:
        polled = time.monotonic()
        current = _child_serials(mesh)
        if current == previous:
            break
        previous = current
        waiting.pause(4, polled)
    return verdicts


def summary(verdicts):
    return {n: {"result": v["result"], "comment": v["comment"]} for n, v in verdicts.items()}


def stop_plutos(mesh, job_dir):
    """Stop every pluto and save its log to JOB_DIR/<node>/pluto.log."""
    for node in mesh.nodes.values():
        if node.pluto.process is not None and node.pluto.process.poll() is None:
            node.pluto.process.terminate()
    for node_id, node in mesh.nodes.items():
        if node.pluto.process is not None:
            try:
                node.pluto.process.wait(20)
            except subprocess.TimeoutExpired:
                node.pluto.process.kill()
                node.pluto.process.wait(5)
        _write(os.path.join(job_dir, node_id, "pluto.log"), node.pluto.log())


def read_job(job_dir):
    with open(os.path.join(job_dir, "plans.json"), encoding="utf-8") as handle:
        plans = json.load(handle)
    with open(os.path.join(job_dir, "params.json"), encoding="utf-8") as handle:
        params = json.load(handle)
    return plans, params


def _restart_rounds(mesh, plans, params, job_dir, facts, mark):
    from labkit import restarts
    if params.get("rounds"):
        facts["traffic_level"] = summary(restarts.traffic_verdicts(mesh, plans))
        mark("traffic_level")
        for kind, count in sorted(params["rounds"].items()):
            facts["rounds_" + kind] = restarts.run_rounds(mesh, kind, count, plans)
            mark("rounds_" + kind)
    if params.get("fault"):
        node_id, conn = params["fault"]
        facts["fault"] = restarts.xfrm_fault(mesh, plans, node_id, conn)
        mark("fault")
        _salt_call(mesh, job_dir, facts, key="salt_call_fault")
        mark("salt_call_fault")


def vm_main(job_dir):
    from labkit.mesh import Mesh
    started = time.monotonic()
    facts = {"kernel": os.uname().release, "in_vm": os.environ.get("IPSEC_VM") == "1", "timings": {}}

    def mark(name):
        facts["timings"][name] = round(time.monotonic() - started, 1)

    plans, params = read_job(job_dir)
    mesh = None
    try:
        mesh = Mesh(params["workdir"], vip_holder=params["vip_holder"])
        mark("mesh")
        for node in mesh.nodes.values():
            clear_run_state(node)
        for node in mesh.nodes.values():
            node.pluto.start(timeout=120)
        mark("plutos")
        verdicts = wait_child_up(mesh, plans)
        mark("settled")
        facts["up_verdicts"] = summary(verdicts)
        mark("up")
        _snapshot(mesh, job_dir, "before")
        _traffic(mesh, plans, params["vip_holder"], job_dir, facts)
        mark("traffic")
        _snapshot(mesh, job_dir, "after")
        mark("snapshots")
        _salt_call(mesh, job_dir, facts)
        mark("salt_call")
        _restart_rounds(mesh, plans, params, job_dir, facts, mark)
    except Exception:  # noqa: BLE001 - reported to the host
        facts["error"] = traceback.format_exc()
    finally:
        if mesh is not None:
            stop_plutos(mesh, job_dir)
            mesh.close()
        mark("total")
        _write(os.path.join(job_dir, "facts.json"), json.dumps(facts, indent=1))
    return 1 if "error" in facts else 0


if __name__ == "__main__":
    raise SystemExit(vm_main(sys.argv[1]))
