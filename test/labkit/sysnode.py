"""A node booted by systemd, applied by an operator, rebooted, cleaned.

The one place the formula runs the way a real node runs it: in a VM whose
PID 1 is systemd (labkit.vmsystemd), controller-0 of the example is the
VM itself (its root network namespace, Debian's own ``ipsec.service``,
``/etc/ipsec.d``, nftables and ``nftables.service``), with salt-master and
salt-minion as systemd services. Its two peers (controller-1, compute-0)
are namespaces inside the VM with an isolated pluto each, on files the
formula rendered for them on the host before the boot (``salt-call
--local``: seconds there, minutes under emulation).

Three boots, one qemu (the guest reboots itself, the disk keeps what it
wrote), each running the next phase from the ``ipsec-lab-phase`` unit:

1. ``apply``: ``salt controller-0 state.apply ipsec test=True`` (the
   prediction), then the real ``state.apply ipsec``, the peers' plutos
   started, the tunnels checked at the Child level; reboot.
2. ``rebooted``: no Salt run. What systemd started (``ipsec`` enabled and
   active, the formula's nftables table back), the peers' plutos started
   again, then ``ipsec.verify`` at the Child and traffic levels and the
   ESP byte counters; then ``state.apply ipsec.clean`` (``test=True``
   first); reboot.
3. ``cleaned``: what is left (units, rules, files); power off.

Each phase writes ``<job>/<phase>.json`` and its progress to
``<job>/phase.log``; ``run(job_dir)`` (host) builds the disk, boots, and
returns what the phases wrote. Inside the VM the units run ``python -m
labkit.sysnode net|phase JOB``.
"""

import glob
import hashlib
import json
import os
import subprocess
import sys
import time
import traceback

import yaml

from labkit import examples, mesh, saltenv, waiting

PHASES = ("apply", "rebooted", "cleaned")
NODE = "controller-0"
PEERS = ("controller-1", "compute-0")
SWITCH_NS = "sysvm-switch"
LAB_DIR = "/var/lib/ipsec-lab"
SALT_CONF = "/etc/salt-lab"
PILLAR_DIR = "/srv/ipsec-lab/pillar"
# The operator's files the formula edits and must give back byte for byte.
EDITED_FILES = ("/etc/ipsec.conf", "/etc/ipsec.secrets", "/etc/nftables.conf")
FORMULA_FILES = ("/etc/ipsec-formula.nft",)
UNITS = ("ipsec", "nftables")
TIMEOUT = 4500  # s: three boots under emulation, beside the rest of the suite and behind it (seen: 3300 s not enough)
NICE = 5
BIN = os.path.dirname(sys.executable)
TEST_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ------------------------------------------------------------------ host

def host_enabled_units():
    """Units the host's image enables (its wants/ links): masked in the VM,
    which only needs systemd's own, the lab's and what the formula enables."""
    names = set()
    for link in glob.glob("/etc/systemd/system/*.wants/*"):
        name = os.path.basename(link)
        if not name.endswith(".target"):
            names.add(name)
    return sorted(names | {"serial-getty@ttyS0.service", "getty@tty1.service", "console-getty.service"})


def _unit(description, exec_start, *, before=(), after=(), wants=(), oneshot=False, remain=False,
          extra=(), unit_extra=()):
    lines = ["[Unit]", "Description=" + description]
    lines += list(unit_extra)
    lines += ["Before=" + " ".join(before)] if before else []
    lines += ["After=" + " ".join(after)] if after else []
    lines += ["Wants=" + " ".join(wants)] if wants else []
    lines += ["", "[Service]", "Type=" + ("oneshot" if oneshot else "simple"), "ExecStart=" + exec_start,
              "WorkingDirectory=" + TEST_DIR, "Environment=HOME=/root LANG=C.UTF-8 PYTHONDONTWRITEBYTECODE=1"]
    lines += ["RemainAfterExit=yes"] if remain else []
    lines += list(extra)
    lines += ["", "[Install]", "WantedBy=multi-user.target", ""]
    return "\n".join(lines)


