"""The live cluster's failovers again in a VM, where the kernel has ESP
(issue #16): there pluto's liveness runs (it runs on Child SAs, and this
machine's kernel installs none), so no client is nudged, and the tunnels
that follow a VIP carry ESP both ways.

The host phase (labkit.clusterlab: Salt applied the formula to every node,
the DC created the tunnel resources) leaves every node's files under the
lab's workdir and the cluster's configuration, as the DC holds it after
the apply, and a copy of the formula's files, in JOB_DIR
(``prepare(clab, plans, job_dir, configuration, kinds)``). ``run(job_dir)``
then boots the VM (labkit.labvm.run_job), which runs ``python -m
labkit.clustervm JOB_DIR``: no Salt there, as in the lab's ESP phase:

- the same mesh and cluster nodes (``ReplayedClusterLab``: a fresh CIB,
  corosync's ``token`` raised for an emulated CPU), every pluto started on
  the files the formula wrote, then the saved configuration loaded through
  the DC (``cibadmin --replace``): pacemaker starts the VIPs and the
  tunnel resources with the formula's agent;
- every node at the traffic level of ``ipsec.verify`` (the formula's own
  probes through every tunnel: ESP both ways);
- per kind, one failover (labkit.failover, nothing nudged: the kernel has
  ESP), then every node that is up at the Child and traffic levels again,
  each client's new Child SA to the new holder counted in both ways; then
  the old holder back, and every node at the traffic level once more;
- JOB_DIR/facts.json (written after every step, with JOB_DIR/progress.log
  and JOB_DIR/steps/<step>/: crm_mon and every pluto's status then), each
  node's pluto, corosync and pacemaker logs in JOB_DIR/<node>/.

By hand, from test/: ``python -m labkit.clustervm --lab [--kinds move
kill]``, on an otherwise idle machine. Not in ``make test``: one emulated
CPU carrying three pacemaker stacks is at its limit, and beside the suite
(or the host lab it was deployed from) even IPaddr2's own start and stop
exceed pacemaker's 20 s there (docs/pacemaker.md).
"""

import glob
import json
import os
import shutil
import sys
import time
import traceback
import types

from labkit import clusterlab, failover, labvm, restarts, waiting

CONFIGURATION = "cib-configuration.xml"
SNAPSHOT = "files"  # JOB_DIR/files/<path under the workdir>: what the formula wrote, as it was
# An emulated CPU runs corosync and three pacemakers: with the default 3 s
# a busy moment reads as a lost node.
TOKEN_MS = 10000
UP_TIMEOUT = 420  # s from the configuration's load to every node at the traffic level
FOLLOW_TIMEOUT = 300  # s: pacemaker + agent + liveness (dpddelay 5 s + retransmit-timeout 15 s), emulated
VM_TIMEOUT = 1500
POLL = 2.0  # s between the failover's looks: each is a crm_resource or whack on the one emulated CPU
KINDS = ("move", "kill")


# ------------------------------------------------------------ on the host

def formula_files(clab):
    """The directories under the lab's workdir that the formula wrote for
    the VM: every node's pluto config and NSS db, every controller's
    installed agent."""
    found = []
    for node in clab.nodes.values():
        found += [os.path.join(node.root, "pluto", sub) for sub in ("etc", "nss")]
    for node in clab.cluster.nodes.values():
        found.append(os.path.join(node.root, "ocf", "ipsec-formula"))
    return [os.path.relpath(path, clab.workdir) for path in found]


def prepare(clab, plans, job_dir, configuration, kinds=KINDS, vip="internal_api"):
    """JOB_DIR for ``clab`` (alive: its workdir is the VM's too):
    ``configuration`` is the cluster's (``ClusterLab.configuration()``
    right after the deploy); the formula's files are copied as they are
    now, so that the host lab may go on (a negative control edits an
    agent) while the VM runs."""
    labvm.write_job(job_dir, plans, {"workdir": clab.workdir, "kinds": list(kinds), "vip": vip,
                                     "files": formula_files(clab)})
    with open(os.path.join(job_dir, CONFIGURATION), "w", encoding="utf-8") as handle:
        handle.write(configuration)
    for relative in formula_files(clab):
        shutil.copytree(os.path.join(clab.workdir, relative), os.path.join(job_dir, SNAPSHOT, relative),
                        symlinks=True)


