"""A node booted by systemd: apply, reboot, the tunnels back, clean, reboot.

labkit.sysnode runs it once (three boots of one VM whose PID 1 is
systemd, controller-0 of the example being the VM itself; 30 to 35
minutes alone under emulation, started in the background when the
session is collected); the tests read what each boot recorded. Nothing is
skipped: the VM harness installs what it lacks.
"""

import json
import os
import shutil

import pytest

from labkit import sysnode

TABLE = "table inet ipsec_formula"


@pytest.fixture(scope="module")
def phases(systemd_node_run):
    """What the three boots recorded (the VM started in the background when
    the session was collected: test/conftest.py)."""
    process, job = systemd_node_run
    summary, facts, params = sysnode.collect(process, job)
    why = "job: {}\n{}\n--- phase.log\n{}".format(
        job, summary.get("describe") or summary, _read(os.path.join(job, "phase.log"))[-6000:])
    for phase in sysnode.PHASES:
        assert phase in facts, "no facts from the {} phase\n{}".format(phase, why)
        assert "error" not in facts[phase], "{}: {}\n{}".format(phase, facts[phase]["error"], why)
    assert summary["returncode"] == 0 and not summary["timed_out"], why
    yield dict(facts, params=params)
    shutil.rmtree(job, ignore_errors=True)  # kept when the run itself failed


def _read(path):
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except FileNotFoundError:
        return ""


def _changed(summary):
    return {state_id for state_id, entry in summary.items() if entry["changes"]}


def test_apply_goes_through_the_real_service_and_test_mode_predicted_it(phases):
    apply = phases["apply"]
    assert phases["params"]["peers_rendered"] == {peer: 0 for peer in sysnode.PEERS}
    mine = apply["applied"]
    failed = {k: v for k, v in mine.items() if v["result"] is not True}
    assert apply["apply_rc"] == 0 and mine and not failed, json.dumps(failed or mine, indent=1)[:4000]
    # The production path: the service enabled and started by systemd, the
    # firewall persisted and its service enabled.
    assert {"ipsec-service-enabled", "ipsec-service-running", "ipsec-firewall-managed",
            "ipsec-firewall-persist-service-enabled"} <= _changed(mine), sorted(_changed(mine))
    assert apply["before"]["ipsec"]["enabled"] == "disabled" and apply["before"]["nftables"]["enabled"] == "disabled"
    assert apply["after"]["ipsec"] == {"enabled": "enabled", "active": "active"}
    assert apply["after"]["nftables"]["enabled"] == "enabled"
    # test=True named exactly the states the real run changed.
    predicted = {k for k, v in apply["predicted"].items() if v["result"] is None or v["changes"]}
    assert predicted == _changed(mine)
    assert apply["child"]["verdict"]["result"] is True, apply["child"]


def test_after_a_reboot_systemd_brings_back_pluto_the_rules_and_every_tunnel(phases):
    boot = phases["rebooted"]
    assert boot["boot"]["ipsec"] == {"enabled": "enabled", "active": "active"}, boot["ipsec_unit"]
    assert "FragmentPath=/lib/systemd/system/ipsec.service" in boot["ipsec_unit"]
    assert boot["boot"]["nftables"]["enabled"] == "enabled"
    assert TABLE in boot["nft"], boot["nft"]
    # The same rules as the apply left, loaded by nftables.service alone.
    formula_table = _table(phases["apply"]["nft"])
    assert formula_table and _table(boot["nft"]) == formula_table
    child, traffic = boot["child"]["verdict"], boot["traffic"]["verdict"]
    assert child["result"] is True, json.dumps(child, indent=1)
    assert traffic["result"] is True, json.dumps(traffic, indent=1)


def test_after_the_reboot_every_planned_tunnel_carries_esp_both_ways(phases):
    """Every conn the plan has on this node (the VIP holder: not its own VIP
    client conns), and on a VIP server conn every client's instance, has an
    IPsec SA that counted bytes in and out. (A pair pluto replaced may sit
    beside it with nothing counted: ipsec.verify reports it as stale.)"""
    boot = phases["rebooted"]
    planned = {name for name, conn in boot["plan"]["connections"].items() if conn["role"] != "vip-client"}
    assert planned
    carried = _carried(boot["traffic_after"])
    for name in planned:
        assert carried.get(name), (name, boot["traffic_after"])
        assert all(carried[name].values()), (name, carried[name], boot["traffic_after"])
    servers = [n for n, c in boot["plan"]["connections"].items() if c["role"] == "vip-server"]
    assert servers and all(len(carried[name]) >= 1 for name in servers)


def test_clean_then_reboot_leaves_nothing_of_the_formula(phases):
    rebooted, cleaned = phases["rebooted"], phases["cleaned"]
    assert rebooted["clean_rc"] == 0, json.dumps(rebooted["cleaned"], indent=1)[:4000]
    assert {k for k, v in rebooted["clean_predicted"].items() if v["result"] is None} == _changed(rebooted["cleaned"])
    assert "ipsec-clean-units-restored" in _changed(rebooted["cleaned"])
    before = phases["apply"]["before"]
    boot = cleaned["boot"]
    # Units exactly as before the formula: disabled again, pluto not started.
    assert boot["ipsec"] == before["ipsec"] and boot["nftables"]["enabled"] == before["nftables"]["enabled"]
    assert boot["wants"] == before["wants"]
    assert not cleaned["pluto_running"]
    assert TABLE not in cleaned["nft"], cleaned["nft"]
    assert cleaned["digests"] == phases["params"]["originals"]
    assert not [name for name in cleaned["config_dir"] if "ipsec-formula" in name or name.startswith("ipsec-")]


def _table(ruleset):
    """The formula's table as ``nft list ruleset`` prints it."""
    lines, inside = [], False
    for line in ruleset.splitlines():
        if line.startswith(TABLE):
            inside = True
        if inside:
            lines.append(line)
            if line == "}":
                break
    return "\n".join(lines)


def _carried(text):
    """{conn: {instance: whether one of its IPsec SAs counted bytes both
    ways}} from ``whack --trafficstatus`` (instance: "" or "[n]")."""
    import ipsec_status
    out = {}
    for sa in ipsec_status.parse_traffic(text):
        name, _, instance = sa["name"].partition("[")
        both = bool(sa.get("in_bytes")) and bool(sa.get("out_bytes"))
        entry = out.setdefault(name, {})
        entry[instance] = entry.get(instance, False) or both
    return out