def units(job_mount):
    """{unit file name: text} of the lab's units in the VM."""
    python = sys.executable
    # The last boot (after ipsec.clean) runs no Salt: a master and a minion
    # starting under emulation cost that boot minutes of its only CPU.
    no_salt_after_clean = ["ConditionPathExists=!{}/rebooted.json".format(job_mount)]
    return {
        # The node's network, as its distribution's network config would
        # give it: before anything that uses addresses.
        "ipsec-lab-net.service": _unit(
            "ipsec-formula lab: this node's addresses, its peers' namespaces",
            "{} -m labkit.sysnode net {}".format(python, job_mount), oneshot=True, remain=True,
            after=["systemd-modules-load.service"],
            before=["network-pre.target", "network-online.target", "ipsec.service", "nftables.service",
                    "salt-master.service", "salt-minion.service"],
            wants=["network-pre.target"]),
        "salt-master.service": _unit(
            "The Salt Master Server", "{} -c {} --log-level=quiet".format(os.path.join(BIN, "salt-master"), SALT_CONF),
            after=["network-online.target", "ipsec-lab-net.service"], extra=["LimitNOFILE=100000"],
            unit_extra=no_salt_after_clean),
        "salt-minion.service": _unit(
            "The Salt Minion", "{} -c {} --log-level=quiet".format(os.path.join(BIN, "salt-minion"), SALT_CONF),
            after=["network-online.target", "salt-master.service"], unit_extra=no_salt_after_clean,
            # The lab's master starts in the same boot; under emulation it
            # takes minutes, and a minion that finds no master backs off for
            # minutes more. Waiting for its request port costs nothing.
            extra=["KillMode=process", "TimeoutStartSec=900",
                   "ExecStartPre=/bin/sh -c 'until ss -Hltn \"sport = :4506\" | grep -q .; do sleep 1; done'"]),
        "ipsec-lab-phase.service": _unit(
            "ipsec-formula lab: the test's next phase",
            "{} -m labkit.sysnode phase {}".format(python, job_mount), oneshot=True,
            after=["salt-master.service", "salt-minion.service", "ipsec-lab-net.service"],
            extra=["TimeoutStartSec=infinity", "StandardOutput=append:{}/phase.log".format(job_mount),
                   "StandardError=append:{}/phase.log".format(job_mount)]),
    }


# Debian's ipsec.service gives its four ExecStartPre checks and pluto's
# start 90 s (systemd's default). Under emulation the checks alone took
# 77 s in a first boot, and over 90 s in a reboot beside the suite, where
# systemd then killed and restarted them for 20 minutes, starving the
# master. The lab's VM only: on hardware they take about a second.
IPSEC_DROP_IN = ("/etc/systemd/system/ipsec.service.d/ipsec-lab-emulation.conf",
                 "[Service]\nTimeoutStartSec=900\n")


def pillar_files():
    """{name: data} of the master's pillar: the example (inventory, firewall
    managed, the distribution's own paths and service)."""
    common = examples.pillar()
    common["firewall"] = {"manage": True}
    return {"top": {"base": {NODE: ["ipsec"]}}, "ipsec": {"ipsec": common}}


def peer_root(job_dir, peer):
    """A peer's pluto root: under the job directory on the host, where the
    VM sees it too (the host's root is its lower layer; writes go to the
    disk)."""
    return os.path.join(job_dir, "peers", peer, "pluto")


