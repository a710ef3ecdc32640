"""Pure logic of the tunnel events and metrics (_utils/ipsec_events.py):
the debounce, the beacon's validate(), the pillar gate, and the metrics
text judged by prometheus_client's own parser on the real ESP status
captured from pluto (test/unit/data, see test_status_real.py)."""

import pytest
from prometheus_client.parser import text_string_to_metric_families
from salt.exceptions import SaltInvocationError

import ipsec_events
import ipsec_status
import ipsec_verify
from labkit import capture as captures

LEVEL = "child"


def row(up, conn="c1", peer="compute-0"):
    return {"conn": conn, "network": "internal_api", "role": "node-to-node", "peer": peer,
            "peer_address": "198.51.100.20", "up": up, "ike_sa": up, "child_sa": up, "in_bytes": None,
            "out_bytes": None, "child_sa_started": None, "reason": None if up else "no IKE SA"}


def run(memory, states, start=0, debounce=3, **kw):
    """Feed one {key: up} per interval (None: pluto silent); events per interval."""
    out = []
    for index, state in enumerate(states):
        rows = None if state is None else {key: row(up, conn=key) for key, up in state.items()}
        out.append(ipsec_events.step(memory, rows, start + index * 10, debounce, LEVEL,
                                     pluto_error="pluto is not running", node="n1", **kw))
    return out


def tags(per_interval):
    return [[(e["tag"], e.get("conn")) for e in events] for events in per_interval]


# ------------------------------------------------------------ debounce

def test_steady_mesh_fires_nothing():
    memory = {}
    assert run(memory, [{"a": True, "b": True}] * 20) == [[]] * 20


def test_down_reported_after_debounce_intervals_once():
    memory = {}
    got = run(memory, [{"a": True}] + [{"a": False}] * 6)
    assert tags(got) == [[], [], [], [("tunnel/down", "a")], [], [], []]
    event = got[3][0]
    assert event["event"] == "tunnel down" and event["reason"] == "no IKE SA" and event["level"] == LEVEL
    assert event["peer"] == "compute-0" and event["peer_address"] == "198.51.100.20"
    # Down since the first interval it was seen down (t=10), reported at t=30.
    assert event["since"] == 10 and event["down_for"] == 20 and event["repeat"] is False


def test_flapping_shorter_than_debounce_is_not_reported():
    memory = {}
    pattern = [{"a": False}, {"a": False}, {"a": True}] * 5
    assert run(memory, pattern) == [[]] * 15


def test_up_after_down_and_counter_reset_by_a_blip():
    memory = {}
    got = run(memory, [{"a": False}] * 2 + [{"a": True}] + [{"a": False}] * 2 + [{"a": True}] * 3)
    assert tags(got) == [[]] * 8  # down twice, up, down twice: never held 3 intervals
    got = run(memory, [{"a": False}] * 3 + [{"a": True}] * 3, start=100)
    assert tags(got) == [[], [], [("tunnel/down", "a")], [], [], [("tunnel/up", "a")]]


def test_debounce_one_reports_at_once():
    got = run({}, [{"a": False}, {"a": True}], debounce=1)
    assert tags(got) == [[("tunnel/down", "a")], [("tunnel/up", "a")]]


def test_a_tunnel_reported_down_then_no_longer_planned_is_closed_with_gone():
    """Every ``tunnel down`` gets a closing event: ``tunnel up``, or
    ``tunnel gone`` when the tunnel stops being one that should be up here
    (its row disappears). Only what was reported down is closed."""
    memory = {}
    got = run(memory, [{"a": False, "b": True, "c": True}] * 3 + [{"c": False}, {}])
    assert tags(got) == [[], [], [("tunnel/down", "a")], [("tunnel/gone", "a")], []]
    (gone,) = got[3]
    assert gone["event"] == "tunnel gone" and gone["node"] == "n1" and gone["level"] == LEVEL
    assert (gone["role"], gone["peer"], gone["peer_address"], gone["network"]) == (
        "node-to-node", "compute-0", "198.51.100.20", "internal_api")
    assert gone["since"] == 0 and gone["down_for"] == 30 and gone["reason"]
    assert memory["tunnels"] == {}
    # Down, up again, then gone: nothing left to close.
    memory = {}
    got = run(memory, [{"a": False}] * 3 + [{"a": True}] * 3 + [{}])
    assert tags(got)[-1] == [] and ("tunnel/up", "a") in tags(got)[5]


