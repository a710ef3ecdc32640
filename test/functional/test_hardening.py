"""Hardening through a real salt-call (--local) on a temporary root: the red
team's findings as classes (issue: Hardening II).

- a pillar bad only in ipsec:lookup, or only in ipsec:pacemaker, fails at
  render time and leaves every file byte-identical (no injected command
  runs);
- the plan is built once per state.apply;
- a formula path replaced by a symlink to a secrets file: no PSK in any
  diff, and the link is replaced, its target untouched;
- ownership by record: an operator's own `overcloud-backup` conn stays
  loaded; a prefix change removes the old conns and files, also in clean;
- clean details: a symlinked ipsec.secrets stays a link, operator lines
  that merely look like the formula's stay, an operator ipsec.conf with the
  formula's header text comes back byte for byte;
- a failure at each late step (checkconfig, firewall check, a full disk,
  pluto refusing a conn) leaves every file byte-identical and pluto's
  loaded set unchanged.
"""

import hashlib
import json
import os
import stat
import subprocess
import sys
import textwrap

import pytest

from labkit import examples, saltenv
from labkit.pluto import IPSEC, Pluto

NODE = "controller-0"
CIDRS = ["198.51.100.10/25", "198.51.100.130/25", "203.0.113.10/24", "2001:db8:0:1::10/64"]


def snapshot(root, skip=("pluto.log", "run", "nss")):
    """{relative path: (kind, mode, sha256 or link target)} of everything
    under root (symlinks as links), but pluto's own runtime files."""
    found = {}
    for base, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if os.path.relpath(os.path.join(base, d), root) not in skip]
        for name in files + [d for d in dirs if os.path.islink(os.path.join(base, d))]:
            path = os.path.join(base, name)
            rel = os.path.relpath(path, root)
            if rel in skip:
                continue
            info = os.lstat(path)
            if stat.S_ISLNK(info.st_mode):
                found[rel] = ("link", os.readlink(path))
            else:
                with open(path, "rb") as handle:
                    found[rel] = ("file", stat.S_IMODE(info.st_mode), hashlib.sha256(handle.read()).hexdigest())
    return found


class Node:
    """One formula node in its own namespace, with an isolated pluto."""

    def __init__(self, factory, layout, ns):
        self.factory = factory
        self.layout = layout
        self.ns = ns
        self.cli = factory.salt_call_cli(timeout=180)
        self.pluto = None

    def set_pillar(self, **extra):
        lookup = dict(self.layout.lookup(), **extra.pop("lookup", {}))
        saltenv.write_pillar(self.factory.pillar_dir, examples.pillar(lookup=lookup, **extra))

    def call(self, *args, env=None):
        cmd = ["ip", "netns", "exec", self.ns.name] + self.cli.cmdline("--local", *args)
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
        try:
            data = json.loads(result.stdout)["local"]
        except (ValueError, KeyError, TypeError):
            data = None
        return result.returncode, data, result.stdout + result.stderr

    def apply(self, *args, env=None):
        return self.call("state.apply", "ipsec", *args, env=env)

    def start_pluto(self):
        self.pluto = Pluto(self.layout.root, self.ns.name).start()
        return self.pluto


@pytest.fixture
def node(salt_node, tmp_path, namespace_factory):
    ns = namespace_factory("hard")
    ns.add_stub(CIDRS)
    layout = Pluto(tmp_path / "root")
    factory = salt_node(NODE, examples.own_ips(NODE), examples.pillar(lookup=layout.lookup()))
    made = Node(factory, layout, ns)
    yield made
    if made.pluto:
        made.pluto.stop()


def changes(data):
    return {v["__id__"]: v["changes"] for v in data.values() if v["changes"]}


@pytest.mark.parametrize("extra,key", [
    ({"lookup": {"nss_dir": "/x; touch /tmp/PWNED-ipsec-formula;"}}, "ipsec:lookup:nss_dir"),
    ({"lookup": {"pacemaker": {"agent": "../../../../file"}}}, "ipsec:lookup:pacemaker:agent"),
    ({"lookup": {"config_dir": "/etc/ipsec d"}}, "ipsec:lookup:config_dir"),
    ({"pacemaker": {"manage": True, "monitor_interval": "10s\n"}}, "ipsec:pacemaker:monitor_interval"),
    ({"pacemaker": {"manage": "false"}}, "ipsec:pacemaker:manage"),
])
def test_bad_only_in_lookup_or_pacemaker_leaves_every_file_byte_identical(node, extra, key):
    node.set_pillar()
    rc, _, output = node.apply()
    assert rc == 0, output
    before = snapshot(node.layout.root)
    node.set_pillar(**extra)
    for args in ((), ("test=True",)):
        rc, _, output = node.apply(*args)
        assert rc != 0 and key + ": " in output, output
    assert snapshot(node.layout.root) == before
    assert not os.path.exists("/tmp/PWNED-ipsec-formula")
    rc, _, output = node.call("state.apply", "ipsec.clean")
    assert rc != 0 and key + ": " in output, output
    assert snapshot(node.layout.root) == before