def render_peers(job_dir):
    """The peers' files, by the formula (``salt-call --local state.apply
    ipsec`` on the host, static grains, an isolated pluto root each; their
    firewall is not managed: on the host it would be the host's). Under
    emulation a salt-call takes minutes; here seconds. Returns {peer: rc}."""
    from labkit.pluto import Pluto
    calls = {}
    for peer in PEERS:
        base = os.path.join(job_dir, "peers", peer)
        pillar = examples.pillar(lookup=Pluto(peer_root(job_dir, peer)).lookup())  # makes its directories
        saltenv.write_pillar(os.path.join(base, "pillar"), pillar)
        saltenv.write_minion_config(os.path.join(base, "salt"), peer, os.path.join(base, "pillar"),
                                    grains=saltenv.node_grains(examples.own_ips(peer)),
                                    root_dir=os.path.join(base, "salt-root"), log_level_logfile="quiet")
        calls[peer] = subprocess.Popen(
            [os.path.join(BIN, "salt-call"), "--local", "-c", os.path.join(base, "salt"), "--out=json",
             "--retcode-passthrough", "state.apply", "ipsec"],
            stdout=open(os.path.join(base, "apply.json"), "w"), stderr=open(os.path.join(base, "apply.err"), "w"))
    return {peer: process.wait(600) for peer, process in calls.items()}


def write_upper(upper, job_mount):
    """The disk's first upper layer: masks, the lab's units (enabled), salt
    configs and pillar."""
    def write(path, text):
        full = os.path.join(upper, path.lstrip("/"))
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "w", encoding="utf-8") as handle:
            handle.write(text)

    system = os.path.join(upper, "etc/systemd/system")
    os.makedirs(os.path.join(system, "multi-user.target.wants"), exist_ok=True)
    for name in host_enabled_units():
        os.symlink("/dev/null", os.path.join(system, name))
    for name, text in units(job_mount).items():
        write("/etc/systemd/system/" + name, text)
        os.symlink("../" + name, os.path.join(system, "multi-user.target.wants", name))
    write(*IPSEC_DROP_IN)
    # Debian's tmp.conf empties /tmp at boot; the VM's /tmp is the host's
    # (read-only lower layer): thousands of whiteouts for nothing.
    write("/etc/tmpfiles.d/tmp.conf", "")
    write("/etc/hostname", NODE + "\n")
    master = {"interface": "127.0.0.1", "root_dir": os.path.join(LAB_DIR, "master"), "auto_accept": True,
              "file_roots": {"base": [saltenv.state_root()]}, "pillar_roots": {"base": [PILLAR_DIR]},
              "worker_threads": 2, "log_level_logfile": "info"}
    write(SALT_CONF + "/master", yaml.safe_dump(master))
    seed_keys(upper)
    write(SALT_CONF + "/minion", yaml.safe_dump(minion_config(NODE, "127.0.0.1")))
    for name, data in pillar_files().items():
        write("{}/{}.sls".format(PILLAR_DIR, name), ("" if name == "top" else "#!yaml\n") + yaml.safe_dump(data))


def seed_keys(upper):
    """The master's and the minion's RSA keys, made on the host, the
    minion's already accepted: generating them under emulation took most
    of the first boot's four minutes before the minion answered."""
    master_pki = os.path.join(upper, LAB_DIR.lstrip("/"), "master", "etc", "salt", "pki", "master")
    minion_pki = os.path.join(upper, LAB_DIR.lstrip("/"), NODE, "salt", "etc", "salt", "pki", "minion")
    for pki, name in ((master_pki, "master"), (minion_pki, "minion")):
        os.makedirs(pki, exist_ok=True)
        subprocess.run([os.path.join(BIN, "salt-key"), "--gen-keys=" + name, "--gen-keys-dir=" + pki],
                       check=True, capture_output=True)
    os.makedirs(os.path.join(master_pki, "minions"), exist_ok=True)
    subprocess.run(["cp", os.path.join(minion_pki, "minion.pub"), os.path.join(master_pki, "minions", NODE)],
                   check=True)


def minion_config(node_id, master):
    return {"id": node_id, "master": master, "root_dir": os.path.join(LAB_DIR, node_id, "salt"),
            "log_level_logfile": "info", "acceptance_wait_time": 1, "random_reauth_delay": 0,
            # An emulated master answers the first authentication slowly,
            # and compiles a pillar in over 60 s (the default request
            # timeout): each retry queued one more compile on its two
            # workers, which never caught up in a reboot beside the suite.
            "auth_timeout": 120, "request_channel_timeout": 600, "request_channel_tries": 1}