def test_pluto_silent_gives_one_summary_and_keeps_tunnel_states():
    memory = {}
    got = run(memory, [{"a": True, "b": True}] + [None] * 4 + [{"a": True, "b": True}] * 4)
    assert tags(got) == [[], [], [], [("pluto/down", None)], [], [], [], [("pluto/up", None)], []]
    assert got[3][0]["reason"] == "pluto is not running" and got[3][0]["tunnels"] == 2


def test_remind_repeats_down_with_growing_down_for():
    memory = {}
    got = run(memory, [{"a": False}] * 10, debounce=2, remind=30)
    downs = [e for events in got for e in events]
    assert [(e["down_for"], e["repeat"]) for e in downs] == [(10, False), (40, True), (70, True)]


def test_unplanned_tunnel_forgotten_and_new_one_assumed_up():
    memory = {}
    run(memory, [{"a": False}] * 3)
    assert memory["tunnels"]["a"]["state"] == "down"
    # Its down is closed (tunnel gone); the new one fires nothing while up.
    assert tags(run(memory, [{"b": True}] * 3, start=100)) == [[("tunnel/gone", "a")], [], []]
    assert set(memory["tunnels"]) == {"b"}


def test_max_events_one_summary_for_the_rest():
    memory = {}
    many = {"t{:03d}".format(i): False for i in range(7)}
    got = run(memory, [many] * 3, max_events=5)
    last = got[2]
    assert [e["tag"] for e in last] == ["tunnel/down"] * 5 + ["tunnel/summary"]
    assert last[-1]["omitted"] == 2 and last[-1]["omitted_down"] == 2 and last[-1]["down_total"] == 7


# ------------------------------------------------------------ validate

@pytest.mark.parametrize("config", [
    [], [{"interval": 5}, {"debounce": 2}, {"level": "ike"}],
    [{"textfile": "/var/lib/prometheus/node-exporter/ipsec.prom"}, {"remind": 60}],
    {"level": "child", "enabled": True},
])
def test_validate_accepts(config):
    assert ipsec_events.check_beacon_config(config) == (True, "valid")


@pytest.mark.parametrize("config, words", [
    ([{"debounce": 0}], "debounce"),
    ([{"debounce": "3"}], "debounce"),
    ([{"level": "esp"}], "level"),
    ([{"levle": "ike"}], "levle"),
    ([{"textfile": "relative.prom"}], "textfile"),
    ([{"textfile": "/tmp/ipsec.txt"}], ".prom"),
    ([{"max_events": True}], "max_events"),
    ("level: ike", "list"),
    (["level"], "one-key"),
])
def test_validate_refuses_naming_the_key(config, words):
    ok, message = ipsec_events.check_beacon_config(config)
    assert ok is False and words in message and message.startswith("ipsec beacon:"), message


def test_validate_levels_follow_the_installed_verify():
    levels = ipsec_events.accepted_levels(ipsec_verify.verify)
    assert {"ike", "child"} <= set(levels)
    assert ("traffic" in levels) == ("traffic" in ipsec_verify.LEVELS)
    ok, message = ipsec_events.check_beacon_config([{"level": "traffic"}], ("ike", "child"))
    assert not ok and "traffic" in message


# ------------------------------------------------------------ pillar gate

