"""ipsec.status / ipsec.verify / ipsec.established against real plutos.

Two formula nodes of the example cluster, controller-0 (cluster node, holds
the three VIPs) and compute-0, each in its own network namespace with an
isolated pluto, linked by a veth pair; salt-call --local applies the formula
on each. The cases: all up, one peer stopped, wrong PSK on one side, a conn
loaded whose peer is unreachable, and pluto not running. Each captures
`ipsec whack --status` and `--trafficstatus`, checks the parse, and checks
the verdict and exit code of `salt-call --local ipsec.verify`.

This machine's kernel has no ESP: the Child SA cannot be installed, so the
IKE-level verdict is true and the Child-level verdict is false with the
reason. Where the kernel has ESP (the VM lab), the same test asserts the
Child SAs and their byte counters instead.
"""

import json
import re
import subprocess
import threading
import types

import pytest

import ipsec_plan
import ipsec_status
import ipsec_verify
from labkit import capture, examples, netns, tunnels

NODES = {name: examples.THREE_NODES[name] for name in ("controller-0", "compute-0")}
HOLDER = "controller-0"  # holds every VIP
OTHER_PSK = "another-psk-Hq2w9ZbV7nR4tK8mX3cJ6pLs"
ESP = tunnels.esp_available()
IKE_UP_TIMEOUT = 30


class LabNode:
    def __init__(self, node_id, ns, pluto, factory, pillar):
        self.id = node_id
        self.ns = ns
        self.pluto = pluto
        self.factory = factory
        self.pillar = pillar

    def call(self, *args):
        """salt-call in this node's namespace, as on a real node: the
        formula reads the node's live addresses there (ipsec.verify: which
        VIPs this node has now). A CLI object per call: one object is not
        safe to run from two threads at once (in_parallel)."""
        cli = self.factory.salt_call_cli(timeout=120)
        result = subprocess.run(["ip", "netns", "exec", self.ns.name] + cli.cmdline("--local", *args),
                                capture_output=True, text=True, timeout=300)
        try:
            data = json.loads(result.stdout)["local"]
        except (ValueError, KeyError, TypeError):
            data = None
        return types.SimpleNamespace(returncode=result.returncode, stdout=result.stdout, stderr=result.stderr,
                                     data=data)

    def plan(self):
        """The plan salt-call computes for this node, computed in-process
        (pure) so that polling costs no salt-call."""
        return ipsec_plan.build_plan(
            self.pillar,
            node_id=self.id,
            own_ips=examples.own_ips(self.id, NODES),
            major=self.pluto.libreswan.major,
            config_dir=self.pluto.config_dir,
            cluster_node=self.id in examples.CLUSTER_NODES,
        )

    def capture(self):
        return self.pluto.status(), self.pluto.trafficstatus()

    def parsed(self):
        return ipsec_status.parse_status(*self.capture())

    def verdict(self, level):
        return ipsec_verify.verify(self.plan(), self.parsed(), level)

    def n2n(self):
        return sorted(n for n, c in self.plan()["connections"].items() if c["role"] == "node-to-node")


@pytest.fixture
def lab(salt_node, namespace_factory, pluto_factory, tmp_path):
    """build(node_ids, psk={node: psk}) -> {node_id: LabNode}, formula applied."""

    def build(node_ids=tuple(NODES), psk=None):
        nodes = {}
        for node_id in node_ids:
            ns = namespace_factory(node_id[:4])
            pluto = pluto_factory(tmp_path / node_id, ns.name)
            extra = {"psk": psk[node_id]} if psk and node_id in psk else {}
            pillar = examples.pillar(nodes=NODES, lookup=pluto.lookup(), **extra)
            factory = salt_node(node_id, examples.own_ips(node_id, NODES), pillar)
            nodes[node_id] = LabNode(node_id, ns, pluto, factory, pillar)
        cidrs = {node_id: examples.node_cidrs(NODES[node_id], vips=node_id == HOLDER) for node_id in nodes}
        if len(nodes) == 2:
            a, b = nodes.values()
            netns.link(a.ns, b.ns, cidrs[a.id], cidrs[b.id])
        else:
            for node in nodes.values():
                node.ns.add_stub(cidrs[node.id])
        applied = tunnels.in_parallel(*[
            (lambda node=node: node.call("state.apply", "ipsec")) for node in nodes.values()
        ])
        for result in applied:
            assert result.returncode == 0, result.stdout + result.stderr
        return nodes

    return build


def start(nodes):
    # The VIP holder first: the clients' first IKE_SA_INIT then finds it.
    for node_id in sorted(nodes, key=lambda n: n != HOLDER):
        nodes[node_id].pluto.start()


