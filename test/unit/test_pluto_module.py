"""_modules/ipsec_pluto.py with its dunders as plain dicts and addconn/whack
faked: command lines, batching, verdicts and errors. The real pluto is in
test/integration/test_pluto_ops.py."""

import os

import pytest
from salt.exceptions import CommandExecutionError, SaltInvocationError

from labkit import loader


class Fake:
    """cmd.run_all and the pty runner: records calls, answers by a function."""

    def __init__(self, answer):
        self.answer = answer
        self.calls = []

    def run_all(self, cmd, python_shell=True, **kwargs):
        assert python_shell is False and isinstance(cmd, list)
        self.calls.append((cmd, kwargs))
        return dict({"retcode": 0, "stdout": "", "stderr": ""}, **self.answer(cmd))

    def tty(self, cmd, timeout=None):
        self.calls.append((cmd, {"tty": True}))
        answer = dict({"retcode": 0, "stdout": "", "stderr": ""}, **self.answer(cmd))
        return answer["retcode"], answer["stdout"], answer["stderr"]


@pytest.fixture
def make(tmp_path):
    def build(answer):
        socket = tmp_path / "pluto.ctl"
        socket.write_text("")
        config = tmp_path / "ipsec.conf"
        config.write_text("config setup\n")
        fake = Fake(answer)
        lookup = {"ipsec_bin": "/bin/true", "ctlsocket": str(socket), "config_file": str(config),
                  "algparse": "/bin/true"}
        mod = loader.load_file("_modules", "ipsec_pluto", __context__={}, __utils__=loader.utils_functions(),
                               __salt__={"ipsec.lookup": lambda: dict(lookup), "cmd.run_all": fake.run_all})
        mod._run_tty = fake.tty
        return mod, fake, lookup
    return build


def added(cmd):
    names = cmd[cmd.index("--ctlsocket") + 2:]
    return {"stdout": "".join('002 "{}": added IKEv2 connection\n'.format(n) for n in names)}


def test_add_is_one_addconn_for_all_names(make):
    mod, fake, lookup = make(added)
    names = ["overcloud-n-198.51.100.{}-198.51.100.{}".format(i, i + 1) for i in range(300)]
    assert mod.add(names) == {"added": names, "warnings": []}
    assert len(fake.calls) == 1
    cmd, kwargs = fake.calls[0]
    assert kwargs == {"tty": True}
    assert cmd == ["/bin/true", "addconn", "--config", lookup["config_file"],
                   "--ctlsocket", lookup["ctlsocket"]] + names


def test_add_chunks_long_argument_lists(make):
    mod, fake, _ = make(added)
    names = ["conn-{:04d}".format(i) for i in range(100)]  # 10 bytes each with the separator
    assert mod.add(names, chunk_bytes=250)["added"] == names
    chunks = [cmd[6:] for cmd, _ in fake.calls]
    assert [len(chunk) for chunk in chunks] == [25, 25, 25, 25]
    assert sum(chunks, []) == names


def test_add_names_each_rejected_conn_with_plutos_message(make):
    def answer(cmd):
        return {"retcode": 0, "stdout": (
            '036 "bad": failed to add connection: AEAD ESP encryption algorithm AES_GCM_16 must have '
            "'NONE' as the integrity algorithm\n"
            '002 "good": added IKEv2 connection\n'), "stderr": "conn 'missing': not found (tried aliases)\n"}
    mod, _, _ = make(answer)
    with pytest.raises(CommandExecutionError) as err:
        mod.add(["bad", "good", "missing"])
    text = str(err.value)
    assert "pluto rejected 2 of 3 conns" in text
    assert "bad: \"bad\": failed to add connection: AEAD ESP" in text
    assert "missing: conn 'missing': not found" in text
    assert err.value.info["added"] == ["good"]
    assert set(err.value.info["rejected"]) == {"bad", "missing"}


def test_add_without_replies_asks_pluto_what_it_loaded(make):
    def answer(cmd):
        if "addconn" in cmd:
            return {"retcode": 36}
        return {"stdout": '000 "one": 198.51.100.1...198.51.100.2; unrouted;\n'}
    mod, fake, _ = make(answer)
    with pytest.raises(CommandExecutionError) as err:
        mod.add(["one", "two"])
    assert err.value.info == {"added": ["one"],
                              "rejected": {"two": "not loaded by pluto (addconn exit 36, no message)"}}
    assert fake.calls[-1][0][-1] == "--status"


def test_add_whole_config_error_adds_nothing(make):
    mod, _, _ = make(lambda cmd: {"retcode": 3, "stderr": "cannot load config '/etc/ipsec.conf': "
                                                          "/etc/ipsec.d/a.conf:2: syntax error [bogus]\n"})
    with pytest.raises(CommandExecutionError, match=r"ipsec addconn: cannot load config .*syntax error \[bogus\]"):
        mod.add(["a"])


