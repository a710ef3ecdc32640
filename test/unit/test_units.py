"""_states/ipsec_units.py: the services the formula enables, and gives back.

systemd is faked here (a dict of unit -> enabled/running); the real thing
runs in the systemd VM (test/vm/test_systemd_node.py): enable, reboot,
clean, reboot.
"""

import itertools
import json
import os

import pytest

from labkit import loader


class FakeSystemd:
    def __init__(self, enabled=(), running=()):
        self.enabled = set(enabled)
        self.running = set(running)
        self.calls = []

    def functions(self):
        def call(name, action):
            def run(unit):
                self.calls.append((name, unit))
                action(unit)
                return True
            return run
        return {
            "service.enabled": lambda unit: unit in self.enabled,
            "service.status": lambda unit: unit in self.running,
            "service.enable": call("enable", self.enabled.add),
            "service.disable": call("disable", self.enabled.discard),
            "service.stop": call("stop", self.running.discard),
        }


def units(systemd, test=False):
    return loader.load_file("_states", "ipsec_units", __salt__=systemd.functions(),
                            __utils__=loader.utils_functions(), __opts__={"test": test})


def record(config_dir):
    path = os.path.join(config_dir, ".ipsec-formula-units.json")
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)["enabled"]


def test_enabling_a_disabled_service_records_it_and_test_mode_predicts_exactly_that(tmp_path):
    systemd = FakeSystemd()
    predicted = units(systemd, test=True).enabled("ipsec", str(tmp_path))
    assert predicted["result"] is None and systemd.calls == [] and record(str(tmp_path)) is None
    done = units(systemd).enabled("ipsec", str(tmp_path))
    assert done["result"] is True and done["changes"] == predicted["changes"]
    assert systemd.enabled == {"ipsec"} and record(str(tmp_path)) == ["ipsec"]
    again = units(systemd).enabled("ipsec", str(tmp_path))
    assert again["result"] is True and again["changes"] == {} and systemd.calls == [("enable", "ipsec")]


def test_a_service_enabled_before_the_formula_is_never_recorded_nor_disabled(tmp_path):
    systemd = FakeSystemd(enabled={"ipsec"}, running={"ipsec"})
    assert units(systemd).enabled("ipsec", str(tmp_path))["changes"] == {}
    assert record(str(tmp_path)) is None
    ret = units(systemd).restored("units", str(tmp_path), stop=["ipsec"])
    assert ret["result"] is True and ret["changes"] == {}
    assert systemd.enabled == {"ipsec"} and systemd.running == {"ipsec"} and systemd.calls == []


@pytest.mark.parametrize("before", [set(s) for n in range(3) for s in itertools.combinations(
    ["ipsec", "nftables"], n)])
def test_restored_gives_back_exactly_what_enabled_changed(tmp_path, before):
    """For every starting set of enabled services: enable both, restore,
    and the enabled set is the starting one again; only pluto is stopped,
    and only when the formula had enabled it."""
    systemd = FakeSystemd(enabled=before, running={"ipsec", "nftables"})
    for unit in ("ipsec", "nftables"):
        assert units(systemd).enabled(unit, str(tmp_path))["result"] is True
    assert systemd.enabled == {"ipsec", "nftables"}
    assert record(str(tmp_path)) == (sorted({"ipsec", "nftables"} - before) or None)
    predicted = units(systemd, test=True).restored("units", str(tmp_path), stop=["ipsec"])
    calls = list(systemd.calls)
    ret = units(systemd).restored("units", str(tmp_path), stop=["ipsec"])
    assert ret["result"] is True and ret["changes"] == predicted["changes"]
    assert systemd.calls[:len(calls)] == calls  # test=True changed nothing
    assert systemd.enabled == before
    assert ("nftables" in systemd.running) and (("ipsec" in systemd.running) == ("ipsec" in before))
    assert record(str(tmp_path)) is None
    assert units(systemd).restored("units", str(tmp_path), stop=["ipsec"])["changes"] == {}


def test_a_failed_enable_fails_the_state_and_records_nothing(tmp_path):
    systemd = FakeSystemd()
    functions = systemd.functions()
    functions["service.enable"] = lambda unit: False
    module = loader.load_file("_states", "ipsec_units", __salt__=functions,
                              __utils__=loader.utils_functions(), __opts__={"test": False})
    ret = module.enabled("ipsec", str(tmp_path))
    assert ret["result"] is False and "did not enable ipsec" in ret["comment"] and ret["changes"] == {}
    assert record(str(tmp_path)) is None
