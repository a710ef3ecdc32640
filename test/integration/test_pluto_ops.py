"""ipsec_pluto (_modules/ipsec_pluto.py) against a real, isolated pluto.

The module runs in-process through Salt's loader (labkit.loader: the real
cmd.run_all, ipsec.lookup and _utils) so that many calls stay cheap; one
test goes through salt-call --local. Pluto runs in a network namespace
holding the node's addresses; peers are addresses nobody holds, except in
the two-pluto test, where two namespaces are linked and IKE SAs really
establish (this kernel has no ESP: Child SAs fail, IKE SAs stay up).

That two-pluto test is also the measurement behind the module's notes:
re-adding an unchanged conn renegotiates it, deleting or adding a conn
leaves the other conns' IKE SAs alone, re-reading secrets touches none.
"""

import os
import re
import time

import pytest
from salt.exceptions import CommandExecutionError

import ipsec_plan
import ipsec_render
from labkit import loader, netns, tunnels

PSK = "ops-test-psk-Zq8v1XbN3mKp7RtY5wLc2HdJ9sFg4"
OWN = {"internal_api": "203.0.113.1", "tenant": "2001:db8:7::1"}


def many_nodes_pillar(count):
    """This node (node-000) and count-1 peers on one IPv4 and one IPv6
    network, a VIP on the IPv4 one: 2 x (count-1) + 2 conns."""
    networks = {"internal_api": {"cidr": "203.0.113.0/24", "vip": "203.0.113.250"},
                "tenant": {"cidr": "2001:db8:7::/64"}}
    nodes = {"node-{:03d}".format(i): {"addresses": {"internal_api": "203.0.113.{}".format(i + 1),
                                                     "tenant": "2001:db8:7::{:x}".format(i + 1)}}
             for i in range(count)}
    return {"psk": PSK, "networks": networks, "nodes": nodes, "cluster": {"nodes": ["node-000"]},
            "firewall": {"manage": False}}


def prepare(pluto):
    with open(pluto.config_file, "w") as handle:
        handle.write("config setup\n\tuniqueids=no\n\ninclude {}/*.conf\n".format(pluto.config_dir))
    with open(pluto.secrets_file, "w") as handle:
        handle.write("include {}/*.secrets\n".format(pluto.config_dir))


def write(files):
    for path, text in files.items():
        with open(path, "w") as handle:
            handle.write(text)


ADDED = re.compile(r'^\S+ +\d+ [\d:.]+: "[^"]+": added (?:unoriented )?IKEv2 connection', re.M)


def added_lines(pluto):
    """pluto's log lines of conns added (5.x says "added unoriented
    IKEv2 connection" for a conn none of whose ends is local)."""
    return len(ADDED.findall(pluto.log()))


@pytest.fixture
def node(namespace_factory, pluto_factory, tmp_path, libreswan):
    """A running pluto with no conns; mods = the loader's __salt__; plan of
    a 60-node cluster rendered into files (not yet written)."""
    ns = namespace_factory("ops")
    ns.add_stub(["203.0.113.1/24", "2001:db8:7::1/64"])
    pluto = pluto_factory(tmp_path / "root", ns.name)
    prepare(pluto)
    pluto.start()
    mods = loader.minion_modules({"ipsec": {"lookup": pluto.lookup()}}, opts={"root_dir": str(tmp_path / "salt")})
    plan = ipsec_plan.build_plan(many_nodes_pillar(60), "node-000", list(OWN.values()),
                                 major=libreswan.major, cluster_node=True, config_dir=pluto.config_dir)
    files = ipsec_render.render_files(plan, PSK)
    return pluto, mods, plan, files


