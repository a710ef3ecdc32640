"""Parse and verify of REAL pluto output with ESP, captured once.

This machine's kernel has no ESP, so its plutos never show an installed
Child SA. The files in data/ were captured from real Libreswan 4.10 plutos
running the formula's rendered files for the example's controller-0 (VIP
holder) and compute-0, in two network namespaces inside the throwaway VM of
labkit.vm (Debian's kernel 6.1 with ESP), about a second after the Child SAs
came up and after UDP datagrams were sent from compute-0 through the
internal_api and tenant tunnels. They keep what a fresh simultaneous start
looks like: compute-0 has two IKE SAs and two Child SAs for the internal_api
tunnel (both ends initiated), one IKE SA still half-open, and a tenant Child
SA its peer has already replaced.
"""

import pytest

import ipsec_verify
from labkit import capture

N2N_API = capture.N2N_API


@pytest.fixture(scope="module")
def parsed():
    return capture.parsed("4.10", "esp")


def test_summaries_and_version(parsed):
    assert parsed["controller-0"]["version"] == "4" and parsed["controller-0"]["pluto_version"] == "4.10"
    assert parsed["controller-0"]["summary"] == {
        "connections": {"loaded": 10, "active": 4, "routed": None},
        "ike_sas": {"total": 4, "half_open": 0, "open": 0, "authenticated": 4, "anonymous": 0},
        "ipsec_sas": {"total": 4, "authenticated": 4, "anonymous": 0},
    }
    compute = parsed["compute-0"]["summary"]
    assert compute["ike_sas"] == {"total": 6, "half_open": 1, "open": 0, "authenticated": 5, "anonymous": 0}
    assert compute["ipsec_sas"]["total"] == 5
    for node in capture.NODES:
        conns = parsed[node]["connections"].values()
        assert sum(len(c["ike_sas"]) for c in conns) == parsed[node]["summary"]["ike_sas"]["total"]
        assert sum(sa["established"] for c in conns for sa in c["child_sas"]) == \
            parsed[node]["summary"]["ipsec_sas"]["total"]
        assert parsed[node]["lines"]["ignored"] < 80  # config and algorithm listings only


def test_both_ends_of_a_tunnel_pair_their_spis_and_bytes(parsed):
    [holder] = parsed["controller-0"]["connections"][N2N_API]["child_sas"]
    used = [sa for sa in parsed["compute-0"]["connections"][N2N_API]["child_sas"] if sa["newest"]]
    assert len(used) == 1
    compute = used[0]
    assert (holder["spi_in"], holder["spi_out"]) == (compute["spi_out"], compute["spi_in"])
    assert holder["in_bytes"] == compute["out_bytes"] > 0 and holder["out_bytes"] == compute["in_bytes"] > 0
    assert holder["bytes_exact"] and holder["protocol"] == "esp" and holder["ike_sa"] == 5


def test_vip_server_instances_meet_the_clients(parsed):
    holder = parsed["controller-0"]["connections"]
    instance = holder["overcloud-internal_api-vip-tunnel[1]"]
    assert instance["remote"] == "198.51.100.20" and instance["remote_id"] == "@overcloudinternal_apicluster"
    [server_child] = instance["child_sas"]
    [client_child] = parsed["compute-0"]["connections"]["overcloud-internal_api-node-to-vip-tunnel"]["child_sas"]
    assert server_child["spi_in"] == client_child["spi_out"] and server_child["spi_out"] == client_child["spi_in"]
    assert holder["overcloud-internal_api-node-to-vip-tunnel"]["oriented"] is False
    assert "198.51.100.100" in parsed["controller-0"]["addresses"]


def test_ipv6_child_sa_and_half_open_ike_sa(parsed):
    tenant = parsed["compute-0"]["connections"]["overcloud-tenant-2001:db8:0:1::10-2001:db8:0:1::20"]
    assert [sa["established"] for sa in tenant["ike_sas"]] == [True, False]
    assert tenant["ike_sas"][1]["text"] == "sent IKE_SA_INIT reply"
    [child] = tenant["child_sas"]
    assert child["spi_out"] == "b7fcad26" and child["out_bytes"] == 560


@pytest.mark.parametrize("node,expect_up", [("controller-0", 5), ("compute-0", 4)])
def test_verify_child_level_passes_with_esp(parsed, node, expect_up):
    for level in ("child", "ike"):
        result = ipsec_verify.verify(capture.node_plan(node, 4), parsed[node], level)
        assert result["result"] is True, result["comment"]
        assert result["counts"]["expect_up"] == expect_up
    connections = ipsec_verify.verify(capture.node_plan(node, 4), parsed[node], "child")["connections"]
    assert connections[N2N_API]["child_sa"] and connections[N2N_API]["in_bytes"] > 0