def test_pillar_defaults_and_beacon_config():
    found = ipsec_events.pillar_settings({"beacon": {"enabled": True, "interval": 5},
                                          "metrics": {"enabled": True, "directory": "/srv/prom"}})
    assert found["beacon"]["interval"] == 5 and found["beacon"]["debounce"] == 3
    assert found["metrics"]["path"] == "/srv/prom/ipsec.prom"
    config = ipsec_events.beacon_config(found)
    assert {"textfile": "/srv/prom/ipsec.prom"} in config and {"interval": 5} in config
    assert ipsec_events.check_beacon_config(config) == (True, "valid")
    assert ipsec_events.pillar_settings({})["beacon"]["enabled"] is False


@pytest.mark.parametrize("conf, key", [
    ({"beacon": "yes"}, "ipsec:beacon:"),
    ({"beacon": {"enabled": "yes"}}, "ipsec:beacon:enabled"),
    ({"beacon": {"interval": 0}}, "ipsec:beacon:interval"),
    ({"beacon": {"level": "esp"}}, "ipsec:beacon:level"),
    ({"beacon": {"debounse": 2}}, "ipsec:beacon:debounse"),
    ({"metrics": {"directory": "var/lib"}}, "ipsec:metrics:directory"),
    ({"metrics": {"file": "ipsec.txt"}}, "ipsec:metrics:file"),
    ({"metrics": {"file": "../x.prom"}}, "ipsec:metrics:file"),
    ({"metrics": {"schedule": -1}}, "ipsec:metrics:schedule"),
])
def test_pillar_errors_name_the_key(conf, key):
    with pytest.raises(SaltInvocationError) as info:
        ipsec_events.pillar_settings(conf)
    assert str(info.value).startswith(key), str(info.value)


# ------------------------------------------------------------ tunnels + metrics

@pytest.mark.parametrize("node", ["controller-0", "compute-0"])
def test_metrics_of_real_esp_status_parse_and_match_the_status(node):
    built = captures.node_plan(node, 4)
    live = ipsec_status.parse_status(*captures.load("4.10", "esp", node))
    verdict = ipsec_verify.verify(built, live, LEVEL)
    rows = ipsec_events.tunnels(verdict, built, live)
    text = ipsec_events.metrics_text(rows, live["summary"], node, LEVEL)
    families = {family.name: family for family in text_string_to_metric_families(text)}
    samples = {(s.name, s.labels.get("conn"), s.labels.get("peer_address")): s.value
               for family in families.values() for s in family.samples}
    assert families["ipsec_tunnel_esp_in_bytes"].type == "counter"
    assert families["ipsec_tunnel_up"].type == "gauge"
    # Every tunnel that should be up has its rows, and they say what verify says.
    assert {(n, c) for (n, c, _) in samples if n == "ipsec_tunnel_up"} == {
        ("ipsec_tunnel_up", r["conn"]) for r in rows.values()}
    # One row per conn that should be up, a VIP server conn one per client
    # (none when its network has no other node: storage on controller-0).
    expected = set()
    for name, entry in verdict["connections"].items():
        if entry["expect"] == "up":
            expected |= {"{}/{}".format(name, a) for a in entry["clients"]} if "clients" in entry else {name}
    assert expected and set(rows) == expected
    for key, entry in rows.items():
        labels = (entry["conn"], entry["peer_address"])
        assert samples[("ipsec_tunnel_up",) + labels] == (1.0 if entry["up"] else 0.0)
        assert samples[("ipsec_tunnel_ike_sa_established",) + labels] == float(entry["ike_sa"])
        assert samples[("ipsec_tunnel_child_sa_established",) + labels] == float(entry["child_sa"])
    # Bytes: exactly the --trafficstatus numbers of the conn's Child SAs.
    n2n = [r for r in rows.values() if r["role"] == "node-to-node"]
    assert n2n
    for entry in n2n:
        conn = live["connections"][entry["conn"]]
        inb = sum(sa["in_bytes"] for sa in conn["child_sas"] if sa["established"] and sa["in_bytes"] is not None)
        outb = sum(sa["out_bytes"] for sa in conn["child_sas"] if sa["established"] and sa["out_bytes"] is not None)
        labels = (entry["conn"], entry["peer_address"])
        assert samples[("ipsec_tunnel_esp_in_bytes_total",) + labels] == inb
        assert samples[("ipsec_tunnel_esp_out_bytes_total",) + labels] == outb
        traffic = {t["serial"]: t["add_time"] for t in live["traffic"]}
        newest = max(traffic[sa["serial"]] for sa in conn["child_sas"] if sa["serial"] in traffic)
        assert samples[("ipsec_tunnel_child_sa_start_time_seconds",) + labels] == newest
    assert any(samples[("ipsec_tunnel_esp_in_bytes_total", r["conn"], r["peer_address"])] > 0 for r in n2n)
    node_samples = {s.name: s.value for f in families.values() for s in f.samples if "node" in s.labels}
    assert node_samples["ipsec_pluto_up"] == 1
    assert node_samples["ipsec_connections_loaded"] == live["summary"]["connections"]["loaded"]
    assert node_samples["ipsec_ike_sas"] == live["summary"]["ike_sas"]["total"]
    assert node_samples["ipsec_child_sas"] == live["summary"]["ipsec_sas"]["total"]
    assert node_samples["ipsec_tunnels_up"] == sum(1 for r in rows.values() if r["up"])
    # Sorted and deterministic: an unchanged node rewrites nothing.
    assert ipsec_events.metrics_text(rows, live["summary"], node, LEVEL) == text