def run(job_dir, timeout=VM_TIMEOUT):
    """Boot the VM on a prepared JOB_DIR: (vm.Result, facts)."""
    return labvm.run_job("labkit.clustervm", job_dir, timeout=timeout)


# ------------------------------------------------------------- in the VM

class _ReplayedNode(clusterlab.ClusterLabNode):
    def start_minion(self):
        """No Salt in the VM: the files are the host phase's."""


class ReplayedClusterLab(clusterlab.ClusterLab):
    """The host phase's cluster lab rebuilt on its workdir, without Salt."""

    node_class = _ReplayedNode

    def __init__(self, workdir, job_dir, files):
        for relative in files:  # the host phase's files, as they were at prepare()
            shutil.copytree(os.path.join(job_dir, SNAPSHOT, relative), os.path.join(workdir, relative),
                            symlinks=True, dirs_exist_ok=True)
        for node in clusterlab.CONTROLLERS:
            # The host's CIB and membership: the VM's cluster starts empty
            # and gets the configuration through its DC.
            for sub in ("pacemaker", "corosync"):
                shutil.rmtree(os.path.join(workdir, "cluster", node, sub), ignore_errors=True)
        super().__init__(workdir=workdir, token=TOKEN_MS)

    def start_plutos(self):
        """Every pluto on the host phase's files, without what the host's
        plutos left in their run directories (the VM's own copies)."""
        for node in self.nodes.values():
            node.pluto.clear_run_state(log=True)
            node.pluto.start(timeout=120)

    def load_configuration(self, path):
        self.crm(self.any_up(), "cibadmin", "--replace", "--scope", "configuration", "--xml-file", path,
                 check=True, timeout=120)


def _alive(clab):
    """The nodes that are up, as labkit.restarts expects a mesh."""
    return types.SimpleNamespace(nodes={n: node for n, node in clab.nodes.items() if clab.cluster_alive(n)})


def _dead(clab):
    return {n for n in clab.nodes if not clab.cluster_alive(n)}


def _excused(clab, plans):
    """(node, conn) of the node-to-node tunnels toward a node that is down
    (a power cut): they cannot pass until it is back."""
    dead = _dead(clab)
    return {(node, name) for node in clab.nodes if node not in dead
            for name, conn in plans[node]["connections"].items()
            if conn["role"] == "node-to-node" and conn["peer"] in dead}


def _unexcused(verdicts, excused, dead=()):
    """What failed and is not excused: a tunnel in ``excused``, or a VIP
    holder's server conn whose only clients not up are ``dead`` nodes."""
    found = []
    for node, verdict in sorted(verdicts.items()):
        failed = verdict.get("failed") or {}
        for name, why in sorted(failed.items()):
            clients = ((verdict.get("connections") or {}).get(name) or {}).get("clients") or {}
            down = {client["node"] for client in clients.values() if not client.get("up")}
            if (node, name) in excused or (down and down <= set(dead)):
                continue
            found.append("{}: {}: {}".format(node, name, why))
        if not verdict.get("result") and not failed:
            found.append("{}: {}".format(node, verdict.get("comment")))
    return found