def file_digest(path):
    try:
        with open(path, "rb") as handle:
            return hashlib.sha256(handle.read()).hexdigest()
    except FileNotFoundError:
        return None


def run(job_dir, timeout=TIMEOUT, cpus=1):
    """Build the disk, boot until the VM powers off: (vm.Result, {phase:
    facts}, params) where params["originals"] holds the sha256 of the
    operator's files before the formula ran (from the host: the VM's lower
    layer)."""
    from labkit import vmsystemd
    job_dir = os.path.abspath(job_dir)
    upper = os.path.join(job_dir, "upper")
    os.makedirs(upper, exist_ok=True)
    write_upper(upper, vmsystemd.JOB_MOUNT)
    params = {"originals": {path: file_digest(path) for path in EDITED_FILES + FORMULA_FILES},
              "job_dir": job_dir, "peers_rendered": render_peers(job_dir)}
    with open(os.path.join(job_dir, "params.json"), "w", encoding="utf-8") as handle:
        json.dump(params, handle)
    disk = vmsystemd.make_disk(os.path.join(job_dir, "disk.img"), upper)
    # One vCPU: in make test it runs beside the rest of the suite (two
    # cores; alone, with one vCPU: 29 to 35 minutes on 2026-12-05).
    result = vmsystemd.boot(job_dir, disk, timeout, cpus=cpus)
    facts = {}
    for phase in PHASES:
        path = os.path.join(job_dir, phase + ".json")
        if os.path.exists(path):
            with open(path, encoding="utf-8") as handle:
                facts[phase] = json.load(handle)
    if result.returncode == 0 and all(p in facts and "error" not in facts[p] for p in PHASES):
        os.unlink(disk)  # 2 GB sparse; kept after a failure (debugfs -R "rdump /upper ...")
    return result, facts, params


# ------------------------------------------------------------ in the VM

def _sh(cmd, timeout=120):
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        return out.returncode, out.stdout.strip(), out.stderr.strip()
    except subprocess.TimeoutExpired:
        return None, "", "timed out after {}s".format(timeout)


_CLIENT = []


def salt(target, function, *args, timeout=300):
    """``salt <target> <function> <args>`` on the VM's master: (retcode,
    {minion: return}), retcode as the ``salt`` CLI's (the highest of the
    minions', None when nobody answered). Through one in-process
    LocalClient, the CLI's own: each start of the ``salt`` CLI costs tens
    of seconds under emulation, the phase pays for Salt's import once."""
    if not _CLIENT:
        from salt.client import LocalClient  # noqa: PLC0415 - in the VM only, and only once
        _CLIENT.append(LocalClient(c_path=os.path.join(SALT_CONF, "master")))
    try:
        returns = _CLIENT[0].cmd(target, function, list(args), timeout=timeout, full_return=True)
    except Exception:  # noqa: BLE001 - a master that does not answer: as the CLI's failure
        traceback.print_exc()
        return None, None
    if not returns:
        return None, None
    retcode = max(int(ret.get("retcode") or 0) for ret in returns.values())
    return retcode, {minion: ret.get("ret") for minion, ret in returns.items()}


def _wait(predicate, timeout, interval=3):
    return waiting.until(predicate, timeout, interval, share=True)