@pytest.mark.parametrize("bad", ["--autoall", "has space", "", "quote\"d", 7])
def test_names_are_checked_before_anything_runs(make, bad):
    mod, fake, _ = make(added)
    with pytest.raises(SaltInvocationError):
        mod.add(["fine", bad])
    assert fake.calls == []


def test_names_from_the_cli_string(make):
    mod, _, _ = make(added)
    assert mod.add("a,b c")["added"] == ["a", "b", "c"]
    assert mod.add([]) == {"added": [], "warnings": []}


def test_delete_and_initiate_one_whack_per_conn(make):
    def answer(cmd):
        if cmd[-2:] == ["--initiate", "--asynchronous"] and cmd[-3] == "nope":
            return {"stdout": "000 initiating all conns with alias='nope'\n021 no connection named \"nope\"\n"}
        return {"stdout": ""}
    mod, fake, lookup = make(answer)
    assert mod.delete(["a", "b"]) == {"deleted": ["a", "b"]}
    assert [cmd for cmd, _ in fake.calls] == [
        ["/bin/true", "whack", "--ctlsocket", lookup["ctlsocket"], "--name", name, "--delete"] for name in "ab"]
    fake.calls.clear()
    assert mod.initiate(["a"]) == {"initiated": ["a"]}
    assert fake.calls[0][0][-4:] == ["--name", "a", "--initiate", "--asynchronous"]
    with pytest.raises(CommandExecutionError, match='initiate failed for 1 conns: nope: no connection named "nope"'):
        mod.initiate(["a", "nope"])


def test_initiate_lets_go_of_a_whack_still_attached(make):
    # What Salt's cmd.run_all returns when its timeout kills the command
    # (salt/modules/cmdmod.py: stdout "Timed out after N seconds", retcode 1).
    def answer(cmd):
        if "slow" in cmd:
            return {"retcode": 1, "stdout": "Timed out after {} seconds".format(mod.INITIATE_TIMEOUT)}
        return {}

    mod, fake, _ = make(answer)
    assert mod.initiate(["slow", "a"]) == {"initiated": ["slow", "a"]}
    assert [kwargs["timeout"] for _, kwargs in fake.calls] == [mod.INITIATE_TIMEOUT] * 2
    # Anything else that times out still fails, naming the conn.
    with pytest.raises(CommandExecutionError, match="delete failed for 1 conns: slow: Timed out after"):
        mod.delete(["slow"])


def test_rereadsecrets_is_quiet_and_never_repeats_a_secret(make):
    out = ('002 loading secrets from "/etc/ipsec.secrets"\n'
           '003 "/etc/ipsec.d/x.secrets" line 3: PSK data malformed (input does not begin with format prefix): '
           '"the-secret\n')
    mod, fake, _ = make(lambda cmd: {"stdout": out})
    with pytest.raises(CommandExecutionError) as err:
        mod.rereadsecrets()
    assert "the-secret" not in str(err.value) and "the-secret" not in repr(err.value.info)
    assert "/etc/ipsec.d/x.secrets line 3: PSK data malformed" in str(err.value)
    assert fake.calls[0][1]["output_loglevel"] == "quiet"
    mod2, _, _ = make(lambda cmd: {"stdout": '002 forgetting secrets\n002 loading secrets from "/etc/ipsec.secrets"\n'})
    assert mod2.rereadsecrets() == {"files": ["/etc/ipsec.secrets"]}


def test_running_and_not_running(make):
    mod, fake, lookup = make(lambda cmd: {})
    assert mod.running() is True
    assert fake.calls[0][0][-1] == "--briefstatus"
    refused = lambda cmd: {"retcode": 1, "stderr": 'whack: connect() for "/run/pluto/pluto.ctl" failed (111 Connection refused)'}  # noqa: E731
    mod, _, _ = make(refused)
    assert mod.running() is False
    with pytest.raises(CommandExecutionError, match="pluto is not running"):
        mod.loaded()
    mod, fake, lookup = make(lambda cmd: {})
    os.unlink(lookup["ctlsocket"])
    assert mod.running() is False and fake.calls == []


def test_checkconfig_input_shapes(make):
    mod, _, _ = make(lambda cmd: {})
    with pytest.raises(SaltInvocationError):
        mod.checkconfig(42)
    assert mod.checkconfig({"/etc/ipsec.d/a.secrets": "x : PSK y", "/etc/ipsec.d/a.conf": "conn a\n\tleft=1.2.3.4\n"}) == []
    problems = mod.checkconfig(["conn a\n\tleft=x\n", "conn a\n\tleft=y\n"], algorithms=False)
    assert problems == ["conn a is defined 2 times (conf-1.conf, conf-2.conf)"]