def test_vip_server_rows_per_client_with_peer_minion_id():
    node = "controller-0"
    built = captures.node_plan(node, 4)
    live = ipsec_status.parse_status(*captures.load("4.10", "esp", node))
    rows = ipsec_events.tunnels(ipsec_verify.verify(built, live, LEVEL), built, live)
    server = {k: r for k, r in rows.items() if r["role"] == "vip-server"}
    assert server and all("/" in key for key in server)
    assert {r["peer"] for r in server.values()} == {"compute-0"}
    n2n = rows["overcloud-internal_api-198.51.100.10-198.51.100.20"]
    assert n2n["peer"] == "compute-0" and n2n["peer_address"] == "198.51.100.20"


def test_metrics_label_escaping_and_pluto_down():
    odd = dict(row(True, conn='we"ird\\name'), in_bytes=5)
    text = ipsec_events.metrics_text({"x": odd}, None, "n1", LEVEL)
    (sample,) = [s for f in text_string_to_metric_families(text) if f.name == "ipsec_tunnel_up" for s in f.samples]
    assert sample.labels["conn"] == 'we"ird\\name'
    down = ipsec_events.metrics_text(None, None, "n1", LEVEL, pluto_up=False)
    families = list(text_string_to_metric_families(down))
    assert [(f.name, f.samples[0].value) for f in families] == [("ipsec_pluto_up", 0)]


