"""Unit tests of the Salt side of status/verify: ipsec.status, ipsec.verify,
ipsec.parse_status (_modules/ipsec.py) and the ipsec.established wait state
(_states/ipsec.py), with the dunders given as plain dicts and whack faked.

The real whack and pluto are in test/integration/test_status_pluto.py; the
status texts here are DERIVED (labkit.statustext).
"""

import copy
import os

import pytest
from salt.exceptions import CommandExecutionError, SaltInvocationError

from labkit import examples, loader
from labkit.statustext import Conn, render

NODES = {name: examples.THREE_NODES[name] for name in ("controller-0", "compute-0")}


class FakeWhack:
    """cmd.run_all standing in for `ipsec whack`: answers by its last argument."""

    def __init__(self, answers):
        self.answers = answers
        self.calls = []

    def __call__(self, cmd, python_shell=True, **kwargs):
        assert python_shell is False and isinstance(cmd, list)
        self.calls.append(cmd)
        answer = self.answers.get(cmd[-1], {"retcode": 1, "stderr": "not faked"})
        answer = answer() if callable(answer) else answer
        return dict({"retcode": 0, "stdout": "", "stderr": ""}, **answer)


@pytest.fixture
def module(tmp_path):
    socket = tmp_path / "pluto.ctl"
    socket.write_text("")
    mod = loader.formula_module(
        examples.pillar(nodes=NODES, libreswan_version="4.10", lookup={
            "ipsec_bin": "/bin/true", "ctlsocket": str(socket), "config_dir": str(tmp_path)}),
        grains={"os_family": "Debian", "ipv4": ["198.51.100.20", "198.51.100.140"], "ipv6": ["2001:db8:0:1::20"]},
        opts={"id": "compute-0"})
    mod.socket = str(socket)
    # The node's live addresses (verify compares the VIPs pluto listens on
    # with them): compute-0's, as its grains say.
    mod.__salt__["network.ip_addrs"] = lambda: ["198.51.100.20", "198.51.100.140"]
    mod.__salt__["network.ip_addrs6"] = lambda: ["2001:db8:0:1::20"]
    return mod


def compute_status(child="established"):
    """What compute-0's pluto shows with all its planned conns (derived text)."""
    return render(_compute_conns(child), "4.10", addresses=COMPUTE_ADDRESSES)


def _compute_conns(child="established"):
    return [
        Conn("overcloud-internal_api-198.51.100.10-198.51.100.20", "198.51.100.20", "198.51.100.10",
             ike="established", child=child),
        Conn("overcloud-tenant-2001:db8:0:1::10-2001:db8:0:1::20", "2001:db8:0:1::20", "2001:db8:0:1::10",
             ike="established", child=child),
        Conn("overcloud-internal_api-node-to-vip-tunnel", "198.51.100.20", "198.51.100.100",
             "@overcloudinternal_apicluster", "@internal_apivip", ike="established", child=child),
        Conn("overcloud-redis-node-to-vip-tunnel", "198.51.100.20", "198.51.100.101",
             "@overcloudrediscluster", "@redisvip", ike="established", child=child),
    ]


COMPUTE_ADDRESSES = ("198.51.100.20", "2001:db8:0:1::20")
COMPUTE_CONNS = _compute_conns()


def test_status_runs_whack_on_the_lookup_socket(module):
    text, traffic = compute_status()
    whack = FakeWhack({"--status": {"stdout": text}, "--trafficstatus": {"stdout": traffic}})
    module.__salt__["cmd.run_all"] = whack
    parsed = module.status(traffic=True)
    assert whack.calls == [
        ["/bin/true", "whack", "--ctlsocket", module.socket, "--status"],
        ["/bin/true", "whack", "--ctlsocket", module.socket, "--trafficstatus"],
    ]
    assert parsed["version"] == "4" and len(parsed["connections"]) == 4
    assert all(sa["bytes_exact"] for c in parsed["connections"].values() for sa in c["child_sas"])
    module.status()
    assert whack.calls[-1][-1] == "--status" and len(whack.calls) == 3