def _levels(clab, plans, timeout):
    """Wait until every node that is up passes the Child level, then the
    traffic level (the formula's probes through every tunnel up; retried:
    a Child SA may still be installing), tunnels toward a node that is down
    excused, and a holder's server conn whose missing clients are down.
    Returns {"passed", "child"/"traffic": what failed, "excused",
    "seconds"}."""
    started = time.monotonic()
    alive = _alive(clab)
    excused, dead = _excused(clab, plans), _dead(clab)
    last = {}

    def level(name, verdicts):
        def check():
            last[name] = _unexcused(verdicts(), excused, dead)
            return not last[name]
        return check

    passed = waiting.until(level("child", lambda: restarts.child_verdicts(alive, plans)), timeout, 2 * POLL)
    if passed:
        passed = waiting.until(level("traffic", lambda: restarts.traffic_verdicts(alive, plans)),
                               max(30, timeout - (time.monotonic() - started)), 3)
    return dict(last, passed=bool(passed), excused=sorted(" ".join(pair) for pair in excused),
                seconds=round(time.monotonic() - started, 1))


def esp_counts(clab, plans, vip):
    """Per client of ``vip`` (every node up but its holder): the in/out
    bytes of its client conn's Child SA and of the holder's server conn
    instance for it. Child SAs made after the failover: any byte there went
    through the new holder."""
    holder = clab.locate(vip["vip_resource"])
    verdicts = restarts.child_verdicts(_alive(clab), plans)
    server = verdicts[holder]["connections"][vip["server"]]
    out = {"holder": holder, "clients": {}}
    for node, conn in sorted(failover.client_conns(plans, vip).items()):
        if node == holder or not clab.cluster_alive(node):
            continue
        mine = verdicts[node]["connections"][conn]
        address = plans[node]["networks"][plans[node]["connections"][conn]["network"]]["address"]
        theirs = (server.get("clients") or {}).get(address) or {}
        out["clients"][node] = {
            "conn": conn, "address": address,
            "client_in": mine.get("in_bytes"), "client_out": mine.get("out_bytes"),
            "holder_in": theirs.get("in_bytes"), "holder_out": theirs.get("out_bytes"),
        }
    return out


def _save_logs(clab, job_dir):
    """Every pluto's log, every cluster node's corosync and pacemaker logs
    (JOB_DIR/<node>/), and what ``crm_mon`` shows at the end."""
    for node_id, node in clab.nodes.items():
        os.makedirs(os.path.join(job_dir, node_id), exist_ok=True)
        labvm._write(os.path.join(job_dir, node_id, "pluto.log"), node.pluto.log())
    for node_id, node in clab.cluster.nodes.items():
        for path in glob.glob(os.path.join(node.root, "*.out")) + glob.glob(os.path.join(node.root, "log", "*.log")):
            shutil.copy(path, os.path.join(job_dir, node_id, os.path.basename(path)))
    try:
        labvm._write(os.path.join(job_dir, "crm_mon.txt"), clab.crm(clab.any_up(), "crm_mon", "-1", "-A").stdout)
    except Exception:  # noqa: BLE001 - no cluster node left to ask
        pass


def _snapshot(clab, directory):
    """crm_mon and every live pluto's status into ``directory``."""
    try:
        labvm._write(os.path.join(directory, "crm_mon.txt"),
                     clab.crm(clab.any_up(), "crm_mon", "-1", "-A", "--output-as=text").stdout)
    except Exception as exc:  # noqa: BLE001 - no cluster node answers
        labvm._write(os.path.join(directory, "crm_mon.txt"), "crm_mon failed: {}\n".format(exc))
    for node_id, node in clab.nodes.items():
        process = node.pluto.process
        if clab.cluster_alive(node_id) and process is not None:
            if process.poll() is None:
                labvm._write(os.path.join(directory, node_id + ".status"), node.pluto.status())
            else:
                labvm._write(os.path.join(directory, node_id + ".exited"), "pluto exited with {}\n{}".format(
                    process.returncode, "".join(node.pluto.raw_log().splitlines(True)[-300:])))