def network(job_mount):
    """The ``net`` unit: bridges in a switch namespace, this node's veths
    (and the VIPs) in the root namespace, a namespace per peer."""
    del job_mount
    nodes = examples.THREE_NODES

    def ip(*args, ns=None):
        subprocess.run((["ip", "-n", ns] if ns else ["ip"]) + list(args), check=True)

    ip("netns", "add", SWITCH_NS)
    ip("link", "set", "lo", "up", ns=SWITCH_NS)
    for network_name in examples.NETWORKS:
        ip("link", "add", mesh.bridge(network_name), "type", "bridge", ns=SWITCH_NS)
        ip("link", "set", mesh.bridge(network_name), "up", ns=SWITCH_NS)
    for index, node_id in enumerate([NODE] + list(PEERS)):
        ns = None if node_id == NODE else peer_netns(node_id)
        if ns:
            ip("netns", "add", ns)
            ip("link", "set", "lo", "up", ns=ns)
        for net_index, (network_name, address) in enumerate(sorted(nodes[node_id].items())):
            dev, port = "n{}{}".format(index, net_index), "s{}{}".format(index, net_index)
            ip("link", "add", dev, "type", "veth", "peer", "name", port, "netns", SWITCH_NS)
            if ns:
                ip("link", "set", dev, "netns", ns)
            ip("link", "set", port, "master", mesh.bridge(network_name), "up", ns=SWITCH_NS)
            ip("link", "set", dev, "up", ns=ns)
            cidrs = examples.node_cidrs({network_name: address})
            if node_id == NODE:  # the VIP holder
                cidrs += [examples.host_prefix(v) for v in examples.VIPS.values()
                          if examples.in_network(v, network_name)]
            for cidr in cidrs:
                ip("addr", "add", cidr, "dev", dev, *(["nodad"] if ":" in cidr else []), ns=ns)
    return 0


def peer_netns(peer):
    return "sysvm-" + peer


def start_peer_plutos(job_dir):
    """Each peer's pluto on the files the formula wrote; after a reboot its
    run directory (on the persistent disk) still holds the old pid file
    and socket."""
    from labkit.pluto import Pluto
    for peer in PEERS:
        pluto = Pluto(peer_root(job_dir, peer), peer_netns(peer))
        for name in os.listdir(pluto.rundir):
            os.unlink(os.path.join(pluto.rundir, name))
        pluto.start(timeout=120)


def units_state():
    """Each unit's is-enabled / is-active, and the wants/ links under
    /etc/systemd/system (what enabling changes)."""
    out = {}
    for unit in UNITS:
        out[unit] = {"enabled": _sh(["systemctl", "is-enabled", unit])[1],
                     "active": _sh(["systemctl", "is-active", unit])[1]}
    out["wants"] = sorted(os.path.relpath(p, "/etc/systemd/system")
                          for p in glob.glob("/etc/systemd/system/*.wants/*"))
    return out


def nft_ruleset():
    return _sh(["nft", "list", "ruleset"])[1]


def state_summary(data):
    """{state id: {"result", "changes"}} of one minion's state.apply return."""
    if not isinstance(data, dict):
        return {"_error": data}
    out = {}
    for key, value in data.items():
        if isinstance(value, dict) and "__id__" in value:
            out[value["__id__"]] = {"result": value.get("result"), "changes": value.get("changes") or {},
                                    "comment": str(value.get("comment"))[:500]}
    return out


def verify(level, timeout):
    """``salt controller-0 ipsec.verify level=...`` until it passes (or timeout)."""
    last = {}

    def passed():
        _, data = salt(NODE, "ipsec.verify", "level=" + level, timeout=120)
        last["v"] = (data or {}).get(NODE)
        return isinstance(last["v"], dict) and last["v"].get("result") is True
    started = time.monotonic()
    _wait(passed, timeout, interval=5)
    return {"verdict": last.get("v"), "seconds": round(time.monotonic() - started, 1)}


def say(message):
    """A progress line in the job's phase.log (the unit's stdout)."""
    print("{:8.1f} {}".format(float(open("/proc/uptime").read().split()[0]), message), flush=True)


def wait_minion():
    """Until the minion says it is ready (its log: a ``salt`` CLI call
    costs tens of seconds under emulation), then one test.ping."""
    say("waiting for the minion")
    log = os.path.join(LAB_DIR, NODE, "salt", "var", "log", "salt", "minion")
    booted = time.time() - float(open("/proc/uptime").read().split()[0])

    def ready():
        # This boot's lines only: the log is on the persistent disk.
        try:
            with open(log, encoding="utf-8", errors="replace") as handle:
                lines = [line for line in handle if "Minion is ready to receive requests!" in line]
        except FileNotFoundError:
            return False
        return any(time.mktime(time.strptime(line[:19], "%Y-%m-%d %H:%M:%S")) >= booted - 1 for line in lines)
    # Seen: 500 s in a reboot beside the suite (the master starts first).
    _wait(ready, 1200, interval=2)
    if not _wait(lambda: (salt(NODE, "test.ping", timeout=30)[1] or {}).get(NODE), 300):
        raise RuntimeError("the VM's own minion did not answer its master")


