"""Parse and verify of REAL Libreswan 5.3.2 pluto output, captured once.

Captured from 5.3.2 plutos (the vendored source built by
tools/build-libreswan.sh) by the suite's own runs with LABKIT_CAPTURE=1
(labkit/capture.py):

- ``libreswan-5.3.2-ike-<node>-*.txt``: test/integration/test_status_pluto.py
  (all up), the formula's rendered files for controller-0 (VIP holder) and
  compute-0 in two network namespaces on this machine, whose kernel has no
  ESP: IKE SAs established (both ends initiated, so controller-0 still
  shows its own half-open ones), Child SAs never installed.
- ``libreswan-5.3.2-vm-esp-{a,b}-*.txt``: test/vm/test_vm_esp.py in the VM
  (Debian's kernel, ESP): one PSK tunnel with its Child SA; status before
  the ping, trafficstatus after it.
"""

import pytest

import ipsec_verify
from labkit import capture

N2N_API = capture.N2N_API


@pytest.fixture(scope="module")
def ike():
    return capture.parsed("5.3.2", "ike")


@pytest.fixture(scope="module")
def vm_capture():
    return capture.parsed("5.3.2", "vm-esp", ("a", "b"))


def test_version_prefixes_and_summaries(ike, vm_capture):
    for parsed in list(ike.values()) + list(vm_capture.values()):
        assert (parsed["version"], parsed["pluto_version"]) == ("5", "5.3")
        assert parsed["version_source"] == "pluto_version 5.3"
        conns = parsed["connections"].values()
        summary = parsed["summary"]
        assert summary["connections"]["loaded"] == len(parsed["connections"])  # instances count
        # 5.x adds "routed N" to the Total line.
        assert isinstance(summary["connections"]["routed"], int)
        assert summary["ike_sas"]["total"] == sum(len(c["ike_sas"]) for c in conns)
        assert summary["ike_sas"]["authenticated"] == sum(sa["established"] for c in conns for sa in c["ike_sas"])
        assert summary["ipsec_sas"]["total"] == sum(sa["established"] for c in conns for sa in c["child_sas"])
        assert parsed["lines"]["ignored"] < 80  # config and algorithm listings only
    assert ike["controller-0"]["summary"]["ike_sas"] == {
        "total": 6, "half_open": 2, "open": 0, "authenticated": 4, "anonymous": 0}
    assert ike["compute-0"]["summary"]["ipsec_sas"]["total"] == 0  # no ESP on that kernel


def test_ike_sas_established_child_sas_not(ike):
    for node, parsed in ike.items():
        n2n = [n for n, c in capture.node_plan(node, 5)["connections"].items() if c["role"] == "node-to-node"]
        assert n2n
        for name in n2n:
            conn = parsed["connections"][name]
            assert conn["oriented"] is True
            assert any(sa["established"] and sa["state"] == "ESTABLISHED_IKE_SA" for sa in conn["ike_sas"]), conn
            assert not any(sa["established"] for sa in conn["child_sas"]), conn
    # controller-0 initiated too: its own IKE SA stays half-open next to
    # the one compute-0 established ("IKE_SA_INIT_I", 4.10's STATE_V2_PARENT_I1).
    api = ike["controller-0"]["connections"][N2N_API]["ike_sas"]
    assert [(sa["established"], sa["state"]) for sa in api] == [(False, "IKE_SA_INIT_I"),
                                                                (True, "ESTABLISHED_IKE_SA")]
    assert api[0]["text"] == "sent IKE_SA_INIT request"


def test_vip_server_instances_meet_the_client(ike):
    holder = ike["controller-0"]
    for vip in ("internal_api", "redis"):
        instance = holder["connections"]["overcloud-{}-vip-tunnel[1]".format(vip)]
        assert instance["remote"] == "198.51.100.20" and instance["base"] == "overcloud-{}-vip-tunnel".format(vip)
        assert any(sa["established"] and sa["peer"] == "198.51.100.20" for sa in instance["ike_sas"])
    assert holder["connections"]["overcloud-internal_api-node-to-vip-tunnel"]["oriented"] is False
    assert {"198.51.100.100", "198.51.100.101", "203.0.113.100"} <= set(holder["addresses"])


@pytest.mark.parametrize("node,expect_up", [("controller-0", 5), ("compute-0", 4)])
def test_verify_ike_level_passes_child_level_names_the_missing_child_sas(ike, node, expect_up):
    result = ipsec_verify.verify(capture.node_plan(node, 5), ike[node], "ike")
    assert result["result"] is True, result["comment"]
    assert result["counts"]["expect_up"] == expect_up
    child = ipsec_verify.verify(capture.node_plan(node, 5), ike[node], "child")
    assert child["result"] is False
    assert child["failed"] and all("no established Child SA" in r for r in child["failed"].values()), child["failed"]


def test_esp_child_sa_pairs_spis_and_counts_bytes_both_ways(vm_capture):
    [a_child] = vm_capture["a"]["connections"]["vm-esp"]["child_sas"]
    [b_child] = vm_capture["b"]["connections"]["vm-esp"]["child_sas"]
    for child in (a_child, b_child):
        assert child["established"] and child["state"] == "ESTABLISHED_CHILD_SA" and child["protocol"] == "esp"
        assert child["ike_sa"] == 1 and child["bytes_exact"]
    assert (a_child["spi_in"], a_child["spi_out"]) == (b_child["spi_out"], b_child["spi_in"])
    # The trafficstatus was taken after the ping: bytes both ways.
    assert a_child["out_bytes"] == b_child["in_bytes"] > 0
    assert a_child["in_bytes"] == b_child["out_bytes"] > 0
    assert (a_child["traffic_id"], b_child["traffic_id"]) == ("198.51.100.2", "198.51.100.1")
    assert vm_capture["a"]["connections"]["vm-esp"]["routing"] == "routed-tunnel"