def wait_ike_up(nodes):
    tunnels.wait_until(
        lambda: all(node.verdict("ike")["result"] for node in nodes.values()),
        IKE_UP_TIMEOUT, what="every planned tunnel up at IKE level",
    )


def verify(node, *args):
    result = node.call("ipsec.verify", *args)
    assert "Traceback" not in result.stdout + result.stderr
    return result


def established_sas(parsed, kind):
    return [sa for conn in parsed["connections"].values() for sa in conn[kind] if sa["established"]]


def send_udp(src, address, count=5):
    """Datagrams through the tunnel (there is no ping here)."""
    family = "AF_INET6" if ":" in address else "AF_INET"
    src.ns.exec(["python3", "-c", (
        "import socket\n"
        "s = socket.socket(socket.{}, socket.SOCK_DGRAM)\n"
        "for _ in range({}): s.sendto(b'x' * 64, ('{}', 9))\n").format(family, count, address)])


def test_all_up_ike_level_passes_child_level_per_kernel(lab):
    nodes = lab()
    start(nodes)
    wait_ike_up(nodes)
    holder, compute = nodes[HOLDER], nodes["compute-0"]
    if ESP:
        tunnels.wait_until(lambda: all(n.verdict("child")["result"] for n in nodes.values()),
                           IKE_UP_TIMEOUT, what="every Child SA up")
        send_udp(compute, "198.51.100.10")
        send_udp(compute, "2001:db8:0:1::10")

    # The parse of what pluto printed, node by node.
    for node in nodes.values():
        status_text, traffic_text = node.capture()
        parsed = ipsec_status.parse_status(status_text, traffic_text)
        plan = node.plan()
        assert parsed["version"] == str(node.pluto.libreswan.major)
        summary = parsed["summary"]
        assert summary["connections"]["loaded"] == len(parsed["connections"])
        assert {c["base"] for c in parsed["connections"].values()} == set(plan["connections"])
        all_ike = [sa for c in parsed["connections"].values() for sa in c["ike_sas"]]
        assert summary["ike_sas"]["total"] == len(all_ike)
        assert summary["ike_sas"]["authenticated"] == len(established_sas(parsed, "ike_sas")) > 0
        for name in node.n2n():
            conn, keywords = parsed["connections"][name], plan["connections"][name]["keywords"]
            assert conn["oriented"] is True and conn["instance"] is None
            assert (conn["local"], conn["remote"]) == (keywords["left"], keywords["right"])
            assert any(sa["established"] and sa["port"] == 500 for sa in conn["ike_sas"]), conn
        if ESP:
            assert summary["ipsec_sas"]["total"] == len(established_sas(parsed, "child_sas")) > 0
            assert {entry["serial"] for entry in parsed["traffic"]} == {
                sa["serial"] for sa in established_sas(parsed, "child_sas")}
        else:
            assert summary["ipsec_sas"]["total"] == 0
            assert established_sas(parsed, "child_sas") == []
            assert traffic_text.strip() == "" and parsed["traffic"] == []
    for node in nodes.values():
        capture.save(node.pluto.libreswan, "esp" if ESP else "ike", node.id, *node.capture())
    # The holder serves compute-0 through instances of its VIP templates.
    parsed = holder.parsed()
    assert "198.51.100.100" in parsed["addresses"] and "198.51.100.101" in parsed["addresses"]
    for vip in ("internal_api", "redis"):
        instances = [c for c in parsed["connections"].values()
                     if c["base"] == "overcloud-{}-vip-tunnel".format(vip) and c["instance"]]
        assert [c["remote"] for c in instances] == ["198.51.100.20"], instances
        assert re.fullmatch(r"overcloud-{}-vip-tunnel\[\d+\]".format(vip), instances[0]["name"])
        assert any(sa["established"] and sa["peer"] == "198.51.100.20" for sa in instances[0]["ike_sas"])
    assert parsed["connections"]["overcloud-internal_api-node-to-vip-tunnel"]["oriented"] is False

    # salt-call ipsec.verify on both nodes at both levels.
    calls = tunnels.in_parallel(
        lambda: verify(holder, "level=ike"), lambda: verify(compute, "level=ike"),
        lambda: verify(holder, "level=child"), lambda: verify(compute, "level=child"))
    holder_ike, compute_ike, holder_child, compute_child = [r.data for r in calls]
    # IKE level: true, exit 0.
    for result in calls[:2]:
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.data["result"] is True and result.data["failed"] == {}
    assert compute_ike["counts"]["expect_up"] == 4  # 2 node-to-node + 2 VIP clients
    connections = holder_ike["connections"]
    assert holder_ike["counts"]["expect_up"] == 5  # 2 node-to-node + 3 VIP servers
    assert connections["overcloud-internal_api-node-to-vip-tunnel"]["expect"] == "nothing"
    assert connections["overcloud-internal_api-node-to-vip-tunnel"]["vip_held"] is True
    server = connections["overcloud-internal_api-vip-tunnel"]
    assert server["expect"] == "up" and server["ok"] and server["clients"]["198.51.100.20"]["node"] == "compute-0"
    assert connections["overcloud-storage-vip-tunnel"]["clients"] == {}  # compute-0 is not on storage
    assert holder_ike["vips"]["198.51.100.100"]["held"] is True

    # Child level: the kernel decides.
    for result, data in ((calls[2], holder_child), (calls[3], compute_child)):
        if ESP:
            assert result.returncode == 0 and data["result"] is True, data["comment"]
        else:
            assert result.returncode != 0, "a false verdict must fail salt-call"
            assert data["result"] is False
            assert data["failed"] and all("no established Child SA" in reason for reason in data["failed"].values())
            assert "a kernel without ESP cannot install them" in data["comment"]
            assert data["hint"] and data["comment"].endswith(data["hint"])
    if ESP:
        received = holder_child["connections"]["overcloud-internal_api-198.51.100.10-198.51.100.20"]
        assert received["in_bytes"] and received["in_bytes"] > 0
        sent = compute_child["connections"]["overcloud-internal_api-198.51.100.10-198.51.100.20"]
        assert sent["out_bytes"] and sent["out_bytes"] > 0

    # The wait state: passes at IKE level; at Child level it times out here.
    waits = tunnels.in_parallel(
        lambda: holder.call("state.single", "ipsec.established", "name=tunnels", "level=ike",
                            "timeout=20", "interval=1"),
        lambda: compute.call("state.single", "ipsec.established", "name=tunnels", "level=child",
                             "timeout=2", "interval=1"),
    )
    passed = next(iter(waits[0].data.values()))
    assert waits[0].returncode == 0 and passed["result"] is True, passed
    assert passed["changes"] == {} and "all 5 tunnels that should be up are up" in passed["comment"]
    child_wait = next(iter(waits[1].data.values()))
    if ESP:
        assert waits[1].returncode == 0 and child_wait["result"] is True, child_wait
    else:
        assert waits[1].returncode != 0 and child_wait["result"] is False
        assert child_wait["comment"].startswith("timed out after") and "no established Child SA" in child_wait["comment"]


