"""An isolated pluto: own config, secrets, NSS db, run dir and log.

Layout under ``root`` (the same paths the formula's lookup is pointed at):
    etc/ipsec.conf  etc/ipsec.secrets  etc/ipsec.d/  nss/  run/  pluto.log
"""

import os
import subprocess
import time

import ipsec_status

IPSEC = "/usr/sbin/ipsec"


class Pluto:
    def __init__(self, root, netns=None):
        self.root = str(root)
        self.netns = netns
        self.config_file = os.path.join(self.root, "etc", "ipsec.conf")
        self.secrets_file = os.path.join(self.root, "etc", "ipsec.secrets")
        self.config_dir = os.path.join(self.root, "etc", "ipsec.d")
        self.nss_dir = os.path.join(self.root, "nss")
        self.rundir = os.path.join(self.root, "run")
        self.ctlsocket = os.path.join(self.rundir, "pluto.ctl")
        self.logfile = os.path.join(self.root, "pluto.log")
        self.process = None
        for path in (self.config_dir, self.nss_dir, self.rundir):
            os.makedirs(path, exist_ok=True)

    def lookup(self):
        """The formula's ``ipsec:lookup`` pillar for this instance."""
        return {
            "pkg": {"manage": False},
            "service": {"manage": False},
            "config_file": self.config_file,
            "secrets_file": self.secrets_file,
            "config_dir": self.config_dir,
            "nss_dir": self.nss_dir,
            "rundir": self.rundir,
            "ctlsocket": self.ctlsocket,
        }

    def _cmd(self, cmd):
        return (["ip", "netns", "exec", self.netns] if self.netns else []) + cmd

    def run(self, *args, check=False):
        return subprocess.run(self._cmd([IPSEC] + list(args)), capture_output=True, text=True, check=check)

    def start(self, timeout=10):
        if not self.netns:
            # A pluto in the host namespace would send IKE to the planned
            # peers over the host's own network: never.
            raise RuntimeError("an isolated pluto only starts inside a network namespace")
        if not os.path.exists(os.path.join(self.nss_dir, "cert9.db")):
            self.run("initnss", "--nssdir", self.nss_dir, check=True)
        cmd = self._cmd([
            IPSEC, "pluto", "--config", self.config_file, "--nofork",
            "--rundir", self.rundir, "--nssdir", self.nss_dir,
            "--ipsecdir", self.config_dir, "--secretsfile", self.secrets_file,
            "--logfile", self.logfile,
        ])
        self.process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("pluto exited with {}: {}".format(self.process.returncode, self.log()[-2000:]))
            if os.path.exists(self.ctlsocket) and self.whack("--briefstatus").returncode == 0:
                return self
            time.sleep(0.05)
        raise RuntimeError("pluto did not answer within {}s".format(timeout))

    def whack(self, *args):
        return self.run("whack", "--rundir", self.rundir, *args)

    def status(self):
        return self.whack("--status").stdout

    def trafficstatus(self):
        """``whack --trafficstatus``: one line per installed IPsec SA."""
        return self.whack("--trafficstatus").stdout

    def connection_names(self):
        """Names of loaded conns (the formula's own reading of the status)."""
        return set(ipsec_status.parse_loaded(self.status()))

    def log(self):
        try:
            with open(self.logfile, encoding="utf-8", errors="replace") as handle:
                return handle.read()
        except FileNotFoundError:
            return ""

    def stop(self, timeout=10):
        if self.process is None or self.process.poll() is not None:
            return
        self.whack("--shutdown")
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
