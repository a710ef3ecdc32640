"""Unit tests of the status parser (_utils/ipsec_status.py).

DERIVED TEXT: every status text here is written from the facts in
../shared/reference/libreswan.md (prefixes, summary lines, state names and
texts of 3.x / 4.x / 5.x, SA detail and trafficstatus lines), plus a few
details seen in published `ipsec status` output of Libreswan 3.18 and 5.3
(3.x `interface eth0/eth0 ADDR@500`, bare `000` separators, `isakmp#N`,
`ESPout=0B!`, instance peers written `...ADDR`; 5.x `host: oriented`). None
of it was captured from a running pluto: real Libreswan 4.10 output is
parsed by test/integration/test_status_pluto.py.
"""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from salt.exceptions import SaltInvocationError

import ipsec_status
from labkit.statustext import GENERATIONS, Conn, render

# --- Libreswan 3.x: IKEv2 and IKEv1, written out in full (derived) --------

LIBRESWAN_3 = """\
000 using kernel interface: netkey
000 interface lo/lo ::1@500
000 interface lo/lo 127.0.0.1@4500
000 interface lo/lo 127.0.0.1@500
000 interface eth1/eth1 198.51.100.10@4500
000 interface eth1/eth1 198.51.100.10@500
000 interface eth1/eth1 198.51.100.100@500
000
000 config setup options:
000
000 configdir=/etc, configfile=/etc/ipsec.conf, secrets=/etc/ipsec.secrets, ipsecdir=/etc/ipsec.d
000 nhelpers=-1, uniqueids=no, perpeerlog=no, shuntlifetime=900s, xfrmlifetime=300s
000
000 Connection list:
000
000 "overcloud-internal_api-198.51.100.10-198.51.100.11": 198.51.100.10...198.51.100.11; erouted; eroute owner: #2
000 "overcloud-internal_api-198.51.100.10-198.51.100.11":     oriented; my_ip=unset; their_ip=unset
000 "overcloud-internal_api-198.51.100.10-198.51.100.11":   policy: PSK+ENCRYPT+TUNNEL+PFS+UP+IKEV2_ALLOW+IKEV2_PROPOSE+SAREF_TRACK;
000 "overcloud-internal_api-198.51.100.10-198.51.100.11":   newest ISAKMP SA: #1; newest IPsec SA: #2;
000 "site-v1": 192.0.2.0/24===198.51.100.10[@east]---198.51.100.1...203.0.113.7<203.0.113.7>[@west]===10.1.0.0/16; erouted; eroute owner: #4
000 "site-v1":     oriented; my_ip=unset; their_ip=unset
000 "site-v1":   newest ISAKMP SA: #3; newest IPsec SA: #4;
000 "overcloud-internal_api-vip-tunnel": 198.51.100.100[@internal_apivip]...%any[@overcloudinternal_apicluster]; unrouted; eroute owner: #0
000 "overcloud-internal_api-vip-tunnel":     oriented; my_ip=unset; their_ip=unset
000 "overcloud-internal_api-vip-tunnel"[1]: 198.51.100.100[@internal_apivip]...198.51.100.20[@overcloudinternal_apicluster]; erouted; eroute owner: #6
000 "overcloud-internal_api-vip-tunnel"[1]:     oriented; my_ip=unset; their_ip=unset
000 "overcloud-internal_api-vip-tunnel"[1]:   newest ISAKMP SA: #5; newest IPsec SA: #6;
000 "down": 198.51.100.10...198.51.100.12; unrouted; eroute owner: #0
000 "down":     unoriented; my_ip=unset; their_ip=unset
000 "trying": 198.51.100.10...198.51.100.13; unrouted; eroute owner: #0
000 "trying":     oriented; my_ip=unset; their_ip=unset
000
000 Total IPsec connections: loaded 6, active 3
000
000 State Information: DDoS cookies not required, Accepting new IKE connections
000 IKE SAs: total(4), half-open(1), open(0), authenticated(3), anonymous(0)
000 IPsec SAs: total(3), authenticated(3), anonymous(0)
000
000 #2: "overcloud-internal_api-198.51.100.10-198.51.100.11":500 STATE_V2_IPSEC_I (IPsec SA established); EVENT_SA_REPLACE in 28505s; newest IPSEC; eroute owner; isakmp#1; idle; import:admin initiate
000 #2: "overcloud-internal_api-198.51.100.10-198.51.100.11" esp.6a1c3e58@198.51.100.11 esp.fa96d4a3@198.51.100.10 tun.0@198.51.100.11 tun.0@198.51.100.10 ref=0 refhim=0 Traffic: ESPin=2KB ESPout=84B! ESPmax=4194303B
000 #1: "overcloud-internal_api-198.51.100.10-198.51.100.11":500 STATE_PARENT_I3 (PARENT SA established); EVENT_SA_REPLACE in 28505s; newest ISAKMP; idle; import:admin initiate
000 #4: "site-v1":4500 STATE_QUICK_I2 (sent QI2, IPsec SA established); EVENT_SA_REPLACE in 2833s; newest IPSEC; eroute owner; isakmp#3; idle; import:admin initiate
000 #4: "site-v1" esp.132609f1@203.0.113.7 esp.c3c2929e@198.51.100.10 tun.0@203.0.113.7 tun.0@198.51.100.10 ref=0 refhim=0 Traffic: ESPin=0B ESPout=0B! ESPmax=4194303B
000 #3: "site-v1":4500 STATE_MAIN_I4 (ISAKMP SA established); EVENT_SA_REPLACE in 27792s; newest ISAKMP; lastdpd=5s(seq in:709 out:0); idle; import:admin initiate
000 #5: "overcloud-internal_api-vip-tunnel"[1] ...198.51.100.20:500 STATE_PARENT_R2 (received v2I2, PARENT SA established); EVENT_SA_REPLACE in 28000s; newest ISAKMP; idle; import:not set
000 #6: "overcloud-internal_api-vip-tunnel"[1] ...198.51.100.20:500 STATE_V2_IPSEC_R (IPsec SA established); EVENT_SA_REPLACE in 28000s; newest IPSEC; eroute owner; isakmp#5; idle; import:not set
000 #6: "overcloud-internal_api-vip-tunnel"[1] ...198.51.100.20 esp.d6d830dc@198.51.100.20 esp.475291e5@198.51.100.100 ref=0 refhim=0 Traffic: ESPin=1MB ESPout=3KB! ESPmax=0B
000 #7: "trying":500 STATE_PARENT_I1 (sent v2I1, expected v2R1); EVENT_v2_RETRANSMIT in 1s; idle; import:admin initiate
000
000 Bare Shunt list:
000
"""

