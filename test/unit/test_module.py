"""The execution module's Salt glue, with the dunders patched (pure logic:
the real loader runs in the functional tests)."""

import importlib.util
import os

import pytest
import yaml
from salt.exceptions import SaltInvocationError

import ipsec_plan
from labkit import examples, loader

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load_module(pillar, grains=None, mine=None, calls=None):
    calls = calls if calls is not None else []

    def mine_get(target, function, tgt_type="glob"):
        calls.append(("mine.get", target, function, tgt_type))
        return mine or {}

    def run_all(cmd, **kwargs):
        calls.append(("cmd.run_all", cmd))
        if cmd[-1] == "--version":
            return {"retcode": 0, "stdout": "Libreswan 4.10", "stderr": ""}
        return {"retcode": 0, "stdout": "ok", "stderr": ""}

    salt = {"mine.get": mine_get, "cmd.run_all": run_all, "match.grain": lambda expr: expr == "roles:controller"}
    context = {}
    utils = loader.utils_functions()
    module = loader.load_file("_modules", "ipsec", __pillar__={"ipsec": pillar}, __grains__=grains or {},
                              __opts__={"id": "controller-0"}, __context__=context, __salt__=salt,
                              __utils__=utils)
    salt["ipsec.lookup"] = module.lookup
    loader.with_pluto(salt, utils, context)
    return module


def test_lookup_defaults_live_in_one_place():
    """The SLS files read the lookup through ipsec.lookup: no YAML copy."""
    assert not os.path.exists(os.path.join(REPO, "ipsec", "defaults.yaml"))
    module = load_module({})
    assert module.lookup()["config_file"] == ipsec_plan.DEFAULT_LOOKUP["config_file"]


def test_lookup_merges_os_family_then_pillar():
    module = load_module({"lookup": {"ctlsocket": "/tmp/x.ctl", "pkg": {"manage": False}}}, grains={"os_family": "RedHat"})
    merged = module.lookup()
    assert merged["nss_dir"] == "/etc/ipsec.d"
    assert merged["ctlsocket"] == "/tmp/x.ctl"
    assert merged["pkg"] == {"name": "libreswan", "manage": False}


def test_mine_sourced_peers_through_the_module():
    pillar = examples.pillar(inventory=False, mine={"target": "role:overcloud", "tgt_type": "grain"})
    mine = {n: {k: v for k, v in a.items() if k != "ctlplane"} for n, a in examples.THREE_NODES.items()}
    calls = []
    module = load_module(pillar, grains={"ipv4": examples.own_ips("controller-0")}, mine=mine, calls=calls)
    module._check_algorithms = lambda conf, built: None
    plan = module.build()
    assert ("mine.get", "role:overcloud", "ipsec.addresses", "grain") in calls
    assert plan["peer_source"] == "mine"
    assert "overcloud-internal_api-198.51.100.10-198.51.100.20" in plan["connections"]
    assert plan["libreswan_major"] == 4


def test_inventory_means_no_mine_call():
    calls = []
    module = load_module(examples.pillar(), grains={"ipv4": examples.own_ips("controller-0")}, calls=calls)
    module._check_algorithms = lambda conf, built: None
    module.build()
    assert not [c for c in calls if c[0] == "mine.get"]


def test_cluster_membership_by_grain():
    pillar = examples.pillar(cluster={"grain": "roles:controller"})
    module = load_module(pillar, grains={"ipv4": examples.own_ips("controller-0")})
    module._check_algorithms = lambda conf, built: None
    assert module.build()["cluster_node"] is True
    pillar = examples.pillar(cluster={"grain": "roles:compute"})
    module = load_module(pillar, grains={"ipv4": examples.own_ips("controller-0")})
    module._check_algorithms = lambda conf, built: None
    assert module.build()["cluster_node"] is False


def test_pinned_libreswan_version():
    module = load_module(examples.pillar(libreswan_version="5.2"), grains={"ipv4": examples.own_ips("controller-0")})
    assert module.version() == {"version": "5.2", "major": 5, "source": "pillar"}
    module = load_module(examples.pillar(libreswan_version="2.6"))
    with pytest.raises(SaltInvocationError, match="ipsec:libreswan_version:"):
        module.version()


def test_missing_pillar_is_a_clear_error():
    module = load_module(None)
    module.__pillar__ = {}
    with pytest.raises(SaltInvocationError, match="ipsec: pillar key is missing"):
        module.plan()


def test_plan_warnings_are_logged_once_per_run_but_always_returned(caplog):
    pillar = examples.pillar(lookup={"algparse": "/nonexistent/algparse"})
    module = load_module(pillar, grains={"ipv4": examples.own_ips("controller-0")})
    with caplog.at_level("WARNING"):
        first, second = module.build(), module.build()
    expected = "algparse not found: not checked before pluto: ipsec:algorithm (default) esp=aes_gcm128-null"
    assert expected in first["warnings"] and expected in second["warnings"]
    assert [r.getMessage() for r in caplog.records].count("ipsec plan: " + expected) == 1


@pytest.mark.parametrize("cib_answers,expected", [(0, True), (107, False)])
def test_cluster_detection_asks_whether_pacemaker_runs(cib_answers, expected):
    """Not whether pacemakerd is installed: images ship it to every role."""
    calls = []
    module = load_module(examples.pillar(cluster={"detect": True}), calls=calls,
                         grains={"ipv4": examples.own_ips("controller-0")})
    run_all = module.__salt__["cmd.run_all"]

    def answer(cmd, **kwargs):
        if "cibadmin" in cmd[0]:
            calls.append(("cibadmin", cmd))
            return {"retcode": cib_answers, "stdout": "", "stderr": ""}
        return run_all(cmd, **kwargs)

    module.__salt__["cmd.run_all"] = answer
    built = module.build()
    assert built["cluster_node"] is expected
    assert built["pacemaker"]["manage"] is expected
    assert [c for c in calls if c[0] == "cibadmin"][0][1][1:] == ["--query", "--local", "--scope", "nodes"]



def test_a_minion_without_netaddr_is_told_what_to_install(monkeypatch):
    """Salt's onedir packages do not ship netaddr: say so, instead of a
    KeyError on ipsec_plan.build_plan later."""
    import sys

    monkeypatch.setitem(sys.modules, "netaddr", None)
    loaded, reason = loader.load_file("_modules", "ipsec").__virtual__()
    assert loaded is False and "salt-pip install netaddr" in reason
