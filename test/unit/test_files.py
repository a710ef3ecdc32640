"""_utils/ipsec_files.py: the formula's marked edits of the operator's
ipsec.conf and ipsec.secrets are undone byte for byte, symlinks are never
followed for a diff, and a transaction is all or nothing."""

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ipsec_files as files

SETUP = {"uniqueids": "no", "plutodebug": "all crypt"}
RHEL = """# /etc/ipsec.conf - Libreswan IPsec configuration file
config setup
    # Normally, pluto logs via syslog.
    #logfile=/var/log/pluto.log
    uniqueids=yes
include /etc/crypto-policies/back-ends/libreswan.config
include /etc/ipsec.d/*.conf
"""
DEBIAN = """# /etc/ipsec.conf - Libreswan 4.0 configuration file
config setup
\t#plutodebug=all
\tvirtual_private=%v4:10.0.0.0/8,%v6:fd00::/8

# It is best to add your IPsec connections as separate files
# in /etc/ipsec.d/
include /etc/ipsec.d/*.conf
"""

LINES = st.sampled_from([
    "config setup", "\tuniqueids=yes", "    plutodebug=none", "\tlogfile=/var/log/x.log", "conn site",
    "\tleft=198.51.100.1", "include /etc/ipsec.d/*.conf", "include /etc/crypto-policies/x.config", "# comment",
    "", "\t#ipsec-formula-like comment", "version 2", "@a @b : PSK \"operator-secret\"",
    "include /srv/x.secrets  # ipsec-formula",
])


@settings(max_examples=300, deadline=None)
@given(lines=st.lists(LINES, max_size=12))
def test_edits_are_undone_byte_for_byte_and_idempotent(lines):
    original = "\n".join(lines) + ("\n" if lines and len(lines) % 3 else "")  # some without a final newline
    conf = files.edit_conf(original, SETUP, "/etc/ipsec.d")
    assert files.unedit(conf) == original
    assert files.edit_conf(files.unedit(conf), SETUP, "/etc/ipsec.d") == conf
    secrets = files.edit_secrets(original, "/etc/ipsec.d")
    assert files.unedit(secrets) == original
    assert files.edit_secrets(files.unedit(secrets), "/etc/ipsec.d") == secrets


@pytest.mark.parametrize("original", [RHEL, DEBIAN, None], ids=["rhel", "debian", "missing"])
def test_distribution_files_keep_everything_but_the_formulas_keys(original):
    conf = files.edit_conf(original, SETUP, "/etc/ipsec.d")
    kept = [line for line in (original or "").splitlines() if "uniqueids" not in line]
    for line in kept:
        assert line in conf.splitlines()
    assert "\tuniqueids=no" in conf.splitlines() and '\tplutodebug="all crypt"' in conf.splitlines()
    if original == RHEL:
        # the system-wide crypto policy include stays where it was
        assert "include /etc/crypto-policies/back-ends/libreswan.config" in conf
        assert "    #ipsec-formula-disabled: uniqueids=yes" in conf.splitlines()
    # the distribution's include of /etc/ipsec.d is enough: not added twice
    assert conf.count("include /etc/ipsec.d/*.conf") == 1
    assert files.unedit(conf) == (original or "")


def test_legacy_whole_file_is_recognised_only_exactly():
    legacy = ("# Managed by Salt (ipsec-formula). Local changes are overwritten.\n"
              "# Options: pillar ipsec:config_setup. Connections: /etc/ipsec.d/*.conf\n\nconfig setup\n")
    assert files.legacy_conf(legacy)
    assert not files.legacy_conf("# Managed by Salt (ipsec-formula). Local changes are overwritten.\nconfig setup\n")
    assert not files.legacy_conf(RHEL)
    line = files.legacy_secrets_line("/etc/ipsec.d")
    assert files.unedit("a\n" + line + "\n", legacy=[line]) == "a\n"
    assert files.unedit("include /srv/x.secrets  # ipsec-formula\n", legacy=[line]) == \
        "include /srv/x.secrets  # ipsec-formula\n"


def test_read_never_follows_a_symlink(tmp_path):
    secret = tmp_path / "x.secrets"
    secret.write_text("PSK")
    link = tmp_path / "a.conf"
    link.symlink_to(secret)
    with pytest.raises(files.NotRegular):
        files.read(str(link))
    with pytest.raises(files.NotRegular):
        files.read(str(tmp_path))
    assert files.read(str(tmp_path / "missing")) == (None, None)
    assert files.shared_target(str(link)) == str(secret)


def test_a_transaction_is_all_or_nothing(tmp_path):
    a, b, gone = tmp_path / "a.conf", tmp_path / "b.conf", tmp_path / "gone.conf"
    a.write_text("old a")
    gone.write_text("old gone")
    os.chmod(a, 0o644)
    txn = files.transaction()
    txn.stage(str(a), "new a", "0640")
    txn.stage(str(b), "new b", "0600")
    txn.remove(str(gone))
    txn.apply()
    assert a.read_text() == "new a" and b.read_text() == "new b" and not gone.exists()
    txn.rollback()
    assert a.read_text() == "old a" and not b.exists() and gone.read_text() == "old gone"
    assert oct(os.stat(a).st_mode & 0o777) == "0o644"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.conf", "gone.conf"]
    txn = files.transaction()
    txn.stage(str(a), "new a", "0640")
    txn.apply()
    txn.commit()
    assert a.read_text() == "new a" and sorted(p.name for p in tmp_path.iterdir()) == ["a.conf", "gone.conf"]


def test_a_failed_stage_leaves_nothing_behind(tmp_path):
    a = tmp_path / "a.conf"
    a.write_text("old")
    txn = files.transaction()
    txn.stage(str(a), "new", "0640")
    with pytest.raises(OSError):
        txn.stage(str(a / "under-a-file"), "x", "0640")
    assert a.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["a.conf"]