def test_batched_add_delete_and_secrets(node):
    pluto, mods, plan, files = node
    names = list(plan["connections"])
    assert len(names) == 120
    assert mods["ipsec_pluto.running"]() is True
    assert mods["ipsec_pluto.loaded"]() == []

    write(files)
    started = time.monotonic()
    result = mods["ipsec_pluto.add"](names)
    elapsed = time.monotonic() - started
    assert result["added"] == names
    assert mods["ipsec_pluto.loaded"]() == sorted(names)
    assert added_lines(pluto) == len(names)
    # One process for all: far below 120 one-by-one adds (~20 ms each).
    assert elapsed < 10
    # addconn does not initiate; the auto=start conns wait for initiate().
    assert "initiating IKEv2 connection" not in pluto.log()

    gone = names[:3]
    assert mods["ipsec_pluto.delete"](gone) == {"deleted": gone}
    assert mods["ipsec_pluto.loaded"]() == sorted(names[3:])
    # Deleting what pluto does not have is no error (idempotent).
    assert mods["ipsec_pluto.delete"](gone) == {"deleted": gone}

    def psks():
        return pluto.run("whack", "--ctlsocket", pluto.ctlsocket, "--listpsks").stdout.count(": PSK ")

    # pluto started before the files existed: no PSK until told to re-read
    assert psks() == 0
    mods["ipsec_pluto.rereadsecrets"]()
    assert psks() == len(plan["secrets"])
    secrets_path = next(p for p in files if p.endswith("tenant-node-to-node-tunnels.secrets"))
    with open(secrets_path, "a") as handle:
        handle.write('"2001:db8:7::1" "2001:db8:7::fff" : PSK "{}"\n'.format(PSK))
    reread = mods["ipsec_pluto.rereadsecrets"]()
    assert secrets_path in reread["files"] and pluto.secrets_file in reread["files"]
    assert psks() == len(plan["secrets"]) + 1
    assert mods["ipsec_pluto.loaded"]() == sorted(names[3:])


def test_rejected_conn_is_named_and_the_others_stay_loaded(node):
    pluto, mods, plan, files = node
    names = list(plan["connections"])
    write(files)
    mods["ipsec_pluto.add"](names)

    victim = next(n for n, c in plan["connections"].items() if c["network"] == "internal_api"
                  and c["role"] == "node-to-node")
    conf_path = plan["connections"][victim]["file"]
    text = files[conf_path]
    block = ipsec_render.format_conn(victim, plan["connections"][victim]["keywords"])
    bad_keywords = dict(plan["connections"][victim]["keywords"], esp="aes_gcm128-sha1")
    new_keywords = dict(plan["connections"][victim]["keywords"], right="203.0.113.200", rightid="203.0.113.200")
    new_name = "overcloud-internal_api-203.0.113.1-203.0.113.200"
    text = text.replace(block, ipsec_render.format_conn(victim, bad_keywords)) + "\n" + \
        ipsec_render.format_conn(new_name, new_keywords)
    write({conf_path: text})

    with pytest.raises(CommandExecutionError) as err:
        mods["ipsec_pluto.add"]([victim, new_name])
    message = str(err.value)
    assert "pluto rejected 1 of 2 conns" in message
    assert '{}: "{}": failed to add connection: AEAD ESP encryption algorithm AES_GCM_16 must have ' \
           "'NONE' as the integrity algorithm".format(victim, victim) in message
    assert err.value.info["added"] == [new_name]
    assert list(err.value.info["rejected"]) == [victim]
    now = set(mods["ipsec_pluto.loaded"]())
    # Every other conn is still loaded, the new one too. The rejected one
    # replaced a loaded conn: addconn purged the old definition first.
    assert now == (set(names) - {victim}) | {new_name}

    # The guard rail that keeps this from happening: checkconfig names it
    # before anything is written.
    problems = mods["ipsec_pluto.checkconfig"]({conf_path: text})
    assert problems == ["conn {}: esp=aes_gcm128-sha1: AEAD ESP encryption algorithm AES_GCM_16 must have "
                        "'NONE' as the integrity algorithm".format(victim)]


# addconn's verdict on an unknown keyword, per major release.
UNKNOWN_KEYWORD = {
    4: r"^cannot load config '<check config>': {path}:\d+: syntax error \[bogus-keyword\]$",
    5: r"^FATAL ERROR: ipsec addconn: {path}:\d+: unrecognized 'conn' keyword 'bogus-keyword'$",
}