# --trafficstatus of the same pluto (3.x: no maxBytes).
LIBRESWAN_3_TRAFFIC = """\
006 #2: "overcloud-internal_api-198.51.100.10-198.51.100.11", type=ESP, add_time=1795708793, inBytes=2100, outBytes=84, id='198.51.100.11'
006 #6: "overcloud-internal_api-vip-tunnel"[1] 198.51.100.20, type=ESP, add_time=1795708799, inBytes=1048999, outBytes=3075, id='@overcloudinternal_apicluster'
"""

N2N = "overcloud-internal_api-198.51.100.10-198.51.100.11"
SERVER = "overcloud-internal_api-vip-tunnel"


def test_3x_summary_connections_and_version():
    parsed = ipsec_status.parse_status(LIBRESWAN_3)
    assert parsed["version"] == "3" and parsed["pluto_version"] is None
    assert parsed["summary"] == {
        "connections": {"loaded": 6, "active": 3, "routed": None},
        "ike_sas": {"total": 4, "half_open": 1, "open": 0, "authenticated": 3, "anonymous": 0},
        "ipsec_sas": {"total": 3, "authenticated": 3, "anonymous": 0},
    }
    assert set(parsed["connections"]) == {N2N, "site-v1", SERVER, SERVER + "[1]", "down", "trying"}
    assert parsed["addresses"] == ["::1", "127.0.0.1", "198.51.100.10", "198.51.100.100"]
    assert parsed["interfaces"][0] == {"device": "lo", "protocol": None, "address": "::1", "port": 500}


