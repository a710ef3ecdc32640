"""An isolated pluto: own config, secrets, NSS db, run dir and log.

Layout under ``root`` (the same paths the formula's lookup is pointed at):
    etc/ipsec.conf  etc/ipsec.secrets  etc/ipsec.d/  nss/  run/  pluto.log

``libreswan`` (labkit.libreswan.get(): 4.10 by default) is the install it
runs; ``lookup()`` points the formula at the same one.
"""

import os
import re
import subprocess
import time

import ipsec_status

from labkit import libreswan as libreswans

# The last step of pluto's start-up addconn (4.x and 5.x): every conn of
# the config is added, then pluto listens. Its control socket answers
# before: a status read in between misses conns.
STARTED = "listening for IKE messages"
ADDCONN_ECHO = re.compile(r"^[^\n]*?\d\d:\d\d:\d\d\.\d+: addconn: ")

_REVIVING = re.compile(r'"([^"]+)"(?:\[\d+\])?: reviving connection ')
_CHILD_INIT = re.compile(r'"([^"]+)"(?:\[\d+\])? #(\d+): initiating Child SA using IKE SA #\d+')
_SERIAL = re.compile(r'"[^"]+"(?:\[\d+\])? #(\d+): ')


def without_child_revivals(text):
    """pluto log text without pluto's own Child SA revivals: where a Child
    SA cannot be installed (this kernel has no ESP), 5.x keeps "reviving"
    the conn over its IKE SA every few seconds (4.10 does not). Those
    lines are its own doing, not a reaction to what a test changed."""
    reviving = set(_REVIVING.findall(text))
    serials = {serial for conn, serial in _CHILD_INIT.findall(text) if conn in reviving}
    kept = []
    for line in text.splitlines(True):
        if _REVIVING.search(line):
            continue
        serial = _SERIAL.search(line)
        if serial and serial.group(1) in serials:
            continue
        kept.append(line)
    return "".join(kept)


IPSEC = "/usr/sbin/ipsec"  # Debian's 4.10 (benches); tests take labkit.libreswan


