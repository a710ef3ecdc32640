"""ipsec_releases: conn keyword overrides a Libreswan release ignores."""

import pytest
from salt.exceptions import SaltInvocationError

import ipsec_releases


def test_dpdaction_and_keyingtries_are_refused_for_5x_only():
    conf = {"conn_options": {"dpdaction": "restart", "dpddelay": "10"},
            "networks": {"storage": {"cidr": "203.0.113.0/24", "conn_options": {"keyingtries": "0"}},
                         "tenant": {"cidr": "2001:db8::/64"}}}
    found = ipsec_releases.obsolete_options(conf, 5)
    assert [key for key, _ in found] == ["conn_options:dpdaction", "networks:storage:conn_options:keyingtries"]
    assert all("obsolete in Libreswan 5.x" in problem for _, problem in found)
    assert ipsec_releases.obsolete_options(conf, 4) == []
    with pytest.raises(SaltInvocationError, match=r"^ipsec:conn_options:dpdaction: obsolete in Libreswan 5\.x"):
        ipsec_releases.check_release(conf, 5)
    ipsec_releases.check_release(conf, 4)


def test_removal_and_odd_shapes_are_not_problems():
    # None removes a keyword the formula sets: nothing is rendered.
    assert ipsec_releases.obsolete_options({"conn_options": {"dpdaction": None}}, 5) == []
    assert ipsec_releases.obsolete_options({"networks": {"x": None}, "conn_options": "bad"}, 5) == []
    assert ipsec_releases.obsolete_options(None, 5) == []