def test_checkconfig_catches_syntax_errors_and_names_the_file(node):
    pluto, mods, _, files = node
    confs = {p: t for p, t in files.items() if p.endswith(".conf")}
    assert mods["ipsec_pluto.checkconfig"](confs) == []
    assert mods["ipsec_pluto.checkconfig"](files) == []  # secrets are skipped
    path = sorted(confs)[0]
    broken = dict(confs)
    broken[path] = confs[path].replace("\tfailureshunt=drop\n", "\tfailureshunt=drop\n\tbogus-keyword=1\n", 1)
    problems = mods["ipsec_pluto.checkconfig"](broken)
    assert len(problems) == 1
    assert re.match(UNKNOWN_KEYWORD[pluto.libreswan.major].format(path=re.escape(path)), problems[0]), problems
    bad_value = dict(confs)
    bad_value[path] = confs[path].replace("\tauto=start\n", "\tauto=sometimes\n", 1)
    problems = mods["ipsec_pluto.checkconfig"](bad_value)
    # 4.x refuses the value; 5.x warns that it ignores it (exit 0): a problem all the same.
    invalid = {4: "keyword auto, invalid value: sometimes", 5: "warning: invalid, keyword ignored: auto=sometimes"}
    assert any(invalid[pluto.libreswan.major] in p and path in p for p in problems), problems
    dup = dict(confs)
    other = sorted(confs)[1]
    dup[other] = confs[other] + "\n" + confs[path].split("\n\n", 1)[1]
    problems = mods["ipsec_pluto.checkconfig"](dup)
    assert problems and all(re.match(r"^conn \S+ is defined 2 times \(", p) for p in problems), problems


def test_initiate_does_not_wait_for_peers_that_do_not_answer(node):
    pluto, mods, plan, files = node
    write(files)
    starts = [n for n, c in plan["connections"].items() if c["keywords"]["auto"] == "start"][:20]
    mods["ipsec_pluto.add"](starts)
    started = time.monotonic()
    assert mods["ipsec_pluto.initiate"](starts) == {"initiated": starts}
    assert time.monotonic() - started < 10
    assert pluto.log().count("initiating IKEv2 connection") == len(starts)
    # 4.x: 'no connection named "nope"'; 5.x: 'no connection or alias named "nope"'.
    with pytest.raises(CommandExecutionError, match=r'^initiate failed for 1 conns: nope: no connection (or alias )?named "nope"'):
        mods["ipsec_pluto.initiate"](["nope"])


# --- two plutos: which operations disturb which IKE SA ----------------------

STATE = re.compile(r'#(\d+): "([^"]+)"(?:\[\d+\])?:\d+ \S+ \(established IKE SA\)')


def ike_serials(pluto):
    """{conn: serial of its established IKE SA}."""
    serials = {}
    for match in STATE.finditer(pluto.whack("--showstates").stdout):
        serials[match.group(2)] = int(match.group(1))
    return serials


def pair_conn(name, left, right):
    keywords = {"type": "tunnel", "authby": "secret", "left": left, "leftid": left, "right": right,
                "rightid": right, "ikev2": "yes", "esp": "aes_gcm128-null", "failureshunt": "drop",
                "auto": "start"}
    return ipsec_render.format_conn(name, keywords)


