"""The formula applied by a real salt-call (--local) into a temporary root:
files and modes, idempotence, test=True accuracy, failure with no writes,
stale-file removal, the PSK kept out of every output and log."""

import json
import os
import stat

import pytest

import ipsec_keys
import ipsec_plan
from labkit import examples, labkeys, saltenv
from labkit.pluto import Pluto

NODE = "controller-0"


def snapshot(root):
    """{relative path: (mode, content, mtime)} of every file under root."""
    found = {}
    for base, _, files in os.walk(root):
        for name in files:
            path = os.path.join(base, name)
            info = os.stat(path)
            with open(path, "rb") as handle:
                found[os.path.relpath(path, root)] = (stat.S_IMODE(info.st_mode), handle.read(), info.st_mtime_ns)
    return found


class Node:
    """One formula node: a minion factory, its pillar dir, its temp root."""

    def __init__(self, factory, layout):
        self.factory = factory
        self.layout = layout
        self.cli = factory.salt_call_cli(timeout=120)

    def set_pillar(self, ipsec):
        saltenv.write_pillar(self.factory.pillar_dir, ipsec)

    def call(self, *args):
        return self.cli.run("--local", *args)

    def apply(self, *args):
        return self.call("state.apply", "ipsec", *args)


def states(result):
    """state id -> state return, from a state.apply ProcessResult."""
    assert isinstance(result.data, dict), result.stdout + result.stderr
    return {value["__id__"]: value for value in result.data.values()}


def changed(result):
    return {sid: st["changes"] for sid, st in states(result).items() if st["changes"]}


@pytest.fixture
def node(salt_node, tmp_path):
    layout = Pluto(tmp_path / "root")
    pillar = examples.pillar(lookup=layout.lookup())
    factory = salt_node(NODE, examples.own_ips(NODE), pillar)
    return Node(factory, layout)


def test_apply_writes_the_plan_with_modes_then_is_idempotent(node):
    first = node.apply()
    assert first.returncode == 0, first.stdout
    assert all(st["result"] is True for st in states(first).values())
    plan = node.call("ipsec.plan").data
    written = sorted(
        os.path.join(node.layout.config_dir, name) for name in os.listdir(node.layout.config_dir)
        if name != ".ipsec-formula.json"
    )
    assert written == sorted(plan["files"])
    manifest = json.loads(open(os.path.join(node.layout.config_dir, ".ipsec-formula.json")).read())
    assert manifest["files"] == sorted(plan["files"]) and manifest["conns"] == sorted(plan["connections"])
    for path, meta in plan["files"].items():
        assert "{:04o}".format(stat.S_IMODE(os.stat(path).st_mode)) == meta["mode"]
    conf = open(os.path.join(node.layout.config_dir, "overcloud-redis-vip-tunnels.conf")).read()
    assert "conn overcloud-redis-vip-tunnel\n" in conf and "\tleftid=@redisvip\n" in conf
    ipsec_conf = open(node.layout.config_file).read()
    assert "\tuniqueids=no\n" in ipsec_conf
    assert "include {}/*.conf\n".format(node.layout.config_dir) in ipsec_conf
    assert "include {}/*.secrets".format(node.layout.config_dir) in open(node.layout.secrets_file).read()
    assert stat.S_IMODE(os.stat(node.layout.secrets_file).st_mode) == 0o600
    assert os.path.exists(os.path.join(node.layout.nss_dir, "cert9.db"))

    second = node.apply()
    assert second.returncode == 0
    assert changed(second) == {}


def test_test_mode_predicts_exactly_what_a_run_changes(node):
    assert node.apply().returncode == 0
    pillar = examples.pillar(lookup=node.layout.lookup(), config_setup={"logappend": "no"})
    del pillar["nodes"]["compute-0"]                      # tunnels go away
    pillar["networks"]["storage"]["algorithm"] = "aes_gcm256-null"  # conns change
    pillar["skip_networks"] = ["ctlplane", "tenant"]     # files go away
    node.set_pillar(pillar)
    os.chmod(os.path.join(node.layout.config_dir, "overcloud-redis-vip-tunnels.conf"), 0o644)  # mode drift

    before = snapshot(node.layout.root)
    predicted = node.apply("test=True")
    assert predicted.returncode == 0
    assert snapshot(node.layout.root) == before, "test=True wrote something"
    predicted_changes = changed(predicted)
    assert all(st["result"] in (None, True) for st in states(predicted).values())

    real = node.apply()
    assert real.returncode == 0
    assert changed(real) == predicted_changes
    files = predicted_changes["ipsec-tunnel-files-managed"]
    d = node.layout.config_dir + "/overcloud-"
    assert files[d + "tenant-node-to-node-tunnels.conf"] == {"removed": "not in the plan any more"}
    assert files[d + "redis-vip-tunnels.conf"]["mode"] == {"old": "0644", "new": "0640"}
    assert "aes_gcm256-null" in files[d + "storage-vip-tunnels.conf"]["diff"]
    # config setup changed: the service state's watch sees it (the only restart).
    assert predicted_changes["ipsec-config-setup-applied"] == {"config setup": "changed: pluto must restart"}
    assert "+\tlogappend=no\n" in files[node.layout.config_file]["diff"]

    again = node.apply("test=True")
    assert changed(again) == {}
    assert all(st["result"] is True for st in states(again).values())