def test_3x_ikev2_states_keyed_on_text_and_parent_reference():
    conn = ipsec_status.parse_status(LIBRESWAN_3)["connections"][N2N]
    assert conn["routing"] == "erouted" and conn["eroute_owner"] == 2 and conn["oriented"] is True
    assert (conn["local"], conn["remote"]) == ("198.51.100.10", "198.51.100.11")
    assert (conn["newest_ike_sa"], conn["newest_child_sa"]) == (1, 2)
    [ike] = conn["ike_sas"]
    assert ike["serial"] == 1 and ike["established"] and ike["state"] == "STATE_PARENT_I3"
    assert ike["text"] == "PARENT SA established" and ike["newest"] and ike["port"] == 500
    [child] = conn["child_sas"]
    assert child["serial"] == 2 and child["established"] and child["ike_sa"] == 1
    assert (child["spi_out"], child["spi_in"], child["protocol"]) == ("6a1c3e58", "fa96d4a3", "esp")
    # The status text rounds (2KB); "84B!" is 3.x's marker on the counter.
    assert (child["in_bytes"], child["out_bytes"], child["bytes_exact"]) == (2048, 84, False)


def test_3x_ikev1_main_and_quick_mode():
    conn = ipsec_status.parse_status(LIBRESWAN_3)["connections"]["site-v1"]
    assert [(sa["serial"], sa["established"], sa["state"]) for sa in conn["ike_sas"]] == [(3, True, "STATE_MAIN_I4")]
    [child] = conn["child_sas"]
    assert (child["serial"], child["established"], child["ike_sa"], child["port"]) == (4, True, 3, 4500)
    assert child["text"] == "sent QI2, IPsec SA established"
    assert (conn["local"], conn["local_id"], conn["local_subnet"]) == ("198.51.100.10", "@east", "192.0.2.0/24")
    assert (conn["remote"], conn["remote_id"], conn["remote_subnet"]) == ("203.0.113.7", "@west", "10.1.0.0/16")


def test_3x_template_instance_and_trafficstatus_bytes():
    parsed = ipsec_status.parse_status(LIBRESWAN_3, LIBRESWAN_3_TRAFFIC)
    template, instance = parsed["connections"][SERVER], parsed["connections"][SERVER + "[1]"]
    assert template["remote"] == "%any" and template["ike_sas"] == [] and template["instance"] is None
    assert instance["base"] == SERVER and instance["instance"] == "[1]"
    assert (instance["remote"], instance["remote_id"]) == ("198.51.100.20", "@overcloudinternal_apicluster")
    [ike] = instance["ike_sas"]
    assert ike["established"] and ike["peer"] == "198.51.100.20" and ike["state"] == "STATE_PARENT_R2"
    [child] = instance["child_sas"]
    assert child["ike_sa"] == 5 and child["peer"] == "198.51.100.20"
    # trafficstatus replaces the rounded counters with exact ones.
    assert (child["in_bytes"], child["out_bytes"], child["bytes_exact"]) == (1048999, 3075, True)
    assert child["traffic_id"] == "@overcloudinternal_apicluster"
    assert parsed["connections"][N2N]["child_sas"][0]["in_bytes"] == 2100
    assert [(t["serial"], t["name"], t["peer"], t["max_bytes"]) for t in parsed["traffic"]] == [
        (2, N2N, None, None), (6, SERVER + "[1]", "198.51.100.20", None)]


def test_3x_half_open_and_unoriented():
    parsed = ipsec_status.parse_status(LIBRESWAN_3)
    assert parsed["connections"]["down"]["oriented"] is False
    [trying] = parsed["connections"]["trying"]["ike_sas"]
    assert not trying["established"] and trying["text"] == "sent v2I1, expected v2R1"
    assert parsed["connections"]["trying"]["child_sas"] == []


def test_3x_without_the_pluto_version_line_is_still_3():
    parsed = ipsec_status.parse_status(LIBRESWAN_3)
    assert parsed["version_source"] == "3.x line formats"


# --- every generation, from one scenario (labkit.statustext, derived) -----

