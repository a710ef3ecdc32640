"""The lab (labkit.lab) with the master deriving per-tunnel keys: its
ext_pillar ``ipsec_keys`` configured on a root-only secret file, synced
with ``salt-run saltutil.sync_all``, and helpers for rotations and for
trying keys against a node.
"""

import base64
import glob
import json
import os
import re
import subprocess
import threading
import time

from labkit import examples
from labkit.lab import BIN, Lab

NEW_PSK = "rotated-psk-8d2e4b6a1c9f7e3d5b0a2c4e6f8a1b3d"
# A secrets line: "<ids> : PSK <token>" (quoted text or 0s base64).
PSK_LINE = re.compile(r'^(?P<ids>.+?) : PSK (?:"(?P<text>[^"]*)"|0s(?P<b64>\S+))$')


def psk_tokens(text):
    """{ids: secret} of the PSK lines of a secrets file text."""
    found = {}
    for line in text.splitlines():
        match = PSK_LINE.match(line.strip())
        if match:
            secret = match.group("text")
            if secret is None:
                secret = base64.b64decode(match.group("b64")).decode("utf-8", "replace")
            found[match.group("ids")] = secret
    return found


class KeysLab(Lab):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.secret_file = os.path.join(self.workdir, "master-secret", "ipsec-keys.secret")
        os.makedirs(os.path.dirname(self.secret_file), mode=0o700)
        fd = os.open(self.secret_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(base64.b64encode(os.urandom(48)).decode("ascii") + "\n")
        self.master_options = {"ext_pillar": [{"ipsec_keys": {"secret_file": self.secret_file}}]}

    def master_secret(self):
        with open(self.secret_file) as handle:
            return handle.read().strip()

    def set_keys(self, mode, version, psk=examples.PSK):
        """The example pillar with ``ipsec:keys`` (no PSK in derived mode)."""
        self.ipsec_overrides = {"keys": {"mode": mode, "version": version},
                                "psk": psk if mode == "shared" else None}
        self.write_example_pillar()

    def start_salt(self, timeout=90):
        super().start_salt(timeout)
        rc, data = self.salt_run("saltutil.sync_all")
        if rc != 0 or "pillar.ipsec_keys" not in json.dumps(data):
            raise RuntimeError("salt-run saltutil.sync_all did not sync the ext_pillar: {}".format(data))

    def salt_run(self, *args, timeout=600):
        """``salt-run ARGS`` on the master: (retcode, parsed JSON or text)."""
        cmd = ["ip", "netns", "exec", self.switch.name, os.path.join(BIN, "salt-run"), "-c", self.master_dir,
               "--out=json"] + list(args)
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        try:
            data = json.loads(result.stdout)
        except ValueError:
            data = result.stdout + result.stderr
        return result.returncode, data

    def rotate(self, version, level="ike"):
        """``salt-run state.orchestrate ipsec.orch.rotate`` to ``version``:
        (retcode, data, text) with the run's whole output as text."""
        rc, data = self.salt_run("state.orchestrate", "ipsec.orch.rotate",
                                 "pillar=" + json.dumps({"ipsec_rotate": {"version": version, "level": level}}))
        return rc, data, json.dumps(data) if not isinstance(data, str) else data

    def secrets(self, node_id):
        """{path: text} of the formula's secrets files on a node."""
        out = {}
        for path in sorted(glob.glob(os.path.join(self.nodes[node_id].pluto.config_dir, "*.secrets"))):
            with open(path) as handle:
                out[path] = handle.read()
        return out

    def put_secrets(self, node_id, texts):
        for path, text in texts.items():
            with open(path, "w") as handle:
                handle.write(text)

    def issued(self, node_id):
        """The keys the master issues to a node (its pillar compiled now:
        ``pillar.items`` asks the master, ``pillar.get`` would not;
        unmask: Salt 3008 masks pillar values in output)."""
        rc, data = self.salt(node_id, "pillar.items", "unmask=True")
        issued = ((((data or {}).get(node_id) or {}).get("ipsec") or {}).get("keys") or {}).get("issued")
        if rc != 0 or not isinstance(issued, dict):
            raise RuntimeError("pillar.items on {} has no ipsec:keys:issued (rc={})".format(node_id, rc))
        return issued


def keys_in(tree):
    """Every key string of an issued-keys tree."""
    if isinstance(tree, dict):
        return {k for key, value in tree.items() if key != "version" for k in keys_in(value)}
    return {tree} if isinstance(tree, str) else set()


class VerifyPoller:
    """``ipsec.verify`` on every node, again and again, in a thread (while a
    rotation runs): ``results`` holds (time, rc, failed conns per node)."""

    def __init__(self, lab, level="ike"):
        self.lab, self.level = lab, level
        self.results, self._stop = [], threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            rc, data = self.lab.salt("*", "ipsec.verify", "level=" + self.level, timeout=60)
            failed = {n: sorted((v or {}).get("failed", {})) if isinstance(v, dict) else v
                      for n, v in (data or {}).items()}
            self.results.append((time.monotonic(), rc, failed))

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(120)
