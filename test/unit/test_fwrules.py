"""Unit tests of the firewall rule formatting/parsing (_utils/ipsec_fwrules.py)."""

import json

import ipsec_fwrules as fw

FIREWALL = {"manage": True, "backend": "nftables", "table": "ipsec_formula",
            "networks": {"internal_api": "198.51.100.0/25", "tenant": "2001:db8:0:1::/64"}}


def test_rules_cover_ike_natt_esp_ah_both_directions_both_families():
    rules = fw.desired_rules(FIREWALL)
    assert len(rules) == 2 * 2 * 4
    assert ("input", 4, "198.51.100.0/25", "udp", 500) in rules
    assert ("output", 6, "2001:db8:0:1::/64", "esp", None) in rules
    assert {r[3:] for r in rules} == {("udp", 500), ("udp", 4500), ("esp", None), ("ah", None)}


def test_nft_script_replaces_the_table_in_one_transaction():
    script = fw.nft_script("ipsec_formula", fw.desired_rules(FIREWALL), replace=True)
    lines = script.splitlines()
    assert lines[:3] == ["table inet ipsec_formula", "delete table inet ipsec_formula", "table inet ipsec_formula {"]
    assert "\t\tip6 saddr 2001:db8:0:1::/64 meta l4proto esp accept" in lines
    assert "\t\tip daddr 198.51.100.0/25 udp dport 4500 accept" in lines


def test_foreign_nft_rule_is_not_ours():
    listing = {"nftables": [
        {"chain": {"name": "input", "type": "filter", "hook": "input", "prio": -10, "policy": "accept"}},
        {"rule": {"chain": "input", "expr": [{"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": "lo"}},
                                              {"accept": None}]}},
    ]}
    parsed = fw.parse_nft_table(json.dumps(listing))
    assert parsed["rules"][0][0] == "foreign"
    assert not fw.nft_matches(parsed, [])


def test_iptables_lines_are_in_listing_form():
    rule = ("input", 4, "198.51.100.0/25", "udp", 500)
    assert " ".join(fw.iptables_line(rule)) == (
        "-A INPUT -s 198.51.100.0/25 -p udp -m udp --dport 500 -m comment --comment ipsec-formula -j ACCEPT")
    listing = "-P INPUT DROP\n" + " ".join(fw.iptables_line(rule)) + "\n-A INPUT -i lo -j ACCEPT\n"
    assert fw.iptables_ours(listing) == [fw.iptables_line(rule)]
