"""The longest PSK the gate accepts is read whole by a real pluto, on the
longest secrets line the plan makes (two full-length IPv6 addresses); a
longer one is not (the negative control that makes the limit real)."""

import pytest

import ipsec_plan
import ipsec_render
import ipsec_status

LONGEST_IDS = "2001:db8:ffff:ffff:ffff:ffff:ffff:fff1 2001:db8:ffff:ffff:ffff:ffff:ffff:fff2"
TOKEN_ROOM = ipsec_plan.MAX_PSK_TOKEN


def _reread(pluto, token):
    with open(pluto.secrets_file, "w") as handle:
        handle.write("{} : PSK {}\n".format(" ".join(ipsec_render.format_id(i) for i in LONGEST_IDS.split()), token))
    out = pluto.whack("--rereadsecrets").stdout
    return ipsec_status.secrets_report(out)[1]


@pytest.fixture
def pluto(namespace_factory, pluto_factory, tmp_path):
    ns = namespace_factory("psk")
    ns.add_stub(["2001:db8:ffff:ffff:ffff:ffff:ffff:fff1/64"])
    instance = pluto_factory(tmp_path / "root", ns.name)
    with open(instance.config_file, "w") as handle:
        handle.write("config setup\n")
    with open(instance.secrets_file, "w") as handle:
        handle.write("")
    return instance.start()


@pytest.mark.parametrize("psk", [
    "p" * (TOKEN_ROOM - 2),                                  # quoted, printable ASCII
    "é" * ((TOKEN_ROOM - 2) // 4 * 3 // 2),                  # 0s (base64) form
    '"' * ((TOKEN_ROOM - 2) // 4 * 3),
], ids=["quoted", "utf8-base64", "quote-base64"])
def test_the_longest_accepted_psk_is_read_whole(pluto, psk):
    assert ipsec_plan.psk_problem(psk) is None
    token = ipsec_render.psk_token(psk)
    assert len(token) <= TOKEN_ROOM
    assert _reread(pluto, token) == []
    listed = pluto.run("auto", "--ctlsocket", pluto.ctlsocket, "--listall").stdout
    assert listed.count(": PSK ") == 1


def test_a_longer_psk_is_what_pluto_cannot_read(pluto):
    psk = "p" * 3000
    assert ipsec_plan.psk_problem(psk).startswith("is too long for Libreswan")
    problems = _reread(pluto, ipsec_render.psk_token(psk))
    assert problems, "pluto read a 3000-character PSK: the limit would be needless"
    assert psk[:40] not in " ".join(problems)