def test_one_peer_stopped_then_established_waits_for_it(lab, tmp_path):
    nodes = lab()
    start(nodes)
    wait_ike_up(nodes)
    holder, compute = nodes[HOLDER], nodes["compute-0"]
    compute.pluto.stop()

    def peer_gone():
        parsed = holder.parsed()
        return not any(sa["established"] for name in holder.n2n() for sa in parsed["connections"][name]["ike_sas"])

    tunnels.wait_until(peer_gone, 20, what="holder sees compute-0's IKE SAs gone")
    parsed = ipsec_status.parse_status(*holder.capture())
    assert parsed["summary"]["ike_sas"]["authenticated"] == 0
    for name in holder.n2n():
        assert parsed["connections"][name]["oriented"] is True  # still loaded and oriented

    result = verify(holder, "level=ike")
    assert result.returncode != 0
    data = result.data
    assert data["result"] is False
    assert set(data["failed"]) == set(holder.n2n()) | {
        "overcloud-internal_api-vip-tunnel", "overcloud-redis-vip-tunnel"}
    for name in holder.n2n():
        entry = data["connections"][name]
        assert entry["loaded"] and entry["oriented"] and not entry["ike_sa"]
        assert "not established" in entry["reason"] or entry["reason"].startswith("no IKE SA"), entry["reason"]
    assert "198.51.100.20 (compute-0)" in data["failed"]["overcloud-internal_api-vip-tunnel"]
    assert data["connections"]["overcloud-storage-vip-tunnel"]["ok"] is True  # no client to wait for

    # ipsec.established blocks until the peer is back. Its first check is
    # seen in its log before compute-0's pluto starts again.
    log_file = tmp_path / "established.log"
    waited = {}

    def wait_state():
        waited["result"] = holder.call(
            "--log-file={}".format(log_file), "--log-file-level=info",
            "state.single", "ipsec.established", "name=tunnels", "level=ike", "timeout=60", "interval=1")

    thread = threading.Thread(target=wait_state)
    thread.start()
    try:
        tunnels.wait_until(lambda: log_file.exists() and "ipsec.established: waiting" in log_file.read_text(),
                           60, what="the state's first failed check")
        compute.pluto.start()
    finally:
        thread.join(90)
    result = waited["result"]
    state = next(iter(result.data.values()))
    assert result.returncode == 0 and state["result"] is True, state
    checks = int(re.search(r"(\d+) checks\)", state["comment"]).group(1))
    assert checks >= 2, state["comment"]


