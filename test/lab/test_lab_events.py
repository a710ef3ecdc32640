"""Tunnel events through the real master's event bus (labkit.eventlab): the
``ipsec`` beacon on every minion of the 3-node lab, switched on by
``state.apply ipsec.beacon`` from pillar, the shipped reactor on the master,
the metrics textfile written by the beacon.

In order (one lab, ~4 min):
- a steady mesh fires no beacon event over several intervals;
- compute-0's pluto stopped: every peer fires ``tunnel down`` for exactly
  its tunnels with compute-0 within interval x debounce + a few seconds,
  compute-0 fires ``pluto down``; started again: ``tunnel up`` for the
  same tunnels and ``pluto up``;
- a conn deleted from compute-0's pluto: ``tunnel down``, the reactor's
  ``ipsec_events.heal`` re-applies ``ipsec`` there, ``tunnel up``, in that
  order on the bus, and verify passes again;
- the VIP leaves controller-0 with no agent stop there (pluto still
  listens on it): controller-0 fires ``tunnel down`` for its client conn
  toward the VIP with verify's stale-VIP reason; released, ``tunnel up``;
- each node's metrics file parses with prometheus_client and says what
  ``ipsec.status`` says.
"""

import json
import os
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

import ipsec_verify
from labkit.eventlab import EventLab
from test_lab import VIP, VIP_CLIENT, agent, move_vip, tunnels_to

INTERVAL, DEBOUNCE = 2, 2
SLACK = 8  # s: a beacon interval in progress, salt's event delivery, pluto's delete notification
BEACON = {"interval": INTERVAL, "debounce": DEBOUNCE, "level": "ike"}
REACTOR = {"threshold": 0, "min_interval": 20}
RECOVER = 120  # s: a peer's pluto backs off retransmits up to ~1 min


@pytest.fixture(scope="module")
def lab():
    with EventLab(BEACON, REACTOR) as built:
        built.plans = built.deploy()
        assert built.wait(lambda: verify_ok(built), timeout=90, interval=2), verify(built)
        applied = built.enable_beacon()
        for node_id, states in applied.items():
            assert all(r["result"] for r in states.values()), (node_id, states)
        rc, beacons = built.salt("*", "beacons.list", "return_yaml=False")
        assert rc == 0 and all("ipsec" in b for b in beacons.values()), beacons
        yield built


def verify(lab, target="*"):
    return lab.salt(target, "ipsec.verify", "level=ike", tgt_type="list" if "," in target else None)


def verify_ok(lab):
    rc, data = verify(lab)
    return rc == 0 and set(data or {}) == set(lab.nodes)


def collect(lab, mark, want, timeout):
    """Beacon events since mark until want(events) holds; the events."""
    lab.wait(lambda: want(lab.trail.beacon_events(mark)), timeout=timeout, interval=0.5)
    return lab.trail.beacon_events(mark)


def by_node(events, tail, peer=None):
    out = {}
    for _, node, kind, data in events:
        if kind == tail and (peer is None or data.get("peer") == peer):
            out.setdefault(node, set()).add(data["conn"])
    return out


def test_steady_mesh_fires_no_event(lab):
    mark = lab.trail.mark()
    time.sleep(8 * INTERVAL)
    assert lab.trail.beacon_events(mark) == []
    # The beacon did run: it wrote each node's metrics file (nothing else
    # has: the ipsec.metrics state is applied later), all tunnels up.
    for node_id in lab.nodes:
        with open(lab.prom_file(node_id)) as handle:
            text = handle.read()
        ups = [s.value for f in text_string_to_metric_families(text) if f.name == "ipsec_tunnel_up" for s in f.samples]
        assert ups and all(v == 1 for v in ups), (node_id, text)


