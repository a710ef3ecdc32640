"""The packets of the traffic level's probe (_utils/ipsec_probe.py): pure
parts. Real probes between namespaces: test/integration/test_probe_netns.py;
through real ESP: the lab's VM phase (test/lab/test_lab.py)."""

import struct

import pytest

import ipsec_probe


def test_echo_request_v4_has_a_valid_checksum():
    packet = ipsec_probe.echo_request(4, 0x1234, 7)
    assert packet[:1] == b"\x08" and struct.unpack("!HH", packet[4:8]) == (0x1234, 7)
    # A correct Internet checksum makes the sum over the packet 0xffff.
    assert ipsec_probe._checksum(packet) == 0
    odd = ipsec_probe.echo_request(4, 1, 1, payload=b"abc")
    assert ipsec_probe._checksum(odd) == 0


def test_echo_request_v6_leaves_the_checksum_to_the_kernel():
    packet = ipsec_probe.echo_request(6, 0x1234, 7)
    assert packet[:4] == b"\x80\x00\x00\x00"


def _ipv4(payload, ihl=5):
    return bytes([0x40 | ihl]) + b"\0" * (ihl * 4 - 1) + payload


@pytest.mark.parametrize("version,packet,expected", [
    (4, _ipv4(struct.pack("!BBHHH", 0, 0, 0, 9, 3)), (9, 3)),
    (4, _ipv4(struct.pack("!BBHHH", 0, 0, 0, 9, 3), ihl=6), (9, 3)),  # IP options
    (4, _ipv4(struct.pack("!BBHHH", 8, 0, 0, 9, 3)), None),  # our own request, looped back
    (4, _ipv4(struct.pack("!BBHHH", 3, 3, 0, 0, 0)), None),  # port unreachable
    (4, b"\x45\0", None),
    (6, struct.pack("!BBHHH", 129, 0, 0, 9, 3), (9, 3)),
    (6, struct.pack("!BBHHH", 128, 0, 0, 9, 3), None),
    (6, b"\x81", None),
])
def test_parse_reply(version, packet, expected):
    assert ipsec_probe.parse_reply(version, packet) == expected


def test_a_source_that_is_not_local_is_an_error_not_an_exception():
    """Nothing is sent: a raw socket cannot bind to an address this host
    does not have (no packet leaves: the address is a documentation one)."""
    result = ipsec_probe.probe([("203.0.113.254", "127.0.0.1")], timeout=0.2)
    assert result == {("203.0.113.254", "127.0.0.1"): {
        "sent": 0, "answered": False, "error": "cannot send from 203.0.113.254: [Errno 99] Cannot assign requested address"}}