@pytest.mark.parametrize(
    "mutate,message",
    [
        (lambda p: p.update(psk="too-short"), "ipsec:psk: is too short"),
        (lambda p: p["networks"]["storage"].update(vip="198.51.100.77"), "ipsec:networks:storage:vip:"),
        (lambda p: p.update(algorithm="aes_gcm128-sha1"), "ipsec:algorithm: Libreswan rejects 'aes_gcm128-sha1'"),
        (lambda p: p["networks"]["tenant"].update(algorithm="aes;reboot"),
         "ipsec:networks:tenant:algorithm: Libreswan rejects 'aes;reboot'"),
    ],
    ids=["short-psk", "vip-outside", "aead-with-integrity", "algorithm-injection"],
)
def test_bad_pillar_fails_before_any_write(node, mutate, message):
    assert node.apply().returncode == 0
    before = snapshot(node.layout.root)
    pillar = examples.pillar(lookup=node.layout.lookup())
    mutate(pillar)
    node.set_pillar(pillar)
    result = node.apply()
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert message in output
    assert snapshot(node.layout.root) == before


def test_bad_pillar_on_a_fresh_node_creates_nothing(node):
    pillar = examples.pillar(lookup=node.layout.lookup())
    pillar["extra_vips"]["redis"]["network"] = "nowhere"
    node.set_pillar(pillar)
    before = snapshot(node.layout.root)
    result = node.apply()
    assert result.returncode != 0
    assert "ipsec:extra_vips:redis:network: 'nowhere' is not a network" in result.stdout + result.stderr
    assert snapshot(node.layout.root) == before


def test_stale_formula_files_removed_unrelated_files_kept(node):
    assert node.apply().returncode == 0
    unrelated = os.path.join(node.layout.config_dir, "site-vpn.conf")
    other_prefix = os.path.join(node.layout.config_dir, "overcloudx-storage.conf")
    for path in (unrelated, other_prefix):
        with open(path, "w") as handle:
            handle.write("conn site\n\tauto=ignore\n")
    pillar = examples.pillar(lookup=node.layout.lookup())
    del pillar["networks"]["storage"]
    for entry in pillar["nodes"].values():
        entry["addresses"].pop("storage", None)
    node.set_pillar(pillar)
    result = node.apply()
    assert result.returncode == 0
    names = os.listdir(node.layout.config_dir)
    assert not [n for n in names if n.startswith("overcloud-storage-")]
    assert "site-vpn.conf" in names and "overcloudx-storage.conf" in names
    removed = changed(result)["ipsec-tunnel-files-managed"]
    manifest = removed.pop(os.path.join(node.layout.config_dir, ".ipsec-formula.json"))
    assert manifest == {"manifest": "the formula's record of its files and conns updated"}
    assert len(removed) == 4 and all(c == {"removed": "not in the plan any more"} for c in removed.values())


ROTATED_PSK = "rotated-psk-8d2e4b6a1c9f7e3d5b0a2c4e6f8a1b3d"


def keyed_pillar(layout, mode, version, **extra):
    """The example pillar in a key mode at a key version (shared mode: the
    version-2 PSK is ROTATED_PSK)."""
    pillar = examples.pillar(lookup=layout.lookup(), keys={"mode": mode, "version": version}, **extra)
    if mode == "derived":
        del pillar["psk"]
    elif version > 1:
        pillar["psk"] = ROTATED_PSK
    return pillar


@pytest.fixture(params=["shared", "derived"])
def audited(request, salt_node, tmp_path):
    """(node, secrets(version)): a node in each key mode and every secret of
    a key version that must never leave a .secrets file. Derived mode runs
    the master's ext_pillar in the masterless minion, on a root-only secret."""
    mode = request.param
    layout = Pluto(tmp_path / "root")
    overrides = None
    secret = b"audit-master-secret-" + os.urandom(24).hex().encode()
    if mode == "derived":
        secret_file = tmp_path / "ipsec-keys.secret"
        secret_file.write_bytes(secret + b"\n")
        secret_file.chmod(0o600)
        overrides = {"ext_pillar": [{"ipsec_keys": {"secret_file": str(secret_file)}}],
                     "pillar_dirs": [os.path.join(saltenv.REPO, "_pillar")]}
    node = Node(salt_node(NODE, examples.own_ips(NODE), keyed_pillar(layout, mode, 1), overrides), layout)
    node.mode = mode

    def secrets(version):
        if mode == "shared":
            return {examples.PSK if version == 1 else ROTATED_PSK}
        pillar = keyed_pillar(layout, mode, version)
        plan = ipsec_plan.build_plan(pillar, NODE, examples.own_ips(NODE), cluster_node=True, require_psk=False)
        return {secret.decode()} | labkeys.keys_in(ipsec_keys.issue(plan, secret, version))

    return node, secrets