def phase_apply(facts, params):
    facts["before"] = units_state()
    wait_minion()
    say("saltutil.sync_all")
    facts["sync"] = salt(NODE, "saltutil.sync_all")[0]
    say("state.apply ipsec test=True")
    _, predicted = salt(NODE, "state.apply", "ipsec", "test=True", timeout=900)
    facts["predicted"] = state_summary((predicted or {}).get(NODE))
    say("state.apply ipsec")
    started = time.monotonic()
    rc, applied = salt(NODE, "state.apply", "ipsec", timeout=900)
    facts["apply_seconds"] = round(time.monotonic() - started, 1)
    facts["apply_rc"] = rc
    facts["applied"] = state_summary((applied or {}).get(NODE))
    facts["after"] = units_state()
    facts["nft"] = nft_ruleset()
    say("peers' plutos")
    start_peer_plutos(params["job_dir"])
    say("verify level=child")
    facts["child"] = verify("child", 300)
    return "reboot"


def phase_rebooted(facts, params):
    # What systemd did at boot, before anything else here touches it.
    # Until systemd's start is over (IPSEC_DROP_IN's timeout at most).
    facts["active_wait"] = _wait(lambda: _sh(["systemctl", "is-active", "ipsec"])[1] in ("active", "failed"), 960)
    facts["boot"] = units_state()
    facts["nft"] = nft_ruleset()
    facts["ipsec_unit"] = _sh(["systemctl", "show", "ipsec", "-p", "FragmentPath", "-p", "ExecMainPID",
                               "-p", "NRestarts", "-p", "ActiveState"])[1]
    say("peers' plutos")
    start_peer_plutos(params["job_dir"])
    wait_minion()
    say("verify level=child")
    facts["child"] = verify("child", 300)
    facts["traffic_before"] = _sh(["ipsec", "whack", "--trafficstatus"])[1]
    say("verify level=traffic")
    facts["traffic"] = verify("traffic", 240)
    facts["traffic_after"] = _sh(["ipsec", "whack", "--trafficstatus"])[1]
    _, plan = salt(NODE, "ipsec.plan")
    facts["plan"] = (plan or {}).get(NODE)
    say("state.apply ipsec.clean test=True")
    _, predicted = salt(NODE, "state.apply", "ipsec.clean", "test=True", timeout=600)
    facts["clean_predicted"] = state_summary((predicted or {}).get(NODE))
    say("state.apply ipsec.clean")
    rc, cleaned = salt(NODE, "state.apply", "ipsec.clean", timeout=600)
    facts["clean_rc"] = rc
    facts["cleaned"] = state_summary((cleaned or {}).get(NODE))
    return "reboot"


def phase_cleaned(facts, params):
    facts["boot"] = units_state()
    facts["nft"] = nft_ruleset()
    facts["digests"] = {path: file_digest(path) for path in EDITED_FILES + FORMULA_FILES}
    facts["config_dir"] = sorted(os.listdir("/etc/ipsec.d"))
    facts["pluto_running"] = _sh(["pgrep", "-x", "pluto"])[0] == 0
    return "poweroff"