SCENARIO = [
    Conn("n2n", "198.51.100.10", "198.51.100.11", ike="established", child="established",
         in_bytes=2048, out_bytes=3 * 1024 * 1024),
    Conn("ike-only", "198.51.100.10", "198.51.100.12", ike="established"),
    Conn("half", "198.51.100.10", "198.51.100.13", ike="half-open"),
    Conn("idle", "198.51.100.10", "198.51.100.14", oriented=False),
    Conn("t6", "2001:db8:0:1::10", "2001:db8:0:1::11", ike="established", child="established", in_bytes=1024),
    Conn("vip", "198.51.100.100", "%any", "@vip", "@cluster"),
    Conn("vip", "198.51.100.100", "198.51.100.20", "@vip", "@cluster", instance=1,
         ike="established", child="established"),
    Conn("vip6", "2001:db8:0:1::100", "%any", "@vip6", "@cluster6"),
    Conn("vip6", "2001:db8:0:1::100", "2001:db8:0:1::20", "@vip6", "@cluster6", instance=2,
         ike="established", child="established", out_bytes=5),
]


def sa_view(parsed):
    """What must not depend on the generation."""
    return {
        name: (
            conn["local"], conn["remote"], conn["oriented"],
            [(sa["serial"], sa["established"], sa["peer"]) for sa in conn["ike_sas"]],
            [(sa["serial"], sa["established"], sa["ike_sa"], sa["spi_out"], sa["in_bytes"], sa["out_bytes"])
             for sa in conn["child_sas"]],
        )
        for name, conn in parsed["connections"].items()
    }


REFERENCE = sa_view(ipsec_status.parse_status(render(SCENARIO, "4.10")[0]))


@pytest.mark.parametrize("generation", GENERATIONS)
def test_every_generation_parses_to_the_same_sas(generation):
    text, traffic = render(SCENARIO, generation, addresses=("198.51.100.10", "198.51.100.100", "2001:db8:0:1::100"))
    parsed = ipsec_status.parse_status(text)
    assert sa_view(parsed) == REFERENCE
    assert parsed["version"] == generation[0]
    assert parsed["summary"]["ike_sas"] == {
        "total": 6, "half_open": 1, "open": 0, "authenticated": 5, "anonymous": 0}
    assert parsed["summary"]["connections"]["routed"] == (4 if generation in ("5.3", "5.4") else None)
    assert parsed["lines"]["ignored"] <= 6, parsed["lines"]  # only section titles
    exact = ipsec_status.parse_status(text, traffic)
    assert exact["connections"]["n2n"]["child_sas"][0]["out_bytes"] == 3 * 1024 * 1024
    assert all(sa["bytes_exact"] for conn in exact["connections"].values() for sa in conn["child_sas"])


@pytest.mark.parametrize("generation,state", [
    ("3", "STATE_PARENT_I3"), ("4.4", "STATE_V2_ESTABLISHED_IKE_SA"), ("4.10", "STATE_V2_ESTABLISHED_IKE_SA"),
    ("5.0", "STATE_V2_ESTABLISHED_IKE_SA"), ("5.2", "ESTABLISHED_IKE_SA"), ("5.3", "ESTABLISHED_IKE_SA"),
    ("5.4", None),
])
def test_state_names_are_kept_for_display_only(generation, state):
    parsed = ipsec_status.parse_status(render(SCENARIO, generation)[0])
    [ike] = parsed["connections"]["n2n"]["ike_sas"]
    assert ike["state"] == state and ike["established"] is True


def test_4_0_to_4_4_child_text_ipsec_sa_established():
    parsed = ipsec_status.parse_status(render(SCENARIO, "4.4")[0])
    [child] = parsed["connections"]["n2n"]["child_sas"]
    assert child["text"] == "IPsec SA established" and child["established"]


def test_5x_without_prefixes_and_without_pluto_version_line():
    text = render(SCENARIO, "5.4", pluto_version=False)[0]
    assert not any(line[:3].isdigit() for line in text.splitlines())
    parsed = ipsec_status.parse_status(text)
    assert parsed["version"] == "5" and parsed["version_source"] == "no numeric line prefixes"
    assert sa_view(parsed) == REFERENCE