def test_psk_never_in_outputs_logs_or_other_files(audited, tmp_path, namespace_factory):
    node, secrets = audited
    log_file = tmp_path / "minion-debug.log"
    debug = ["--log-level=debug", "--log-file={}".format(log_file), "--log-file-level=all"]
    outputs = []

    def run(args, expected_rc=0):
        result = node.call(*(debug + args))
        assert result.returncode == expected_rc, result.stdout + result.stderr
        outputs.append(result.stdout + result.stderr)

    for args in (
        ["state.apply", "ipsec"],
        ["state.apply", "ipsec", "test=True"],
        ["ipsec.plan"],
        ["ipsec.addresses"],
        ["state.show_sls", "ipsec"],
        ["ipsec_keys.check", "version=1", "applied=True"],
    ):
        run(args)
    # verify and status with pluto running on what the formula wrote (a
    # running pluto has the PSK in memory: its answers must not carry it),
    # then a rotation to version 2: new secrets written and re-read.
    ns = namespace_factory("psk")
    ns.add_stub(["198.51.100.10/25", "198.51.100.130/25", "203.0.113.10/24", "2001:db8:0:1::10/64"])
    pluto = Pluto(node.layout.root, ns.name).start()
    try:
        run(["ipsec.verify", "level=ike"], 1)
        run(["ipsec.status", "traffic=True"])
        node.set_pillar(keyed_pillar(node.layout, node.mode, 2))
        run(["ipsec_keys.check", "version=2"])
        run(["state.apply", "ipsec"])
        assert "re-read" in outputs[-1]
        run(["ipsec_keys.check", "version=2", "applied=True"])
    finally:
        pluto.stop()
    # A rotation's gate refuses a node not at the wanted version.
    run(["ipsec_keys.check", "version=3"], 1)
    assert "ipsec:keys:version is 2 on this node, not 3" in outputs[-1]
    # A failing run (after the PSK is in place) must not leak it either.
    node.set_pillar(keyed_pillar(node.layout, node.mode, 2, algorithm="vanity-null"))
    run(["state.apply", "ipsec"], 1)

    log_text = log_file.read_text(errors="replace")
    assert "Rendered data from file" in log_text, "debug logging did not reach the log file"
    never = secrets(1) | secrets(2)
    # controller-0: 5 node-to-node keys, 3 as VIP client, 5 of other VIP clients.
    assert len(never) == (2 if node.mode == "shared" else 1 + 2 * 13)
    for text in outputs + [log_text]:
        for secret in never:
            assert secret not in text
    files = snapshot(node.layout.root)
    holders = {path for path, (mode, content, _) in files.items() if any(s.encode() in content for s in never)}
    assert holders and all(path.endswith(".secrets") for path in holders)
    for path in holders:
        assert stat.S_IMODE(os.stat(os.path.join(node.layout.root, path)).st_mode) == 0o600
    # The files hold exactly the version-2 secrets (the master secret never).
    held = {s for s in never if any(s.encode() in files[p][1] for p in holders)}
    expected = secrets(2) - ({s for s in secrets(2) if s.startswith("audit-master-secret-")})
    assert held == expected


def test_default_lookup_renders_package_nss_and_service(salt_node):
    """The production path (systemd service, package) cannot run here; its
    rendering is checked instead."""
    factory = salt_node("controller-1", examples.own_ips("controller-1"), examples.pillar())
    result = factory.salt_call_cli(timeout=120).run("--local", "state.show_sls", "ipsec")
    assert result.returncode == 0, result.stdout
    data = result.data
    assert "installed" in data["ipsec-package-installed"]["pkg"]
    assert {"name": "libreswan"} in data["ipsec-package-installed"]["pkg"]
    service = data["ipsec-service-running"]["service"]
    assert "running" in service and {"name": "ipsec"} in service
    # Enabled through the formula's own state, which records that it did
    # (ipsec.clean gives it back).
    enabled = data["ipsec-service-enabled"]["ipsec_units"]
    assert "enabled" in enabled and {"name": "ipsec"} in enabled and {"config_dir": "/etc/ipsec.d"} in enabled
    watch = [item["watch"] for item in service if isinstance(item, dict) and "watch" in item][0]
    require = [item["require"] for item in service if isinstance(item, dict) and "require" in item][0]
    # Hitless: tunnel changes go to the running pluto, only `config setup`
    # changes restart it.
    assert watch == ["ipsec-config-setup-applied"]
    assert "ipsec-tunnel-files-managed" in require
    assert "tunnels_managed" in data["ipsec-tunnel-files-managed"]["ipsec"]
    assert "config_setup_applied" in data["ipsec-config-setup-applied"]["ipsec"]
    # initnss runs as an argument list (no shell), from the validated lookup.
    assert "nss_initialised" in data["ipsec-nss-db-initialised"]["ipsec"]
