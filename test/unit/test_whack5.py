"""ipsec_status's reading of whack/addconn replies, on the texts real
Libreswan 4.10 and 5.3.2 printed for the same calls (captured with two
isolated plutos, docs/libreswan-5.md): 5.x has no reply codes and says
"error" through whack's exit code."""

import ipsec_status

UNKNOWN_4 = '000 initiating all conns with alias=\'nope\'\n021 no connection named "nope"\n'
UNKNOWN_5 = 'no connection or alias named "nope"\'\n'
INITIATED_4 = '181 "good" #1: initiating IKEv2 connection\n'
INITIATED_5 = '"good" #1: initiating IKEv2 connection to 198.51.100.2 using UDP\n'


def test_whack_errors_by_code_4x_and_by_exit_code_5x():
    assert ipsec_status.whack_errors(UNKNOWN_4) == ['no connection named "nope"']
    assert ipsec_status.whack_errors(UNKNOWN_5, retcode=21) == ['no connection or alias named "nope"\'']
    assert ipsec_status.whack_errors(INITIATED_4) == []
    assert ipsec_status.whack_errors(INITIATED_5, retcode=0) == []
    # A 5.x failure with no text still fails; an unanswered negotiation
    # (code 10/31) is not a failure when the caller allows it.
    assert ipsec_status.whack_errors("", retcode=52) == ["whack exit 52"]
    assert ipsec_status.whack_errors('"c" #1: timeout\n', unanswered_ok=True, retcode=31) == []
    # 4.x output keeps its codes' verdict whatever the exit code.
    assert ipsec_status.whack_errors("025 no connection or alias 'nope'\n", retcode=25) == [
        "no connection or alias 'nope'"]


def test_addconn_replies_of_both_releases():
    names = ["good", "bad", "nope"]
    bad = "failed to add connection: AEAD ESP encryption algorithm AES_GCM_16 must have 'NONE' as the " \
          "integrity algorithm"
    four = ipsec_status.parse_addconn(
        '002 "good": added IKEv2 connection\n036 "bad": {}\n'.format(bad),
        "conn 'nope': not found (tried aliases)\n", names)
    five = ipsec_status.parse_addconn(
        '"good": added IKEv2 connection\n"bad": {}\n'.format(bad),
        "conn nope: not found (tried aliases)\n", names)
    for verdict in (four, five):
        assert verdict["added"] == ["good"] and sorted(verdict["rejected"]) == ["bad", "nope"]
        assert verdict["unknown"] == [] and verdict["error"] is None
    broken = ipsec_status.parse_addconn(
        "", "FATAL ERROR: ipsec addconn: /etc/ipsec.d/x.conf:14: unrecognized 'conn' keyword 'bogus'\n", ["x"])
    assert broken["error"].startswith("FATAL ERROR: ipsec addconn: /etc/ipsec.d/x.conf:14")