def test_stopped_pluto_fires_tunnel_down_then_up(lab):
    down = "compute-0"
    peers = sorted(set(lab.nodes) - {down})
    expected = {node_id: tunnels_to(lab, node_id, down) for node_id in peers}
    assert all(expected.values()), expected
    mark = lab.trail.mark()
    stopped = time.monotonic()
    lab.nodes[down].pluto.stop()
    try:
        def all_down(events):
            return by_node(events, "tunnel/down", peer=down) == expected and \
                any(kind == "pluto/down" and node == down for _, node, kind, _ in events)

        events = collect(lab, mark, all_down, INTERVAL * DEBOUNCE + SLACK + 20)
        assert by_node(events, "tunnel/down", peer=down) == expected, json.dumps(
            [e[1:] for e in events], indent=1)[:6000]
        late = [(t - stopped, node, data["conn"]) for t, node, kind, data in events
                if kind == "tunnel/down" and node in peers]
        assert max(t for t, _, _ in late) <= INTERVAL * DEBOUNCE + SLACK, sorted(late)
        for _, node, kind, data in events:
            if kind == "tunnel/down" and node in peers:
                assert data["level"] == "ike" and data["peer"] == down and data["reason"], data
                assert data["peer_address"] in lab.nodes[down].addresses.values(), data
                assert data["network"] == lab.plans[node]["connections"][data["conn"]]["network"], data
                assert data["down_for"] >= 0 and data["id"] == node, data
        (pluto_down,) = [d for _, node, kind, d in events if kind == "pluto/down" and node == down]
        assert "pluto" in pluto_down["reason"], pluto_down
        # No tunnel event from the stopped node itself: one summary instead.
        assert [k for _, node, k, _ in events if node == down and k.startswith("tunnel/")] == []
    finally:
        up_mark = lab.trail.mark()
        lab.nodes[down].pluto.start()

    def all_up(events):
        return by_node(events, "tunnel/up", peer=down) == expected and \
            any(kind == "pluto/up" and node == down for _, node, kind, _ in events)

    events = collect(lab, up_mark, all_up, RECOVER)
    assert all_up(events), json.dumps([e[1:] for e in events], indent=1)[:6000]
    assert lab.wait(lambda: verify_ok(lab), timeout=RECOVER, interval=2), verify(lab)


def test_reactor_brings_back_a_deleted_conn(lab):
    node_id = "compute-0"
    conn = sorted(name for name, c in lab.plans[node_id]["connections"].items()
                  if c["role"] == "node-to-node" and c["peer"] == "controller-1")[0]
    assert lab.wait(lambda: verify_ok(lab), timeout=RECOVER, interval=2), verify(lab)
    # Heals of the previous test are behind us: start the guard afresh.
    lab.salt("*", "data.pop", "ipsec_events.last_heal")
    mark = lab.trail.mark()
    pluto = lab.nodes[node_id].pluto
    assert conn in pluto.connection_names()
    deleted = pluto.whack("--delete", "--name", conn)
    assert deleted.returncode == 0, deleted.stderr
    assert conn not in pluto.connection_names()

    def trail():
        out = []
        for when, tag, data in lab.trail.since(mark):
            if tag == "salt/beacon/{}/ipsec/tunnel/down".format(node_id) and data.get("conn") == conn:
                out.append((when, "down", data))
            elif tag.startswith("ipsec/heal/") and data.get("data", data).get("node") == node_id:
                out.append((when, tag, data.get("data", data)))
            elif tag == "salt/beacon/{}/ipsec/tunnel/up".format(node_id) and data.get("conn") == conn:
                out.append((when, "up", data))
        return out

    lab.wait(lambda: any(kind == "up" for _, kind, _ in trail()), timeout=RECOVER, interval=1)
    seen = trail()
    kinds = [kind for _, kind, _ in seen]
    assert "down" in kinds and "ipsec/heal/applied" in kinds and "up" in kinds, json.dumps(
        [(k, d) for _, k, d in seen], indent=1, default=str)[:6000]
    first_down, first_heal = kinds.index("down"), kinds.index("ipsec/heal/applied")
    last_up = len(kinds) - 1 - kinds[::-1].index("up")
    assert first_down < first_heal < last_up, kinds
    heal = seen[first_heal][2]
    assert heal["conn"] == conn and conn in heal["failed_before"], heal
    # The guard: no second re-apply on this minion within min_interval.
    applied = [when for when, kind, _ in seen if kind == "ipsec/heal/applied"]
    assert all(b - a >= REACTOR["min_interval"] - 1 for a, b in zip(applied, applied[1:])), applied
    assert conn in pluto.connection_names()
    assert lab.wait(lambda: verify_ok(lab), timeout=RECOVER, interval=2), verify(lab)


