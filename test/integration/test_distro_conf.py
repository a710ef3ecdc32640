"""The distribution's ipsec.conf is kept (issue: TripleO parity): the
formula adds its config setup keys and its include, real Libreswan
(`addconn --checkconfig`) accepts the result, RHEL's crypto-policy include
stays in force, and taking the formula's lines out gives the original back
byte for byte."""

import subprocess

import pytest

import ipsec_files
from labkit.pluto import IPSEC

RHEL = """# /etc/ipsec.conf - Libreswan IPsec configuration file
#
# see 'man ipsec.conf' and 'man pluto' for more information
config setup
    # Normally, pluto logs via syslog.
    #logfile=/var/log/pluto.log
    # Do not enable debug options to debug configuration issues!
    #plutodebug="all crypt"
    uniqueids=yes
    logtime=no

include {policy}
include {confdir}/*.conf
"""
CONN = "conn site\n\tleft=198.51.100.1\n\tright=198.51.100.2\n\tauthby=secret\n\tauto=add\n"


def _checkconfig(conf):
    return subprocess.run([IPSEC, "addconn", "--config", str(conf), "--checkconfig"],
                          capture_output=True, text=True)


@pytest.mark.parametrize("flavour", ["debian", "rhel"])
def test_distribution_ipsec_conf_kept_and_given_back(tmp_path, flavour):
    confdir = tmp_path / "ipsec.d"
    confdir.mkdir()
    (confdir / "site.conf").write_text(CONN)
    policy = tmp_path / "libreswan.config"
    policy.write_text("conn %default\n\tikev2=yes\n")
    if flavour == "debian":
        original = open("/etc/ipsec.conf").read().replace("/etc/ipsec.d", str(confdir))
    else:
        original = RHEL.format(policy=policy, confdir=confdir)
    conf = tmp_path / "ipsec.conf"
    conf.write_text(original)
    assert _checkconfig(conf).returncode == 0

    edited = ipsec_files.edit_conf(ipsec_files.unedit(original), {"uniqueids": "no", "plutodebug": "all crypt"},
                                   str(confdir))
    conf.write_text(edited)
    checked = _checkconfig(conf)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "uniqueids=yes" not in [line.strip() for line in edited.splitlines()]
    if flavour == "rhel":
        assert "include {}".format(policy) in edited and "logtime=no" in edited
    # what pluto would load: the site conn and the policy's %default
    listed = subprocess.run([IPSEC, "addconn", "--config", str(conf), "--listall"], capture_output=True, text=True)
    assert "site" in listed.stdout.split()
    assert ipsec_files.unedit(edited) == original