def vm_main(job_dir):
    started = time.monotonic()
    facts = {"kernel": os.uname().release, "in_vm": os.environ.get("IPSEC_VM") == "1", "timings": {},
             "rounds": []}
    clab = None

    def mark(name):
        """A step done: its time, and what the cluster and the plutos look
        like then, in JOB_DIR (read from the host while the VM runs)."""
        facts["timings"][name] = round(time.monotonic() - started, 1)
        with open(os.path.join(job_dir, "progress.log"), "a", encoding="utf-8") as handle:
            handle.write("{} {}\n".format(facts["timings"][name], name))
        if clab is not None:
            _snapshot(clab, os.path.join(job_dir, "steps", name))
        labvm._write(os.path.join(job_dir, "facts.json"), json.dumps(facts, indent=1))

    plans, params = labvm.read_job(job_dir)
    vips = failover.vip_facts(plans)
    failover.POLL = POLL
    try:
        clab = ReplayedClusterLab(params["workdir"], job_dir, params["files"])
        mark("mesh")
        # As a cluster that boots: no VIP before the plutos run; then the
        # VIPs and the tunnel resources together, each tunnel started after
        # its VIP (its order constraint).
        clab.start_cluster(timeout=300, vips=False)
        mark("cluster")
        clab.start_plutos()
        mark("plutos")
        clab.load_configuration(os.path.join(job_dir, CONFIGURATION))
        mark("configuration")
        up_timeout, follow_timeout = params.get("up_timeout", UP_TIMEOUT), params.get("follow_timeout", FOLLOW_TIMEOUT)
        for vip in vips.values():
            holder = waiting.until(lambda: clab.locate(vip["vip_resource"]), up_timeout, 2)
            waiting.until(lambda: clab.locate(vip["resource"]) == holder, up_timeout, 2)
        mark("located")
        facts["up"] = _levels(clab, plans, up_timeout)
        facts["failed_actions_up"] = clab.failed_actions()
        mark("up")
        for kind in params["kinds"]:
            record = failover.failover(clab, plans, params["vip"], kind, timeout=follow_timeout)
            facts["rounds"].append(record)
            mark(kind + "_followed")
            record["levels"] = _levels(clab, plans, follow_timeout)
            record["esp"] = {name: esp_counts(clab, plans, vips[name]) for name in record["vips"]}
            record["failed_actions"] = clab.failed_actions()
            mark(kind + "_esp")
            failover.restore(clab, plans, record)
            record["levels_restored"] = _levels(clab, plans, follow_timeout)
            record["failed_actions_restored"] = clab.failed_actions()
            mark(kind + "_restored")
    except Exception:  # noqa: BLE001 - reported to the host
        facts["error"] = traceback.format_exc()
    finally:
        if clab is not None:
            _save_logs(clab, job_dir)
            clab.close()
            clab = None
        mark("total")  # writes facts.json
    return 1 if "error" in facts else 0


def lab_main(argv):
    """On the host (from test/): ``python -m labkit.clustervm --lab
    [--kinds move kill] [--job DIR]``: the cluster lab deployed through
    Salt, then its VM phase; prints the facts (JOB_DIR keeps the logs)."""
    import argparse
    import tempfile
    parser = argparse.ArgumentParser(description=lab_main.__doc__.splitlines()[0])
    parser.add_argument("--lab", action="store_true", required=True)
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=failover.KINDS)
    parser.add_argument("--job", default=None)
    args = parser.parse_args(argv)
    job = args.job or tempfile.mkdtemp(prefix="ipsec-cluster-vm-")
    made = clusterlab.ClusterLab()
    try:
        plans = made.deploy()
        prepare(made, plans, job, made.configuration(), kinds=args.kinds)
        result, facts = run(job)
    finally:
        made.close()
    print(json.dumps(facts, indent=1))
    print(result.describe(tail=2000))
    print("job:", job)
    return 0 if result.returncode == 0 and "error" not in facts else 1


if __name__ == "__main__":
    raise SystemExit(lab_main(sys.argv[1:]) if "--lab" in sys.argv[1:] else vm_main(sys.argv[1]))