def test_the_plan_is_built_once_per_state_apply(node, tmp_path):
    node.set_pillar()
    log_file = tmp_path / "debug.log"
    rc, _, output = node.call("--log-file={}".format(log_file), "--log-file-level=debug", "state.apply", "ipsec")
    assert rc == 0, output
    built = [line for line in log_file.read_text().splitlines() if "ipsec: plan built for" in line]
    assert len(built) == 1, built


def test_a_symlinked_formula_path_never_shows_the_secret(node):
    node.set_pillar()
    assert node.apply()[0] == 0
    conf = os.path.join(node.layout.config_dir, "overcloud-storage-node-to-node-tunnels.conf")
    secrets = os.path.join(node.layout.config_dir, "overcloud-storage-node-to-node-tunnels.secrets")
    secret_copy = os.path.join(node.layout.root, "somewhere.secrets")
    with open(secrets) as handle, open(secret_copy, "w") as out:
        out.write(handle.read())
    os.unlink(conf)
    os.symlink(secret_copy, conf)
    target_before = open(secret_copy).read()
    for args in (("test=True",), ()):
        rc, data, output = node.apply(*args)
        assert rc == 0, output
        assert examples.PSK not in output
        assert "not shown" in json.dumps(changes(data)["ipsec-tunnel-files-managed"][conf])
    assert not os.path.islink(conf) and "conn overcloud-storage-" in open(conf).read()
    assert open(secret_copy).read() == target_before


def test_ownership_by_record_across_a_prefix_change(node):
    node.set_pillar()
    site = os.path.join(node.layout.config_dir, "site-a.conf")
    with open(site, "w") as handle:
        handle.write("conn overcloud-backup\n\tleft=198.51.100.10\n\tright=198.51.100.99\n"
                     "\tauthby=secret\n\tauto=add\n")
    with open(os.path.join(node.layout.config_dir, "my-vpn.secrets"), "w") as handle:
        handle.write("# the operator's\n")
    assert node.apply()[0] == 0
    pluto = node.start_pluto()
    ours = {n for n in pluto.connection_names() if n != "overcloud-backup"}
    assert "overcloud-backup" in pluto.connection_names() and ours

    rc, data, output = node.apply()
    assert rc == 0 and "ipsec-tunnel-files-managed" not in changes(data), output
    assert "overcloud-backup" in pluto.connection_names()

    node.set_pillar(prefix="cloud")
    rc, data, output = node.apply()
    assert rc == 0, output
    loaded = pluto.connection_names()
    assert "overcloud-backup" in loaded and not (ours & loaded)
    assert any(n.startswith("cloud-") for n in loaded)
    names = sorted(os.listdir(node.layout.config_dir))
    assert not [n for n in names if n.startswith("overcloud-")], names
    assert "site-a.conf" in names and "my-vpn.secrets" in names

    node.set_pillar(prefix="*")
    rc, _, output = node.call("state.apply", "ipsec.clean")
    assert rc != 0 and "ipsec:prefix: " in output
    node.set_pillar(prefix="cloud")
    rc, _, output = node.call("state.apply", "ipsec.clean")
    assert rc == 0, output
    assert sorted(os.listdir(node.layout.config_dir)) == ["my-vpn.secrets", "site-a.conf"]
    assert pluto.connection_names() == {"overcloud-backup"}


def test_clean_keeps_the_operators_links_lines_and_files(node, tmp_path):
    real_secrets = tmp_path / "vault" / "ipsec.secrets"
    real_secrets.parent.mkdir()
    operator = '@a @b : PSK "operator-secret-0123456789abcdefghijkl"\ninclude /srv/x.secrets  # ipsec-formula\n'
    real_secrets.write_text(operator)
    os.chmod(real_secrets, 0o600)
    os.symlink(str(real_secrets), node.layout.secrets_file)
    operator_conf = ("# Managed by Salt (ipsec-formula). Local changes are overwritten.\n"
                     "config setup\n\tuniqueids=yes\n\tlogfile=/var/log/site.log\n")
    with open(node.layout.config_file, "w") as handle:
        handle.write(operator_conf)
    node.set_pillar()
    rc, _, output = node.apply()
    assert rc == 0, output
    assert os.path.islink(node.layout.secrets_file)
    assert real_secrets.read_text().startswith(operator)
    conf = open(node.layout.config_file).read()
    assert "\tuniqueids=no\n" in conf and "#ipsec-formula-disabled: uniqueids=yes" in conf
    assert "logfile=/var/log/site.log" in conf
    rc, _, output = node.call("state.apply", "ipsec.clean")
    assert rc == 0, output
    assert os.path.islink(node.layout.secrets_file)
    assert real_secrets.read_text() == operator
    assert open(node.layout.config_file).read() == operator_conf


# --- a failure at each late step leaves everything as it was ---------------

FAILING_CHECKCONFIG = textwrap.dedent("""\
    #!/bin/sh
    # ipsec, but addconn --checkconfig refuses (a late-step fault)
    case "$*" in *--checkconfig*) echo "forced: the new configuration is refused" >&2; exit 3 ;; esac
    exec {ipsec} "$@"
    """)