def test_wrong_psk_on_one_side(lab):
    nodes = lab(psk={"compute-0": OTHER_PSK})
    start(nodes)
    for node in nodes.values():
        tunnels.wait_until(lambda node=node: "AUTHENTICATION_FAILED" in node.pluto.log(), 20,
                           what="{} refused by its peer".format(node.id))
    results = tunnels.in_parallel(*[(lambda n=n: verify(n, "level=ike")) for n in nodes.values()])
    for node, result in zip(nodes.values(), results):
        parsed = node.parsed()
        assert established_sas(parsed, "ike_sas") == []
        assert parsed["summary"]["ike_sas"]["authenticated"] == 0
        assert result.returncode != 0
        data = result.data
        assert data["result"] is False
        assert set(node.n2n()) <= set(data["failed"])
        for name in node.n2n():
            entry = data["connections"][name]
            assert entry["loaded"] and not entry["ike_sa"] and entry["reason"]
    compute = results[1].data["connections"]
    assert compute["overcloud-internal_api-node-to-vip-tunnel"]["ok"] is False


def test_conn_loaded_but_peer_unreachable(lab):
    nodes = lab(node_ids=(HOLDER,))
    holder = nodes[HOLDER]
    holder.pluto.start()

    def half_open():
        parsed = holder.parsed()
        # A conn pluto has not listed yet (its start-up is still adding
        # them) is not trying yet.
        trying = [name for name in holder.n2n() if name in parsed["connections"]
                  and any(not sa["established"] for sa in parsed["connections"][name]["ike_sas"])]
        return parsed if len(trying) == len(holder.n2n()) else None

    parsed = tunnels.wait_until(half_open, 20, what="IKE_SA_INIT sent on every node-to-node conn")
    assert parsed["summary"]["ike_sas"]["half_open"] >= len(holder.n2n())
    assert parsed["summary"]["ike_sas"]["authenticated"] == 0
    for name in holder.n2n():
        sas = parsed["connections"][name]["ike_sas"]
        assert any("IKE_SA_INIT" in (sa["text"] or "") for sa in sas), sas

    result = verify(holder, "level=ike")
    assert result.returncode != 0
    data = result.data
    assert data["result"] is False
    for name in holder.n2n():
        entry = data["connections"][name]
        assert entry["loaded"] and entry["oriented"] and not entry["ike_sa"]
        assert entry["reason"].startswith(("IKE SA #", "no IKE SA")), entry["reason"]
    assert any("no answer from" in reason for reason in data["failed"].values()), data["failed"]
    server = data["connections"]["overcloud-internal_api-vip-tunnel"]
    assert server["clients"]["198.51.100.20"]["instances"] == []
    assert "198.51.100.20 (compute-0): not connected (no instance)" in server["reason"]


def test_pluto_not_running_is_a_clear_error(salt_node, tmp_path, libreswan):
    from labkit.pluto import Pluto

    absent = Pluto(tmp_path / "absent", libreswan=libreswan)  # never started: no socket
    stale = Pluto(tmp_path / "stale", libreswan=libreswan)    # a socket path nobody listens on
    open(stale.ctlsocket, "w").close()
    made = {}
    for label, node_id, layout in (("absent", "compute-0", absent), ("stale", "controller-0", stale)):
        pillar = examples.pillar(nodes=NODES, lookup=layout.lookup())
        made[label] = salt_node(node_id, examples.own_ips(node_id, NODES), pillar)

    def call(label, *args):
        return made[label].salt_call_cli(timeout=120).run("--local", *args)

    # The first call alone: salt-calls of one minion started together race
    # to create its extmods cache folder ("File exists", Salt's, not ours).
    calls = [call("absent", "ipsec.status")] + tunnels.in_parallel(
        lambda: call("absent", "ipsec.verify", "level=ike"),
        lambda: call("absent", "state.single", "ipsec.established", "name=t", "timeout=1", "interval=0.5"),
        lambda: call("stale", "ipsec.status"),
    )
    for result in calls:
        output = result.stdout + result.stderr
        assert result.returncode != 0
        assert "Traceback" not in output
    expected = "pluto is not running (no answer on control socket {})".format(absent.ctlsocket)
    assert "Error running 'ipsec.status': " + expected in calls[0].stderr
    assert "Error running 'ipsec.verify': " + expected in calls[1].stderr
    state = next(iter(calls[2].data.values()))
    assert state["result"] is False and expected in state["comment"] and "timed out after" in state["comment"]
    assert "pluto is not running (no answer on control socket {})".format(stale.ctlsocket) in calls[3].stderr
    assert "connect(" in calls[3].stderr  # 4.x "connect() for", 5.x "connect(pluto_ctl) failed"