def save_logs(job_mount, phase):
    """The master's and the minion's logs and this boot's journal of the
    lab's units, for a failure's report."""
    target = os.path.join(job_mount, "logs", str(phase))
    os.makedirs(target, exist_ok=True)
    for path in glob.glob(os.path.join(LAB_DIR, "*", "var", "log", "salt", "*")) + \
            glob.glob(os.path.join(LAB_DIR, "*", "salt", "var", "log", "salt", "*")):
        name = os.path.relpath(path, LAB_DIR).replace("/", "_")
        subprocess.run(["cp", path, os.path.join(target, name)], check=False)
    with open(os.path.join(target, "journal.txt"), "w", encoding="utf-8") as handle:
        subprocess.run(["journalctl", "-b", "--no-pager", "-u", "ipsec", "-u", "nftables", "-u", "salt-minion",
                        "-u", "salt-master", "-u", "ipsec-lab-net"], stdout=handle, stderr=subprocess.STDOUT,
                       check=False)


def run_phase(job_mount):
    """The ``phase`` unit: run the first phase without facts, write them,
    then reboot or power off."""
    phase = next((p for p in PHASES if not os.path.exists(os.path.join(job_mount, p + ".json"))), None)
    facts = {"phase": phase, "uptime": float(open("/proc/uptime").read().split()[0])}
    then = "poweroff"
    started = time.monotonic()
    say("phase {}".format(phase))
    try:
        with open(os.path.join(job_mount, "params.json"), encoding="utf-8") as handle:
            params = json.load(handle)
        if phase is not None:
            then = {"apply": phase_apply, "rebooted": phase_rebooted, "cleaned": phase_cleaned}[phase](
                facts, params)
    except Exception:  # noqa: BLE001 - reported to the host
        facts["error"] = traceback.format_exc()
        then = "poweroff"
    facts["seconds"] = round(time.monotonic() - started, 1)
    save_logs(job_mount, phase)
    say("phase {} done in {}s: {}".format(phase, facts["seconds"], then))
    if phase is not None:
        with open(os.path.join(job_mount, phase + ".json"), "w", encoding="utf-8") as handle:
            json.dump(facts, handle, indent=1)
    subprocess.run(["systemctl", "--no-block", then], check=False)
    return 0


# ------------------------------------------------------ in the background

def start(job_dir):
    """``python -m labkit.sysnode run JOB_DIR`` as a child process (dies
    with the caller): the VM runs on one core while the caller goes on
    with work that needs the other. ``collect`` waits for it."""
    from labkit import vm

    def background():
        vm._pdeathsig()
        # Behind the suite's own work (qemu inherits it): the tests beside
        # it time pacemaker and pluto, this VM only has to finish.
        os.nice(NICE)
    os.makedirs(job_dir, exist_ok=True)
    log = open(os.path.join(job_dir, "runner.log"), "w")
    return subprocess.Popen([sys.executable, "-m", "labkit.sysnode", "run", job_dir], cwd=TEST_DIR,
                            stdout=log, stderr=subprocess.STDOUT, preexec_fn=background)


def collect(process, job_dir, timeout=TIMEOUT + 300):
    """Wait for ``start``'s process: (summary of the VM run, {phase: facts},
    params) as ``run`` left them in JOB_DIR."""
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()

    def load(name, default):
        path = os.path.join(job_dir, name)
        if not os.path.exists(path):
            return default
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    summary = load("host-result.json", {"returncode": None, "runner": process.returncode})
    facts = {phase: load(phase + ".json", None) for phase in PHASES}
    return summary, {p: f for p, f in facts.items() if f}, load("params.json", {})


def run_and_record(job_dir):
    """``run`` with its vm.Result summed up in JOB_DIR/host-result.json."""
    try:
        result, _, _ = run(job_dir)
        summary = {"returncode": result.returncode, "timed_out": result.timed_out,
                   "elapsed": round(result.elapsed, 1), "describe": result.describe(tail=6000)}
    except Exception:  # noqa: BLE001 - reported to the test
        summary = {"returncode": None, "error": traceback.format_exc()}
    with open(os.path.join(job_dir, "host-result.json"), "w", encoding="utf-8") as handle:
        json.dump(summary, handle, indent=1)
    return 0


def main(argv):
    command, path = argv[1], argv[2]
    return {"net": network, "phase": run_phase, "run": run_and_record}[command](path)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