def test_what_disturbs_established_ike_sas(namespace_factory, pluto_factory, tmp_path):
    a_ns, b_ns = namespace_factory("ika"), namespace_factory("ikb")
    count = 4
    a_addr = ["198.51.100.{}".format(i) for i in range(1, count + 2)]
    b_addr = ["198.51.100.{}".format(i) for i in range(11, count + 12)]
    netns.link(a_ns, b_ns, [a + "/24" for a in a_addr], [b + "/24" for b in b_addr])
    plutos = {}
    for side, ns, mine, theirs in (("a", a_ns, a_addr, b_addr), ("b", b_ns, b_addr, a_addr)):
        pluto = pluto_factory(tmp_path / side, ns.name)
        prepare(pluto)
        # side b already knows c5 (added to a later on)
        last = count + (1 if side == "b" else 0)
        write({os.path.join(pluto.config_dir, "pair.conf"): "".join(
            pair_conn("c{}".format(i + 1), mine[i], theirs[i]) for i in range(last))})
        write({os.path.join(pluto.config_dir, "pair.secrets"): "".join(
            '{} {} : PSK "{}"\n'.format(mine[i], theirs[i], PSK) for i in range(count + 1))})
        plutos[side] = pluto
    plutos["b"].start()
    plutos["a"].start()  # initiates its auto=start conns itself
    a, b = plutos["a"], plutos["b"]
    first = tunnels.wait_until(lambda: (lambda s: s if {"c1", "c2", "c3", "c4"} <= set(s) else None)(ike_serials(a)),
                               30, what="IKE SAs c1-c4 on a")
    mods = loader.minion_modules({"ipsec": {"lookup": a.lookup()}}, opts={"root_dir": str(tmp_path / "salt")})

    # Re-adding an unchanged conn replaces it: its IKE SA is deleted and
    # renegotiated (b initiates again); the others keep theirs.
    mods["ipsec_pluto.add"](["c1"])
    assert '"c1" #{}: deleting'.format(first["c1"]) in a.log()
    after_readd = tunnels.wait_until(
        lambda: (lambda s: s if s.get("c1", first["c1"]) != first["c1"] else None)(ike_serials(a)),
        30, what="c1 renegotiated")
    for name in ("c2", "c3", "c4"):
        assert after_readd[name] == first[name]

    # Deleting one conn leaves the others alone.
    mods["ipsec_pluto.delete"](["c2"])
    time.sleep(1)
    after_delete = ike_serials(a)
    assert "c2" not in after_delete
    assert after_delete["c3"] == first["c3"] and after_delete["c4"] == first["c4"]
    assert after_delete["c1"] == after_readd["c1"]

    # Adding a new conn leaves the others alone (b keeps trying c5: up soon).
    with open(os.path.join(a.config_dir, "pair.conf"), "a") as handle:
        handle.write(pair_conn("c5", a_addr[4], b_addr[4]))
    mods["ipsec_pluto.add"](["c5"])
    mods["ipsec_pluto.initiate"](["c5"])
    after_add = tunnels.wait_until(lambda: (lambda s: s if "c5" in s else None)(ike_serials(a)),
                                   30, what="c5 up")
    for name in ("c1", "c3", "c4"):
        assert after_add[name] == after_delete[name]

    # Re-reading secrets touches no SA.
    mods["ipsec_pluto.rereadsecrets"]()
    time.sleep(0.5)
    assert ike_serials(a) == after_add
    assert set(ike_serials(b)) >= {"c1", "c3", "c4", "c5"}


def test_module_through_salt_call(salt_node, namespace_factory, pluto_factory, tmp_path, libreswan):
    ns = namespace_factory("opsc")
    ns.add_stub(["203.0.113.1/24", "2001:db8:7::1/64"])
    pluto = pluto_factory(tmp_path / "root", ns.name)
    prepare(pluto)
    pluto.start()
    plan = ipsec_plan.build_plan(many_nodes_pillar(4), "node-000", list(OWN.values()), major=libreswan.major,
                                 cluster_node=True, config_dir=pluto.config_dir)
    files = ipsec_render.render_files(plan, PSK)
    name = sorted(plan["connections"])[0]
    conf = plan["connections"][name]["file"]
    files[conf] += "\n" + ipsec_render.format_conn("overcloud-bad", dict(
        plan["connections"][name]["keywords"], esp="aes_gcm128-sha1", right="203.0.113.99", rightid="203.0.113.99"))
    write(files)
    factory = salt_node("node-000", list(OWN.values()), {"lookup": pluto.lookup()})
    cli = factory.salt_call_cli(timeout=120)
    result = cli.run("--local", "ipsec_pluto.add", ",".join(sorted(plan["connections"]) + ["overcloud-bad"]))
    assert result.returncode != 0
    out = result.stdout + result.stderr
    assert 'pluto rejected 1 of {} conns: overcloud-bad: "overcloud-bad": failed to add connection: AEAD ESP'.format(
        len(plan["connections"]) + 1) in out
    result = cli.run("--local", "ipsec_pluto.loaded")
    assert result.returncode == 0
    assert result.data == sorted(plan["connections"])
    assert cli.run("--local", "ipsec_pluto.running").data is True
    pluto.stop()
    assert cli.run("--local", "ipsec_pluto.running").data is False
