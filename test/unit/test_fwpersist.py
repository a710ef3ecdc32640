"""The persisted firewall's pure parts: the formula's table file, its marked
include in the nftables config, its marked block in a saved-rules file, and
``unedit`` taking each back byte for byte. (test/firewall/test_persist.py
loads the results with the real nft and iptables-restore.)"""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ipsec_files as files
import ipsec_fwrules as fwrules

pytestmark = pytest.mark.unit

FIREWALL = {"networks": {"internal_api": "198.51.100.0/25", "tenant": "2001:db8:0:1::/64"}}
RULES = fwrules.desired_rules(FIREWALL)
NFT_FILE = "/etc/ipsec-formula.nft"
SAVED_FILTER = "*filter\n:INPUT DROP [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n-A INPUT -i lo -j ACCEPT\nCOMMIT\n"
# Files the operator may have: none, empty, no newline at the end, CRLF-free
# text with and without a filter table, a filter table with no chain line.
ORIGINALS = [None, "", "flush ruleset", "flush ruleset\n", "#!/usr/sbin/nft -f\n\nflush ruleset\n\ntable inet t {}\n",
             SAVED_FILTER, "*nat\n:POSTROUTING ACCEPT [0:0]\nCOMMIT\n", "*filter\nCOMMIT\n",
             "*nat\nCOMMIT\n" + SAVED_FILTER, SAVED_FILTER.rstrip("\n")]


def test_the_table_file_is_the_runtime_script_that_replaces_the_table():
    text = fwrules.nft_persisted("ipsec_formula", RULES)
    assert fwrules.is_persisted_file(text)
    body = text[len(fwrules.PERSIST_HEADER):]
    assert body == fwrules.nft_script("ipsec_formula", RULES, replace=True)
    assert body.startswith("table inet ipsec_formula\ndelete table inet ipsec_formula\n")
    assert not fwrules.is_persisted_file("table inet ipsec_formula {}\n")


@pytest.mark.parametrize("original", ORIGINALS)
def test_one_include_added_and_unedit_restores_the_config(original):
    edited = files.edit_nft_conf(original, NFT_FILE)
    assert edited.count('include "{}"'.format(NFT_FILE)) == 1
    assert edited.startswith((original or "").rstrip("\n")), "the operator's lines come first"
    assert files.edit_nft_conf(files.unedit(edited), NFT_FILE) == edited, "not idempotent"
    assert files.unedit(edited) == (original or "")


def test_an_include_the_operator_wrote_is_enough():
    original = 'flush ruleset\ninclude "{}"\n'.format(NFT_FILE)
    assert files.edit_nft_conf(original, NFT_FILE) == original


@pytest.mark.parametrize("original", ORIGINALS)
def test_saved_rules_block_first_in_the_filter_table_and_unedit_restores(original):
    lines = fwrules.iptables_saved_lines([r for r in RULES if r[1] == 4])
    edited = files.edit_saved_rules(original, lines)
    body = edited.splitlines()
    assert [line for line in body if "--comment ipsec-formula" in line] == lines
    # Inside a filter table: after its chain lines, before any rule of the
    # operator's and before its COMMIT.
    filter_at = body.index("*filter")
    first = body.index(lines[0])
    assert filter_at < first < body.index("COMMIT", filter_at)
    assert all(line.startswith((":", "#")) for line in body[filter_at + 1:first]), body
    assert files.unedit(edited) == (original or "")
    assert files.edit_saved_rules(files.unedit(edited), lines) == edited
    assert files.edit_saved_rules(original, []) == (original or ""), "no rule: nothing added"


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(["*filter", ":INPUT ACCEPT [0:0]", "-A INPUT -j ACCEPT", "COMMIT", "# c",
                                 "*nat", "flush ruleset", "", "table inet x {}"]), max_size=12),
       st.booleans())
def test_every_edit_is_undone_byte_for_byte(lines, trailing_newline):
    """The class: whatever the operator's file holds, unedit of each edit
    gives it back exactly."""
    original = "\n".join(lines) + ("\n" if trailing_newline and lines else "")
    saved = fwrules.iptables_saved_lines(RULES[:2])
    assert files.unedit(files.edit_saved_rules(original, saved)) == original
    assert files.unedit(files.edit_nft_conf(original, NFT_FILE)) == original
