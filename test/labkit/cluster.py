"""A live corosync + pacemaker cluster in network namespaces, without
systemd (groundwork for issue #16; the recipe of
shared/reference/pacemaker.md, seen working on this machine).

Each cluster node runs in the network namespace it is given (a lab node's,
so IPaddr2 puts its VIPs where that node's pluto listens) and in a mount
namespace of its own: a private directory bind-mounted over /etc/corosync,
/var/lib/corosync, /var/lib/pacemaker and /var/log/pacemaker, tmpfs over
/dev/shm and /run (pacemaker's libqb IPC lives there: a command that talks
to the cluster must enter this mount namespace too, see ``Node.run``).

    cluster = Cluster(workdir, {"pc1": (ns_name, "198.51.100.11"), ...})
    cluster.start()
    cluster.wait_online(60)
    cluster.run("pc1", ["crm_mon", "-1"])
    cluster.close()        # every process killed, nothing left mounted

stonith is disabled by the caller (lab only: ``crm_attribute -t
crm_config -n stonith-enabled -v false``); a real cluster fences.
"""

import os
import shlex
import shutil
import signal
import subprocess
import time

OCF_RESOURCE_D = "/usr/lib/ocf/resource.d"
TOKEN_MS = 3000  # corosync's default; an emulated CPU needs more (labkit.clustervm)
COROSYNC_CONF = """totem {{
  version: 2
  cluster_name: {name}
  transport: knet
  crypto_cipher: aes256
  crypto_hash: sha256
  token: {token}
}}
nodelist {{
{nodes}
}}
quorum {{
  provider: corosync_votequorum
}}
logging {{
  to_logfile: yes
  logfile: /var/log/pacemaker/corosync.log
  to_syslog: no
}}
"""
# One attribute per line: `node { ring0_addr: ...` on one line is a parse error.
NODE = """  node {{
    ring0_addr: {address}
    name: {name}
    nodeid: {nodeid}
  }}"""

START = """set -e
hostname {name}
{binds}
mount --bind {root}/etc /etc/corosync
mount --bind {root}/corosync /var/lib/corosync
mount --bind {root}/pacemaker /var/lib/pacemaker
mount --bind {root}/log /var/log/pacemaker
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /run
mkdir -p /run/crm /run/corosync
chown -R hacluster:haclient /var/lib/pacemaker /var/log/pacemaker
corosync -f > {root}/corosync.out 2>&1 &
sleep 2
pacemakerd -f > {root}/pacemakerd.out 2>&1 &
wait
"""