def test_a_vip_left_without_the_agent_stop_is_a_client_tunnel_down_until_released(lab):
    """A VIP that leaves its holder while no agent stop runs there (the
    stale VIP of docs/pacemaker.md): pluto there still listens on it and
    cannot orient the node's client conn toward the VIP's new holder. The
    old holder's beacon reports that client tunnel down, with the reason
    verify gives; once pluto lets go (``release_stale_vips``, what the
    formula's state does on a pacemaker-managed cluster node) and the
    client conn is up, ``tunnel up``."""
    old, new = "controller-0", "controller-1"
    assert lab.wait(lambda: verify_ok(lab), timeout=RECOVER, interval=2), verify(lab)
    mark = lab.trail.mark()
    lab.nodes[old].del_vip(VIP)
    lab.nodes[new].add_vip(VIP)
    rc, err = agent(lab, new, "start")
    assert rc == 0, err
    lab.vip_holder = new
    try:
        def client_events(events, tail):
            return [data for _, node, kind, data in events if node == old and kind == tail
                    and data.get("conn") == VIP_CLIENT]

        events = collect(lab, mark, lambda events: client_events(events, "tunnel/down"),
                         INTERVAL * DEBOUNCE + SLACK + 20)
        (down,) = client_events(events, "tunnel/down")
        assert down["reason"] == ipsec_verify.STALE_VIP.format(VIP), down
        assert down["role"] == "vip-client" and down["peer_address"] == VIP, down
        rc, data = verify(lab, old)
        assert rc != 0 and data[old]["failed"][VIP_CLIENT] == ipsec_verify.STALE_VIP.format(VIP), data
        assert data[old]["vips"][VIP]["stale"] is True, data[old]["vips"]

        up_mark = lab.trail.mark()
        rc, released = lab.salt(old, "ipsec_pacemaker.release_stale_vips")
        assert rc == 0 and released[old]["released"] == {"internal_api": VIP}, released
        assert released[old]["initiated"] == [VIP_CLIENT], released
        events = collect(lab, up_mark, lambda events: client_events(events, "tunnel/up"), RECOVER)
        assert client_events(events, "tunnel/up"), json.dumps([e[1:] for e in events], indent=1)[:6000]
        rc, data = verify(lab, old)
        assert data[old]["connections"][VIP_CLIENT]["ok"] is True, data[old]["connections"][VIP_CLIENT]
    finally:
        # Back the way pacemaker moves it (the agent's stop on the holder).
        move_vip(lab, new, old)
    assert lab.wait(lambda: verify_ok(lab), timeout=RECOVER, interval=2), verify(lab)


def test_metrics_file_parses_and_matches_status(lab):
    assert lab.wait(lambda: verify_ok(lab), timeout=RECOVER, interval=2), verify(lab)
    time.sleep(2 * INTERVAL)  # one more beacon write after the mesh settled
    rc, statuses = lab.salt("*", "ipsec.status")
    assert rc == 0 and set(statuses) == set(lab.nodes)
    for node_id, status in statuses.items():
        with open(lab.prom_file(node_id)) as handle:
            text = handle.read()
        families = {f.name: f for f in text_string_to_metric_families(text)}
        ike = {(s.labels["conn"], s.labels["peer"]): s.value
               for s in families["ipsec_tunnel_ike_sa_established"].samples}
        up = {(s.labels["conn"], s.labels["peer"]): s.value for s in families["ipsec_tunnel_up"].samples}
        assert ike and set(ike) == set(up) and all(v == 1 for v in up.values()), (node_id, text)
        plan = lab.plans[node_id]
        for (conn, peer), value in ike.items():
            live = [c for c in status["connections"].values() if c["base"] == conn]
            if plan["connections"][conn]["role"] == "vip-server":
                address = plan["networks"][plan["connections"][conn]["network"]]["peers"][peer]
                live = [c for c in live if c.get("remote") == address]
            established = any(sa["established"] for c in live for sa in c["ike_sas"])
            assert value == float(established), (node_id, conn, peer)
        node = {s.name: s.value for f in families.values() for s in f.samples if "node" in s.labels}
        assert node["ipsec_pluto_up"] == 1
        assert node["ipsec_connections_loaded"] == status["summary"]["connections"]["loaded"], node_id
        assert node["ipsec_ike_sas"] == status["summary"]["ike_sas"]["total"], node_id
        assert node["ipsec_tunnels_up"] == node["ipsec_tunnels_expected"] == len(up)
        # Written atomically: no temp file left next to it.
        assert sorted(os.listdir(lab.prom_dir(node_id))) == ["ipsec.prom"]


def test_metrics_state_predicts_and_writes(lab):
    """The ipsec_events.metrics state on a path the beacon does not write:
    test=True predicts exactly what the run then does."""
    node_id = "controller-1"
    path = os.path.join(lab.prom_dir(node_id), "state", "ipsec.prom")

    def apply(*extra):
        rc, data = lab.salt(node_id, "state.single", "ipsec_events.metrics", "name=" + path, "level=ike", *extra)
        (result,) = data[node_id].values()
        return rc, result

    rc, predicted = apply("test=True")
    assert predicted["result"] is None and predicted["changes"] and not os.path.exists(path), predicted
    rc, done = apply()
    assert rc == 0 and done["result"] is True and done["changes"] == predicted["changes"], done
    with open(path) as handle:
        families = {f.name: f for f in text_string_to_metric_families(handle.read())}
    assert families["ipsec_tunnel_up"].samples and families["ipsec_pluto_up"].samples[0].value == 1
    # A steady mesh without ESP (no byte counters): nothing more to write.
    rc, again = apply("test=True")
    assert again["result"] is True and again["changes"] == {}, again
    rc, again = apply()
    assert rc == 0 and again["changes"] == {}, again