def test_4x_without_pluto_version_line():
    parsed = ipsec_status.parse_status(render(SCENARIO, "4.10", pluto_version=False)[0])
    assert parsed["version"] == "4" and parsed["pluto_version"] is None


def test_ipv6_spis_and_instance_peers():
    parsed = ipsec_status.parse_status(render(SCENARIO, "5.4")[0])
    conn = parsed["connections"]["vip6[2]"]
    assert conn["base"] == "vip6" and conn["remote"] == "2001:db8:0:1::20"
    assert conn["ike_sas"][0]["peer"] == "2001:db8:0:1::20"
    [child] = conn["child_sas"]
    assert child["spi_out"] and child["spi_in"] and child["out_bytes"] == 5


# --- 4.x details (derived from libreswan.md) ------------------------------

def test_4x_ikev1_parent_reference_pending_child_and_showstates_only():
    """`--showstates` output: state lines without the connection list."""
    text = (
        '000 #1: "v1":500 STATE_MAIN_I4 (IKE SA established); REPLACE in 28000s; newest; lastdpd=-1s(seq in:0 out:0); idle;\n'
        '000 #2: "v1":500 STATE_QUICK_I2 (IPsec SA established); REPLACE in 28000s; newest; eroute owner; ISAKMP SA #1; idle;\n'
        '000 #3: "c":500 STATE_V2_PARENT_I1 (sent IKE_SA_INIT request); RETRANSMIT in 1s; idle;\n'
        '000 #3: pending CHILD SA for "c"\n'
        '000 #4: "c":500 STATE_V2_PARENT_I2 (sent IKE_AUTH request); RETRANSMIT in 1s; idle;\n'
    )
    parsed = ipsec_status.parse_status(text)
    v1 = parsed["connections"]["v1"]
    assert [sa["serial"] for sa in v1["ike_sas"]] == [1] and v1["ike_sas"][0]["established"]
    assert v1["child_sas"][0]["ike_sa"] == 1 and v1["child_sas"][0]["established"]
    c = parsed["connections"]["c"]
    assert [(sa["serial"], sa["established"]) for sa in c["ike_sas"]] == [(3, False), (4, False)]
    assert c["pending_child_sas"] == [3] and c["child_sas"] == []
    assert c["local"] is None  # no connection list in this text
    assert parsed["summary"]["ike_sas"]["total"] is None  # nor summary lines


def test_rekey_and_new_child_states():
    text = (
        '000 #5: "c":500 STATE_V2_REKEY_IKE_I1 (sent CREATE_CHILD_SA request to rekey IKE SA); RETRANSMIT in 1s; IKE SA #1; idle;\n'
        '000 #6: "c":500 STATE_V2_NEW_CHILD_I1 (sent CREATE_CHILD_SA request for new IPsec SA); RETRANSMIT in 1s; IKE SA #1; idle;\n'
        '000 #1: "c":500 STATE_V2_ESTABLISHED_IKE_SA (established IKE SA); REKEY in 1s; newest; idle;\n'
    )
    conn = ipsec_status.parse_status(text)["connections"]["c"]
    assert [(sa["serial"], sa["established"]) for sa in conn["ike_sas"]] == [(1, True), (5, False)]
    assert [(sa["serial"], sa["established"], sa["ike_sa"]) for sa in conn["child_sas"]] == [(6, False, 1)]


def test_names_with_hash_slash_and_nested_instances():
    text = (
        '"private#172.31.0.0/16"[1][2]: 172.31.24.146...172.31.22.162; erouted; eroute owner: #2\n'
        '"private#172.31.0.0/16"[1][2]:   host: oriented; local: 172.31.24.146;\n'
        '#1: "private#172.31.0.0/16"[1][2] 172.31.22.162:4500 established IKE SA; newest; idle;\n'
        '#2: "private#172.31.0.0/16"[1][2] 172.31.22.162 esp.d6d830dc@172.31.22.162 esp.475291e5@172.31.24.146 '
        'Traffic: ESPin=128B ESPout=128B ESPmax=2^63B\n'
    )
    parsed = ipsec_status.parse_status(text)
    conn = parsed["connections"]["private#172.31.0.0/16[1][2]"]
    assert conn["base"] == "private#172.31.0.0/16" and conn["instance"] == "[1][2]" and conn["oriented"]
    assert conn["ike_sas"][0]["port"] == 4500
    # A detail line without its state line: an installed SA all the same.
    assert conn["child_sas"][0]["established"] and conn["child_sas"][0]["in_bytes"] == 128