@pytest.mark.parametrize("answer,message", [
    ({"retcode": 33, "stderr": 'whack: Pluto is not running (no "/x/pluto.ctl")'},
     "pluto is not running (no answer on control socket {socket}): whack: Pluto is not running"),
    ({"retcode": 33, "stderr": 'whack: is Pluto running?  connect() for "/x" failed (111 Connection refused)'},
     "pluto is not running (no answer on control socket {socket}): whack: is Pluto running?"),
    ({"retcode": 1, "stderr": "something odd"}, "ipsec whack --status failed: something odd"),
    ({"retcode": 0, "stdout": "garbage\n"}, "ipsec whack --status gave unexpected output: ipsec status: no Libreswan"),
    ({"retcode": 0, "stdout": ""}, "ipsec whack --status gave unexpected output: ipsec status: the status text is empty"),
])
def test_whack_failures_are_command_execution_errors(module, answer, message):
    module.__salt__["cmd.run_all"] = FakeWhack({"--status": answer})
    with pytest.raises(CommandExecutionError) as error:
        module.status()
    assert message.format(socket=module.socket) in str(error.value)


def test_missing_socket_means_not_running_whatever_whack_says(module):
    os.unlink(module.socket)
    module.__salt__["cmd.run_all"] = FakeWhack({"--status": {"retcode": 2, "stderr": "odd"}})
    with pytest.raises(CommandExecutionError, match="pluto is not running"):
        module.status()


def test_missing_ipsec_binary(module):
    module.__pillar__["ipsec"]["lookup"]["ipsec_bin"] = "/nonexistent/ipsec"
    with pytest.raises(CommandExecutionError, match="/nonexistent/ipsec not found: is Libreswan installed"):
        module.status()


def test_verify_sets_retcode_only_on_failure(module):
    text, traffic = compute_status(child=None)
    module.__salt__["cmd.run_all"] = FakeWhack({"--status": {"stdout": text}, "--trafficstatus": {"stdout": traffic}})
    ike = module.verify(level="ike")
    assert ike["result"] is True and "retcode" not in module.__context__
    child = module.verify()
    assert child["result"] is False and module.__context__["retcode"] == 1
    assert child["level"] == "child" and child["node"] == "compute-0"


def test_verify_level_traffic_probes_each_tunnel_once_and_reads_the_counters_around_it(module):
    """Counters read before and after one probe round; a tunnel whose
    inbound counter stayed put fails by name, the others pass."""
    text, _ = compute_status()
    before = render(COMPUTE_CONNS, "4.10", addresses=COMPUTE_ADDRESSES)[1]
    grown = [copy.copy(conn) for conn in COMPUTE_CONNS]
    for index, conn in enumerate(grown):
        conn.in_bytes += 0 if index == 0 else 84
        conn.out_bytes += 84
    after = render(grown, "4.10", addresses=COMPUTE_ADDRESSES)[1]
    answers = iter([before, after])
    module.__salt__["cmd.run_all"] = FakeWhack({"--status": {"stdout": text},
                                                "--trafficstatus": lambda: {"stdout": next(answers)}})
    probes = []

    def probe(pairs, timeout):
        probes.append((list(pairs), timeout))
        return {pair: {"sent": 1, "answered": True, "error": None} for pair in pairs}

    module.__utils__["ipsec_probe.probe"] = probe
    verdict = module.verify(level="traffic", timeout=2)
    assert probes == [([("198.51.100.20", "198.51.100.10"), ("198.51.100.20", "198.51.100.100"),
                        ("198.51.100.20", "198.51.100.101"), ("2001:db8:0:1::20", "2001:db8:0:1::10")], 2.0)]
    assert verdict["level"] == "traffic" and module.__context__["retcode"] == 1
    assert list(verdict["failed"]) == ["overcloud-internal_api-198.51.100.10-198.51.100.20"]
    assert "nothing came in through the inbound one in 2s" in verdict["comment"]


@pytest.mark.parametrize("kwargs,message", [
    ({"level": "esp"}, "level must be one of ike, child, traffic, got 'esp'"),
    ({"traffic": "yes"}, "traffic must be true or false, got 'yes'"),
    ({"level": "traffic", "timeout": "soon"}, "timeout must be a number of seconds from 0.1 to 60, got 'soon'"),
    ({"level": "traffic", "timeout": 0}, "timeout must be a number of seconds from 0.1 to 60, got 0"),
])
def test_verify_bad_arguments(module, kwargs, message):
    with pytest.raises(SaltInvocationError, match=message):
        module.verify(**kwargs)


def test_parse_status_from_text_or_file(module, tmp_path):
    text, traffic = compute_status()
    saved = tmp_path / "status.txt"
    saved.write_text(text)
    from_file = module.parse_status(path=str(saved), traffic=traffic)
    assert from_file == module.parse_status(text=text, traffic=traffic)
    with pytest.raises(SaltInvocationError, match="give exactly one of text or path"):
        module.parse_status()
    with pytest.raises(SaltInvocationError, match="give exactly one of text or path"):
        module.parse_status(text=text, path=str(saved))
    with pytest.raises(SaltInvocationError, match="cannot read .*: No such file or directory"):
        module.parse_status(path=str(tmp_path / "missing"))