FAILING_NFT_CHECK = textwrap.dedent("""\
    #!/bin/sh
    # nft, but a check (-c) refuses (a late-step fault)
    case "$1" in -c) echo "forced: nft -c refuses" >&2; exit 1 ;; esac
    exec /usr/sbin/nft "$@"
    """)


def _script(path, text):
    path.write_text(text)
    path.chmod(0o755)
    return str(path)


def _changed_pillar(node, **extra):
    """The pillar of the next run: one more peer, another storage algorithm."""
    pillar = examples.pillar(lookup=dict(node.layout.lookup(), **extra.pop("lookup", {})), **extra)
    pillar["networks"]["storage"]["algorithm"] = "aes_gcm256-null"
    pillar["nodes"]["compute-9"] = {"addresses": {"internal_api": "198.51.100.29", "tenant": "2001:db8:0:1::29"}}
    pillar["config_setup"] = {"logappend": "no"}
    return pillar


@pytest.mark.parametrize("step", ["checkconfig", "firewall", "pluto"])
def test_a_late_failure_leaves_every_file_and_pluto_as_they_were(node, tmp_path, step):
    node.set_pillar(firewall={"manage": True})
    assert node.apply()[0] == 0
    pluto = node.start_pluto()
    loaded = pluto.connection_names()
    before = snapshot(node.layout.root)
    env = dict(os.environ)
    lookup = {}
    if step == "checkconfig":
        lookup["ipsec_bin"] = _script(tmp_path / "ipsec", FAILING_CHECKCONFIG.format(ipsec=IPSEC))
    elif step == "firewall":
        bindir = tmp_path / "bin"
        bindir.mkdir()
        _script(bindir / "nft", FAILING_NFT_CHECK)
        env["PATH"] = "{}:{}".format(bindir, env.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"))
    pillar = _changed_pillar(node, lookup=lookup, firewall={"manage": True})
    if step == "pluto":
        # Without algparse a proposal pluto refuses gets as far as pluto.
        pillar["lookup"]["algparse"] = "/nonexistent/algparse"
        pillar["networks"]["storage"]["algorithm"] = "aes_gcm128-sha1"
    saltenv.write_pillar(node.factory.pillar_dir, pillar)
    expected = {"checkconfig": "forced: the new configuration is refused", "firewall": "forced: nft -c refuses",
                "pluto": "failed to add connection"}[step]
    if step != "pluto":
        # test=True runs the same read-only checks: it predicts the failure.
        rc, data, output = node.apply("test=True", env=env)
        assert rc != 0 and expected in output, output
    rc, data, output = node.apply(env=env)
    assert rc != 0, output
    assert expected in output
    assert snapshot(node.layout.root) == before
    assert pluto.connection_names() == loaded
    assert examples.PSK not in output


def test_a_full_disk_leaves_every_file_as_it_was(node, tmp_path):
    """The config dir on a tmpfs with room for one more file (in a mount
    namespace of its own): staging the new files fails with ENOSPC, and
    nothing was renamed."""
    node.set_pillar()
    assert node.apply()[0] == 0
    pillar = _changed_pillar(node)
    saltenv.write_pillar(node.factory.pillar_dir, pillar)
    config_dir = node.layout.config_dir
    report = tmp_path / "report.json"
    script = tmp_path / "full-disk.py"
    script.write_text(textwrap.dedent("""\
        import hashlib, json, os, shutil, subprocess, sys, tempfile
        config_dir, report, cmd = sys.argv[1], sys.argv[2], sys.argv[3:]
        keep = tempfile.mkdtemp()
        for name in os.listdir(config_dir):
            shutil.copy2(os.path.join(config_dir, name), keep)
        count = len(os.listdir(keep))
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size={}".format((count + 1) * 4096), "tmpfs", config_dir],
                       check=True)
        for name in os.listdir(keep):
            shutil.copy2(os.path.join(keep, name), config_dir)
        def snap():
            return {n: hashlib.sha256(open(os.path.join(config_dir, n), "rb").read()).hexdigest()
                    for n in sorted(os.listdir(config_dir))}
        before = snap()
        run = subprocess.run(cmd, capture_output=True, text=True)
        json.dump({"before": before, "after": snap(), "rc": run.returncode, "output": run.stdout + run.stderr},
                  open(report, "w"))
        """))
    conf_before = open(node.layout.config_file, "rb").read()
    secrets_before = open(node.layout.secrets_file, "rb").read()
    cmd = ["unshare", "-m", "--propagation", "private", sys.executable,
           str(script), config_dir, str(report)] + node.cli.cmdline("--local", "state.apply", "ipsec")
    subprocess.run(["ip", "netns", "exec", node.ns.name] + cmd, check=True, timeout=300)
    result = json.loads(report.read_text())
    assert result["rc"] != 0, result["output"]
    assert "No space left on device" in result["output"], result["output"]
    assert result["after"] == result["before"]
    assert open(node.layout.config_file, "rb").read() == conf_before
    assert open(node.layout.secrets_file, "rb").read() == secrets_before