class Node:
    def __init__(self, cluster, name, netns, address, nodeid, binds=()):
        self.cluster, self.name, self.netns, self.address, self.nodeid = cluster, name, netns, address, nodeid
        self.binds = list(binds)
        self.root = os.path.join(cluster.workdir, name)
        self.process = None  # the shell holding the mount namespace

    def start(self):
        for sub in ("etc", "corosync", "pacemaker/cib", "pacemaker/pengine", "pacemaker/blackbox",
                    "pacemaker/cores", "log"):
            os.makedirs(os.path.join(self.root, sub), exist_ok=True)
        shutil.copy(self.cluster.conf_file, os.path.join(self.root, "etc", "corosync.conf"))
        key = os.path.join(self.root, "etc", "authkey")
        shutil.copy(self.cluster.authkey, key)
        os.chmod(key, 0o400)
        script = START.format(name=self.name, root=self.root, binds=self.bind_script())
        self.process = subprocess.Popen(
            ["ip", "netns", "exec", self.netns, "unshare", "-m", "-u", "--propagation", "private",
             "bash", "-c", script], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

    def bind_script(self):
        """Shell lines for the node's own mounts: the caller's (source onto
        target) and, with ``ocf``, a resource.d of its own over
        /usr/lib/ocf/resource.d (the system's providers bound into it), so
        an agent installed there is this node's alone."""
        lines = ["mount --bind {} {}".format(shlex.quote(src), shlex.quote(dst)) for src, dst in self.binds]
        if self.cluster.ocf:
            ocf = os.path.join(self.root, "ocf")
            for provider in sorted(os.listdir(OCF_RESOURCE_D)):
                os.makedirs(os.path.join(ocf, provider), exist_ok=True)
                lines.append("mount --bind {} {}".format(shlex.quote(os.path.join(OCF_RESOURCE_D, provider)),
                                                         shlex.quote(os.path.join(ocf, provider))))
            lines.append("mount --rbind {} {}".format(shlex.quote(ocf), OCF_RESOURCE_D))
        return "\n".join(lines)

    def prefix(self):
        """argv prefix running a command in this node's namespaces (mount,
        network, UTS): where its cluster's IPC and its own mounts are."""
        if self.process is None or self.process.poll() is not None:
            raise RuntimeError("cluster node {} is not running".format(self.name))
        # -r: the node's root directory too. Entering a mount namespace
        # resets the root to the namespace's own; in the lab's VM that is
        # the initramfs, not the chroot everything runs in.
        return ["nsenter", "-t", str(self.process.pid), "-m", "-n", "-u", "-r"]

    def run(self, cmd, check=False, timeout=60):
        """``cmd`` inside this node's namespaces (where the cluster's IPC is)."""
        return subprocess.run(self.prefix() + list(cmd), capture_output=True, text=True, check=check,
                              timeout=timeout)

    def kill(self):
        """Every process of this node at once, a power cut: whatever runs
        in its mount namespace (corosync, pacemakerd and its daemons, which
        leave the shell's process group, and what was started there with
        ``prefix()``); its mounts go with the namespace. A daemon left
        over would keep answering on the network namespace's abstract
        sockets: a restarted node's controller then talks to the dead
        node's executor and never joins."""
        if self.process is None:
            return
        try:
            target = os.readlink("/proc/{}/ns/mnt".format(self.process.pid))
        except OSError:
            target = None
        if target == os.readlink("/proc/self/ns/mnt"):
            target = None  # never the host's own namespace (an unshare that did not happen)
        for _ in range(20):
            pids = [pid for pid in _pids_in_mount_ns(target) if pid != os.getpid()] if target else []
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            if not pids:
                break
            time.sleep(0.1)
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(10)
        self.process = None


def _pids_in_mount_ns(target):
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if os.readlink("/proc/{}/ns/mnt".format(name)) == target:
                    found.append(int(name))
            except OSError:
                pass
    return found


class Cluster:
    def __init__(self, workdir, nodes, name="ipsec-lab", binds=None, ocf=False, token=TOKEN_MS):
        """nodes: {cluster node name: (network namespace, ring0 address)};
        binds: {node: [(source, target)]} bind mounts of its own; ocf: give
        every node a resource.d of its own (Node.bind_script); token:
        corosync's totem token in ms (how long a silent node takes to be
        declared lost: token + consensus, 1.2 x token)."""
        self.workdir = str(workdir)
        self.ocf = ocf
        os.makedirs(self.workdir, exist_ok=True)
        self.conf_file = os.path.join(self.workdir, "corosync.conf")
        self.authkey = os.path.join(self.workdir, "authkey")
        self.nodes = {node: Node(self, node, netns, address, index, (binds or {}).get(node, ()))
                      for index, (node, (netns, address)) in enumerate(sorted(nodes.items()), 1)}
        with open(self.conf_file, "w", encoding="utf-8") as handle:
            handle.write(COROSYNC_CONF.format(name=name, token=int(token), nodes="\n".join(
                NODE.format(address=n.address, name=n.name, nodeid=n.nodeid) for n in self.nodes.values())))
        subprocess.run(["corosync-keygen", "-k", self.authkey], check=True, capture_output=True)

    def start(self):
        for node in self.nodes.values():
            node.start()

    def run(self, node, cmd, **kwargs):
        return self.nodes[node].run(cmd, **kwargs)

    def online(self, via=None):
        """Names of the nodes ``crm_mon`` shows online (asked on ``via``)."""
        via = via or next(n for n, node in self.nodes.items() if node.process is not None)
        out = self.run(via, ["crm_mon", "-1", "--output-as=text"]).stdout
        for line in out.splitlines():
            line = line.strip()
            if line.startswith("* Online: [") or line.startswith("Online: ["):
                return set(line.split("[", 1)[1].rstrip("]").split())
        return set()

    def wait_online(self, timeout, names=None):
        names = set(names or self.nodes)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if names <= self.online():
                    return True
            except (RuntimeError, subprocess.SubprocessError):
                pass
            time.sleep(1)
        return False

    def close(self):
        for node in self.nodes.values():
            node.kill()