class Pluto:
    def __init__(self, root, netns=None, libreswan=None):
        self.root = str(root)
        self.netns = netns
        self.libreswan = libreswan or libreswans.get()
        self.ipsec_bin = self.libreswan.ipsec_bin
        self.config_file = os.path.join(self.root, "etc", "ipsec.conf")
        self.secrets_file = os.path.join(self.root, "etc", "ipsec.secrets")
        self.config_dir = os.path.join(self.root, "etc", "ipsec.d")
        self.nss_dir = os.path.join(self.root, "nss")
        self.rundir = os.path.join(self.root, "run")
        self.ctlsocket = os.path.join(self.rundir, "pluto.ctl")
        self.logfile = os.path.join(self.root, "pluto.log")
        self.process = None
        # etc/iptables: where iptables-persistent keeps its saved rules.
        for path in (self.config_dir, self.nss_dir, self.rundir, os.path.join(self.root, "etc", "iptables")):
            os.makedirs(path, exist_ok=True)

    def lookup(self):
        """The formula's ``ipsec:lookup`` pillar for this instance."""
        return dict({
            "pkg": {"manage": False},
            "service": {"manage": False},
            "config_file": self.config_file,
            "secrets_file": self.secrets_file,
            "config_dir": self.config_dir,
            "nss_dir": self.nss_dir,
            "rundir": self.rundir,
            "ctlsocket": self.ctlsocket,
            # The persisted firewall too stays in this instance's root.
            "firewall": {
                "nft_conf": os.path.join(self.root, "etc", "nftables.conf"),
                "nft_file": os.path.join(self.root, "etc", "ipsec-formula.nft"),
                "iptables_rules_v4": os.path.join(self.root, "etc", "iptables", "rules.v4"),
                "iptables_rules_v6": os.path.join(self.root, "etc", "iptables", "rules.v6"),
            },
        }, **self.libreswan.lookup())

    def _cmd(self, cmd):
        return (["ip", "netns", "exec", self.netns] if self.netns else []) + cmd

    def _exec(self, argv, check=False):
        return subprocess.run(self._cmd(argv), capture_output=True, text=True, check=check)

    def run(self, *args, check=False):
        return self._exec([self.ipsec_bin] + list(args), check=check)

    def start(self, timeout=10):
        if not self.netns:
            # A pluto in the host namespace would send IKE to the planned
            # peers over the host's own network: never.
            raise RuntimeError("an isolated pluto only starts inside a network namespace")
        if not self._exists(os.path.join(self.nss_dir, "cert9.db")):
            self.run("initnss", "--nssdir", self.nss_dir, check=True)
        cmd = self._cmd([
            self.ipsec_bin, "pluto", "--config", self.config_file, "--nofork",
            "--rundir", self.rundir, "--nssdir", self.nss_dir,
            "--ipsecdir", self.config_dir, "--secretsfile", self.secrets_file,
            "--logfile", self.logfile,
        ])
        logged = self._log_size()  # the log file is appended to across restarts
        self.process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("pluto exited with {}: {}".format(self.process.returncode, self.log()[-2000:]))
            # Cheapest first: in the emulated VM this loop shares the only
            # CPU with the pluto it waits for.
            if self._exists(self.ctlsocket) and STARTED in self._log_since(logged) \
                    and self.whack("--briefstatus").returncode == 0:
                return self
            time.sleep(0.05)
        raise RuntimeError("pluto did not answer and load its config ({!r} in its log) within {}s".format(
            STARTED, timeout))

    def _exists(self, path):
        """Whether ``path`` (as pluto's command line names it) exists."""
        return os.path.exists(self.real(path))

    def real(self, path):
        """Where a path of pluto's command line is, seen from here."""
        return path

    def clear_run_state(self, log=False):
        """What a killed pluto left in its run directory (and, with
        ``log``, its log: a fresh start on old files)."""
        for name in os.listdir(self.real(self.rundir)):
            os.unlink(os.path.join(self.real(self.rundir), name))
        if log and os.path.exists(self.real(self.logfile)):
            os.unlink(self.real(self.logfile))

    def whack(self, *args):
        return self._exec([self.libreswan.whack_bin, "--rundir", self.rundir] + list(args))

    def add(self, *names, config=None):
        """Load conns from ``config`` (default: this pluto's config) with
        addconn, as both releases spell it."""
        return self.run("addconn", "--config", config or self.config_file, "--ctlsocket", self.ctlsocket, *names)

    def up(self, name, timeout=None):
        """Initiate ``name`` and wait for the result (``ipsec auto --up``
        in 4.x; ``ipsec up`` in 5.x, where ``auto`` is deprecated)."""
        verb = ["auto", "--up"] if self.libreswan.major < 5 else ["up"]
        return subprocess.run(self._cmd([self.ipsec_bin] + verb[:1] + ["--config", self.config_file, "--ctlsocket",
                                                                         self.ctlsocket] + verb[1:] + [name]),
                              capture_output=True, text=True, timeout=timeout)

    def status(self):
        return self.whack("--status").stdout

    def trafficstatus(self):
        """``whack --trafficstatus``: one line per installed IPsec SA."""
        return self.whack("--trafficstatus").stdout

    def connection_names(self):
        """Names of loaded conns (the formula's own reading of the status)."""
        return set(ipsec_status.parse_loaded(self.status()))

    def _log_size(self):
        try:
            return os.path.getsize(self.real(self.logfile))
        except FileNotFoundError:
            return 0

    def _log_since(self, offset):
        """What pluto logged after ``offset`` bytes (all of it if the file
        is shorter: truncated); read from there, not the whole log."""
        try:
            with open(self.real(self.logfile), "rb") as handle:
                if os.fstat(handle.fileno()).st_size >= offset:
                    handle.seek(offset)
                return handle.read().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def raw_log(self):
        return self._log_since(0)

    def log(self):
        """pluto's log. 5.x pluto runs addconn at start-up and copies its
        output into the log as ``<time>: addconn: <line>``, repeating
        pluto's own ``added IKEv2 connection`` lines: those copies are left
        out, so counts mean the same on every release (raw_log has all)."""
        return "".join(line for line in self.raw_log().splitlines(True) if not ADDCONN_ECHO.match(line))

    def stop(self, timeout=10):
        if self.process is None or self.process.poll() is not None:
            return
        self.whack("--shutdown")
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
