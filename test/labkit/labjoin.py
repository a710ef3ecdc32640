"""The lab's hitless join, replayed where ESP exists: a node joins a running
mesh whose tunnels all carry ESP, the old nodes re-apply the formula, and
no pre-existing IKE SA or Child SA is renegotiated.

The host phase (test/lab/test_lab_hitless.py) drives the join through the
salt-master on this kernel, which has no ESP, so only IKE SAs exist there.
This module replays it in a VM (labkit.vm) with the files the formula wrote
on the host, saved before and after the join (``save_files``). Inside,
``python -m labkit.labjoin JOB_DIR``:

- rebuilds the three-node mesh (labkit.mesh), puts back each node's files
  from before the join and starts every pluto; waits until
  ``ipsec_verify.verify(plan, status, "child")`` passes on every node and
  the Child SAs stop changing; UDP datagrams across every tunnel
  (labkit.udpecho); snapshot ``before``;
- the fourth node joins the mesh with the files the formula wrote for it;
  each old node runs ``salt-call --local state.apply ipsec`` (the formula's
  own state, a four-node inventory pillar, its own running pluto) while
  its tunnels carry ESP; then the new node's pluto starts;
- waits until the Child-level verdict passes on all four nodes; snapshot
  ``joined``; UDP across every tunnel again; snapshot ``after``; compares what each old node's state wrote with what the
  salt-master run wrote on the host.

On the host, ``analyse`` reads the snapshots with the formula's parser
(ipsec_status) and lists every pre-existing SA whose serial changed.
"""

import json
import os
import shutil
import sys
import time
import traceback

import ipsec_status

from labkit import examples, labvm, tunnels

VM_TIMEOUT = 1500
VM_CPUS = 2
APPLY_TIMEOUT = 900  # s: salt-call state.apply under emulation


# ------------------------------------------------------------------ host

def save_files(lab, stage, job_dir):
    """Copy every node's pluto ``etc`` tree (ipsec.conf, ipsec.secrets,
    ipsec.d/) to JOB_DIR/files/<stage>/<node>/."""
    for node_id, node in lab.nodes.items():
        dest = os.path.join(job_dir, "files", stage, node_id)
        shutil.rmtree(dest, ignore_errors=True)
        shutil.copytree(os.path.join(node.pluto.root, "etc"), dest)


def run(lab, old_nodes, joining, plans_before, plans_after, job_dir, prefer_vm=None, timeout=VM_TIMEOUT):
    """Replay the join of ``joining`` ({node: addresses}) to ``old_nodes``
    in a VM. ``save_files(lab, "before"|"after", job_dir)`` must have run
    at the two moments. Returns (vm.Result, facts)."""
    everyone = dict(old_nodes, **joining)
    labvm.write_job(job_dir, {"before": plans_before, "after": plans_after},
                    {"workdir": lab.workdir, "vip_holder": lab.vip_holder, "old_nodes": old_nodes,
                     "joining": joining})
    # The master's pillar, with the four-node inventory instead of the mine
    # (no master in the VM): it must plan exactly the same files.
    ipsec_pillar = examples.pillar(nodes=everyone, firewall={"manage": True})
    for node_id in old_nodes:
        labvm._prepare_salt_call(lab, job_dir, node_id, ipsec_pillar, name="apply-" + node_id)
    # Two vCPUs: three salt-calls run at once in there while this process
    # only waits.
    return labvm.run_job("labkit.labjoin", job_dir, prefer_vm=prefer_vm, timeout=timeout, cpus=VM_CPUS)


def sa_serials(status_text, traffic_text=None):
    """labkit.tunnels.established_serials of captured status text."""
    return tunnels.established_serials(ipsec_status.parse_status(status_text, traffic_text))


def analyse(job_dir, old_nodes):
    """Per old node: the SAs before the join and after it;
    ``lost``: {conn: (before, joined)} where an SA the conn had is gone
    (renegotiated or deleted); ``added``: the same where SAs were added
    while every old one stayed; ``crossed``: conns that had more than one
    IKE or Child SA before (crossed negotiations: none since one end
    of each tunnel initiates)."""
    report = {}
    for node_id in old_nodes:
        serials = {when: sa_serials(*labvm.read_snapshot(job_dir, node_id, when))
                   for when in ("before", "joined")}
        lost, added = {}, {}
        for conn, sas in serials["before"].items():
            now = serials["joined"].get(conn) or {"ike": [], "child": []}
            if any(not set(sas[kind]) <= set(now[kind]) for kind in ("ike", "child")):
                lost[conn] = (sas, now)
            elif now != sas:
                added[conn] = (sas, now)
        crossed = sorted(conn for conn, sas in serials["before"].items()
                         if len(sas["ike"]) > 1 or len(sas["child"]) > 1)
        report[node_id] = dict(serials, lost=lost, added=added, crossed=crossed)
    return report