# --- ipsec.established --------------------------------------------------------

class Verdicts:
    """ipsec.verify answering from a script: dicts, or exceptions to raise."""

    def __init__(self, script, context):
        self.script = list(script)
        self.context = context
        self.calls = []

    def __call__(self, level="child"):
        self.calls.append(level)
        step = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if isinstance(step, Exception):
            raise step
        if not step["result"]:
            self.context["retcode"] = 1  # as the real ipsec.verify does
        return step


UP = {"result": True, "comment": "all 4 tunnels that should be up are up (level: ike)"}
DOWN = {"result": False, "comment": "1 of 4 planned conns are not as planned (level: ike): x: no IKE SA"}


@pytest.fixture
def state(monkeypatch):
    mod = loader.load_file("_states", "ipsec")
    mod.__opts__ = {"test": False}
    mod.__context__ = {"retcode": 0}
    sleeps = []
    monkeypatch.setattr(mod.time, "sleep", sleeps.append)
    mod.sleeps = sleeps
    return mod


def run(state, script, **kwargs):
    state.__salt__ = {"ipsec.verify": Verdicts(script, state.__context__)}
    return state.established("tunnels", **kwargs)


def test_established_waits_until_verify_passes(state):
    ret = run(state, [DOWN, DOWN, UP], timeout=60, interval=2, level="ike")
    assert ret["result"] is True and ret["changes"] == {}
    assert ret["comment"].startswith(UP["comment"] + " (after ") and ret["comment"].endswith(", 3 checks)")
    assert state.__salt__["ipsec.verify"].calls == ["ike", "ike", "ike"]
    assert state.sleeps == [2.0, 2.0]
    # verify's retcode 1 of the failed checks does not outlive the state.
    assert state.__context__ == {"retcode": 0}


def test_established_times_out_naming_what_is_down(state, monkeypatch):
    clock = iter(range(0, 1000, 4))
    monkeypatch.setattr(state.time, "monotonic", lambda: next(clock))
    ret = run(state, [DOWN], timeout=10, interval=4)
    assert ret["result"] is False and ret["changes"] == {}
    # checks at 4s, 8s and 12s (past 10s): the last sleep is cut to what is left.
    assert ret["comment"] == "timed out after 12.0s (3 checks): " + DOWN["comment"]
    assert state.sleeps == [4.0, 2.0]


def test_established_keeps_waiting_while_pluto_is_down(state):
    ret = run(state, [CommandExecutionError("pluto is not running (...)"), UP], timeout=30, interval=1)
    assert ret["result"] is True and "2 checks" in ret["comment"]


def test_established_stops_at_once_on_bad_pillar(state):
    ret = run(state, [SaltInvocationError("ipsec:psk: is too short")], timeout=30)
    assert ret == {"name": "tunnels", "changes": {}, "result": False, "comment": "ipsec:psk: is too short"}
    assert state.sleeps == []


def test_established_timeout_zero_checks_once(state):
    assert run(state, [DOWN], timeout=0)["result"] is False
    assert len(state.__salt__["ipsec.verify"].calls) == 1 and state.sleeps == []
    assert "retcode" in state.__context__ and state.__context__["retcode"] == 0


def test_established_test_mode(state):
    state.__opts__["test"] = True
    already = run(state, [UP])
    assert already["result"] is True
    would = run(state, [DOWN], timeout=120)
    assert would["result"] is None and would["changes"] == {}
    assert would["comment"] == "would wait up to 120s for the tunnels; now " + DOWN["comment"]
    assert state.sleeps == []


def test_established_without_a_previous_retcode_leaves_none(state):
    del state.__context__["retcode"]
    run(state, [DOWN, UP], timeout=5, interval=1)
    assert "retcode" not in state.__context__


@pytest.mark.parametrize("kwargs,message", [
    ({"timeout": "soon"}, "timeout must be a number of seconds, got 'soon'"),
    ({"timeout": -1}, "timeout must be at least 0"),
    ({"interval": 0}, "interval must be at least 0.1"),
    ({"level": "esp"}, "level must be 'ike', 'child' or 'traffic', got 'esp'"),
])
def test_established_bad_arguments(state, kwargs, message):
    ret = run(state, [UP], **kwargs)
    assert ret["result"] is False and message in ret["comment"]
    assert state.__salt__["ipsec.verify"].calls == []