def test_a_stale_vip_is_a_client_tunnel_down_for_every_vip_the_holder_listens_on():
    """The beacon sees what verify sees: a VIP pluto still listens on after
    it left this node (no agent stop ran here) is this node's client tunnel
    toward that VIP, down, saying why; the VIP's server rows go, the other
    rows stay as they were. Each VIP the holder listens on, in turn."""
    node = "controller-0"
    built = captures.node_plan(node, 4)
    live = ipsec_status.parse_status(*captures.load("4.10", "esp", node))
    listening = list(live["addresses"])
    held = ipsec_verify.verify(built, live, LEVEL, local=listening)
    held_rows = ipsec_events.tunnels(held, built, live)
    assert held["result"] is True and held_rows and all(r["up"] for r in held_rows.values())
    vips = sorted(address for address, vip in held["vips"].items() if vip["held"])
    assert len(vips) >= 2, held["vips"]
    for vip in vips:
        local = [a for a in listening if ipsec_verify.stale_vips({"v": {"address": vip}}, [a], []) == {}]
        assert len(local) == len(listening) - 1, (vip, listening)
        verdict = ipsec_verify.verify(built, live, LEVEL, local=local)
        rows = ipsec_events.tunnels(verdict, built, live)
        (client,) = [n for n, c in built["connections"].items() if c["role"] == "vip-client" and c["peer"] == vip]
        servers = {n for n, c in built["connections"].items() if c["role"] == "vip-server" and c["peer"] == vip}
        assert verdict["connections"][client]["expect"] == "up"
        assert rows[client]["up"] is False, rows[client]
        assert rows[client]["reason"] == ipsec_verify.STALE_VIP.format(vip)
        assert rows[client]["role"] == "vip-client" and rows[client]["peer_address"] == vip
        assert not [k for k, r in rows.items() if r["conn"] in servers]
        assert {k: r for k, r in rows.items() if k != client} == {
            k: r for k, r in held_rows.items() if r["conn"] not in servers}
        memory = {}
        for index in range(3):
            events = ipsec_events.step(memory, rows, index * 10, 3, LEVEL, node=node)
        assert [(e["tag"], e["conn"], e["reason"]) for e in events] == [
            ("tunnel/down", client, ipsec_verify.STALE_VIP.format(vip))]
        # The VIP comes back: the client conn is no tunnel here any more.
        events = ipsec_events.step(memory, held_rows, 40, 3, LEVEL, node=node)
        assert [(e["tag"], e["conn"], e["peer_address"]) for e in events] == [("tunnel/gone", client, vip)]
        # A failed address read (none of the node's own addresses in it)
        # is no reason to call the held VIPs stale.
        assert ipsec_verify.verify(built, live, LEVEL, local=[vip])["result"] is True


@pytest.mark.parametrize("capture", [("4.10", "esp", LEVEL), ("5.3.2", "ike", "ike")])
@pytest.mark.parametrize("node", captures.NODES)
def test_every_failure_verify_reports_on_a_tunnel_that_should_be_up_is_a_down_row(capture, node):
    """The beacon must not miss what verify fails (a stale VIP once was
    such a failure): on real captures, each planned conn missing from
    pluto in turn, and on the holder each VIP gone stale in turn, every
    conn verify fails and expects up has a row that is down, saying why."""
    version, scene, level = capture
    built = captures.node_plan(node, int(version.split(".")[0]))
    live = ipsec_status.parse_status(*captures.load(version, scene, node))
    listening = list(live["addresses"])
    cases = [("as captured", live, listening)]
    for name in sorted(built["connections"]):
        dropped = dict(live, connections={k: c for k, c in live["connections"].items() if c["base"] != name})
        cases.append(("without " + name, dropped, listening))
    held = ipsec_verify.verify(built, live, level, local=listening)
    for vip in sorted(a for a, v in held["vips"].items() if v["held"]):
        cases.append(("stale " + vip, live, [a for a in listening if a != vip]))
    failing = 0
    for label, status, local in cases:
        verdict = ipsec_verify.verify(built, status, level, local=local)
        rows = ipsec_events.tunnels(verdict, built, status)
        down = {}
        for row in rows.values():
            if not row["up"]:
                down.setdefault(row["conn"], []).append(row["reason"])
        expected = {n: r for n, r in verdict["failed"].items() if verdict["connections"][n]["expect"] == "up"}
        assert set(expected) <= set(down), (label, expected, down)
        assert all(all(reason for reason in down[n]) for n in expected), (label, down)
        failing += bool(expected)
    # The sweep did fail what it should: each conn expected up, dropped,
    # and each stale VIP (the capture itself passes).
    up = [n for n, entry in held["connections"].items() if entry["expect"] == "up"]
    assert held["result"] is True and up
    assert failing == len(up) + sum(label.startswith("stale ") for label, _, _ in cases)