def test_trafficstatus_alone_and_ids_with_commas():
    text = (
        "006 #3: \"c\", type=ESP, add_time=1590508783, inBytes=10, outBytes=20, maxBytes=2^63B, "
        "id='C=CA, O=Libreswan, CN=east'\n"
        "#4: \"road\"[7] 2001:db8::9, type=ESP, add_time=1, inBytes=0, outBytes=1, id='@road'\n"
    )
    records = ipsec_status.parse_traffic(text)
    assert records[0]["id"] == "C=CA, O=Libreswan, CN=east" and records[0]["in_bytes"] == 10
    assert (records[1]["name"], records[1]["peer"], records[1]["out_bytes"]) == ("road[7]", "2001:db8::9", 1)
    assert ipsec_status.parse_traffic("") == []


# --- robustness -------------------------------------------------------------

JUNK = [
    '000 "unterminated',
    '000 "c"[',
    '000 "c"[1',
    '#',
    '#x: "c":500 STATE_V2_ESTABLISHED_IKE_SA (established IKE SA);',
    '#12: "c":abc STATE (text)',
    '#12: "c" ',
    '#13: "c"junk',
    '"',
    '"": ',
    'interface',
    'interface eth0 UDP',
    'interface eth0 UDP notanaddress',
    'Total IPsec connections: nothing',
    'IKE SAs: total(x)',
    '006 #99: "c", type=ESP, inBytes=notanumber',
    '000 #4: pending CHILD SA for',
    '\x00\x01\x02 binary',
    '000 "c":     oriented; my_ip=unset',  # detail before its header
]


def test_unknown_and_broken_lines_are_ignored():
    text, _ = render(SCENARIO, "4.10")
    lines = text.splitlines()
    mixed = "\n".join(lines[:20] + JUNK + lines[20:] + JUNK) + "\n"
    parsed = ipsec_status.parse_status(mixed)
    clean = ipsec_status.parse_status(text)
    assert sa_view(parsed)["n2n"] == sa_view(clean)["n2n"]
    assert parsed["summary"] == clean["summary"]
    assert parsed["lines"]["ignored"] > clean["lines"]["ignored"]


@pytest.mark.parametrize("text,message", [
    ("", "the status text is empty"),
    ("  \n\n ", "the status text is empty"),
    ("hello\nworld\n", "no Libreswan status line found in 2 lines (first: 'hello')"),
    ("000 Bare Shunt list:\n000\n", "no Libreswan status line found"),
    (None, "status text must be a string, got NoneType"),
    (42, "status text must be a string, got int"),
])
def test_empty_or_garbage_input_is_a_clear_error(text, message):
    with pytest.raises(SaltInvocationError, match="^ipsec status: ") as error:
        ipsec_status.parse_status(text)
    assert message in str(error.value)


def test_traffic_must_be_text():
    with pytest.raises(SaltInvocationError, match="trafficstatus text must be a string"):
        ipsec_status.parse_status(render(SCENARIO)[0], traffic=["#1"])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(max_size=120), max_size=40))
def test_arbitrary_lines_never_crash(lines):
    text = "\n".join(lines)
    try:
        parsed = ipsec_status.parse_status(text)
    except SaltInvocationError:
        return
    assert set(parsed["summary"]) == {"connections", "ike_sas", "ipsec_sas"}


LINES_4 = render(SCENARIO, "4.10")[0].splitlines()


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(LINES_4) - 1), st.integers(0, 200)), max_size=30))
def test_truncated_real_looking_lines_never_crash(cuts):
    lines = list(LINES_4)
    for index, length in cuts:
        lines[index] = lines[index][:length]
    parsed = ipsec_status.parse_status("\n".join(lines))
    for conn in parsed["connections"].values():
        for sa in conn["ike_sas"] + conn["child_sas"]:
            assert isinstance(sa["serial"], int) and isinstance(sa["established"], bool)