# ------------------------------------------------------------- in the VM

def _restore(node, job_dir, stage):
    """Put the formula's files of ``stage`` back into the node's pluto."""
    etc = os.path.join(node.pluto.root, "etc")
    shutil.rmtree(etc, ignore_errors=True)
    shutil.copytree(os.path.join(job_dir, "files", stage, node.id), etc)


def _differences(node, job_dir):
    """Paths (relative to etc/) where what the state wrote in the VM differs
    from what the salt-master run wrote on the host."""
    etc = os.path.join(node.pluto.root, "etc")
    expected_root = os.path.join(job_dir, "files", "after", node.id)
    differ = []
    seen = set()
    for root in (etc, expected_root):
        for folder, _, names in os.walk(root):
            for name in names:
                seen.add(os.path.relpath(os.path.join(folder, name), root))
    for rel in sorted(seen):
        texts = []
        for root in (etc, expected_root):
            try:
                with open(os.path.join(root, rel), "rb") as handle:
                    texts.append(handle.read())
            except FileNotFoundError:
                texts.append(None)
        if texts[0] != texts[1]:
            differ.append(rel)
    return differ


def _apply_all(mesh, job_dir, old_nodes):
    """``salt-call --local state.apply ipsec`` on every old node at once."""
    running = []
    for node_id in old_nodes:
        base = os.path.join(job_dir, "apply-" + node_id)
        running.append((base,) + labvm._salt_call_in(mesh, base, "state.apply", "ipsec"))
    results = {}
    for base, node_id, process, started in running:
        entry = labvm._salt_call_result(base, process, started, timeout=APPLY_TIMEOUT)
        states = entry.pop("data", None)
        if isinstance(states, dict):
            entry["states"] = {value.get("__id__", key): {"result": value.get("result"),
                                                          "changes": value.get("changes"),
                                                          "comment": value.get("comment")}
                               for key, value in states.items() if isinstance(value, dict)}
        results[node_id] = entry
    return results


def vm_main(job_dir):
    from labkit.mesh import Mesh
    started = time.monotonic()
    facts = {"kernel": os.uname().release, "in_vm": os.environ.get("IPSEC_VM") == "1", "timings": {}}

    def mark(name):
        facts["timings"][name] = round(time.monotonic() - started, 1)

    plans, params = labvm.read_job(job_dir)
    mesh = None
    try:
        mesh = Mesh(params["workdir"], nodes=params["old_nodes"], vip_holder=params["vip_holder"])
        for node in mesh.nodes.values():
            labvm.clear_run_state(node)
            _restore(node, job_dir, "before")
        for node in mesh.nodes.values():
            node.pluto.start(timeout=120)
        facts["before_verdicts"] = labvm.summary(labvm.wait_child_up(mesh, plans["before"]))
        mark("up")
        # Every tunnel carries traffic before the join.
        labvm._traffic(mesh, plans["before"], params["vip_holder"], job_dir,
                       facts.setdefault("traffic_before", {}), name="udp-before")
        mark("traffic_before")
        labvm._snapshot(mesh, job_dir, "before")

        for node_id, addresses in sorted(params["joining"].items()):
            node = mesh.add_node(node_id, addresses)
            labvm.clear_run_state(node)
            _restore(node, job_dir, "after")
        facts["apply"] = _apply_all(mesh, job_dir, params["old_nodes"])
        mark("applied")
        for node_id in params["joining"]:
            mesh.nodes[node_id].pluto.start(timeout=120)
        facts["joined_verdicts"] = labvm.summary(labvm.wait_child_up(mesh, plans["after"]))
        mark("joined")
        labvm._snapshot(mesh, job_dir, "joined")
        facts["files_differ"] = {node_id: _differences(mesh.nodes[node_id], job_dir)
                                 for node_id in params["old_nodes"]}
        labvm._traffic(mesh, plans["after"], params["vip_holder"], job_dir,
                       facts.setdefault("traffic_after", {}), name="udp-after")
        mark("traffic_after")
        labvm._snapshot(mesh, job_dir, "after")
    except Exception:  # noqa: BLE001 - reported to the host
        facts["error"] = traceback.format_exc()
    finally:
        if mesh is not None:
            labvm.stop_plutos(mesh, job_dir)
            mesh.close()
        mark("total")
        labvm._write(os.path.join(job_dir, "facts.json"), json.dumps(facts, indent=1))
    return 1 if "error" in facts else 0


if __name__ == "__main__":
    raise SystemExit(vm_main(sys.argv[1]))
