"""The OCF agent ocf:ipsec-formula:vip-tunnel against a real, isolated pluto
in a network namespace: ocf-tester passes with 0 failures; monitor tells
running / stopped / failed correctly when pluto is down, the conn is not
loaded or the VIP is absent (TripleO's agent said "running" there); and a
real failover between two nodes makes the old VIP holder an IKE client of
the new one, with both plutos alive."""

import os
import re
import signal
import subprocess
import time

import pytest

from labkit import netns, vipnode
from labkit.pcmknode import AGENT

OCF_SUCCESS, OCF_ERR_GENERIC, OCF_ERR_INSTALLED, OCF_ERR_CONFIGURED, OCF_NOT_RUNNING = 0, 1, 5, 6, 7
DTD_DIR = "/usr/share/resource-agents"


@pytest.fixture
def libreswan(libreswan_each):
    """The agent's tests with a pluto run against every Libreswan install
    (test ids 4.10 and 5.3.2)."""
    return libreswan_each


@pytest.fixture
def node(namespace_factory, pluto_factory, tmp_path):
    """controller-0 holding the VIP, pluto started on the formula's files."""
    def make(node_id="controller-0", with_vip=True, start=True, ns=None, dev=None):
        ns = ns or namespace_factory(node_id[:4] + node_id[-1])
        pluto = pluto_factory(tmp_path / node_id, ns.name)
        made = vipnode.VipNode(node_id, ns, pluto, AGENT, dev=dev)
        if with_vip:
            made.add_vip()
        if start:
            pluto.start()
        return made
    return make


def wait_for(predicate, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return predicate()


# --- static -----------------------------------------------------------------

@pytest.mark.unit
def test_meta_data_is_valid_against_the_resource_agents_dtd_and_schema():
    meta = subprocess.run([AGENT, "meta-data"], capture_output=True, text=True, env={"OCF_ROOT": "/usr/lib/ocf"})
    assert meta.returncode == 0
    # As ocf-tester checks it: DOCTYPE resolved next to ra-api-1.dtd.
    dtd = subprocess.run(["xmllint", "--noout", "--valid", "-"], input=meta.stdout, cwd=DTD_DIR,
                         capture_output=True, text=True)
    assert dtd.returncode == 0, dtd.stderr
    rng = subprocess.run(["xmllint", "--noout", "--relaxng", DTD_DIR + "/metadata.rng", "-"],
                         input=meta.stdout, cwd=DTD_DIR, capture_output=True, text=True)
    assert rng.returncode == 0, rng.stderr
    names = re.findall(r'<parameter name="([a-z_]+)"', meta.stdout)
    assert names == ["tunnel", "vip", "fallbacktunnel", "ctlsocket", "ipsec_conf", "ipsec_bin"]
    actions = re.findall(r'<action name="([a-z-]+)"', meta.stdout)
    assert actions == ["start", "stop", "monitor", "validate-all", "meta-data"]


@pytest.mark.unit
def test_agent_is_posix_sh_and_logs_nowhere_but_ocf_log():
    syntax = subprocess.run(["dash", "-n", AGENT], capture_output=True, text=True)
    assert syntax.returncode == 0, syntax.stderr
    with open(AGENT) as handle:
        text = handle.read()
    assert text.startswith("#!/bin/sh\n")
    # The code, without comments and without the meta-data document.
    code = re.sub(r"cat <<END\n.*?\nEND\n", "", text, flags=re.S)
    code = "\n".join(line for line in code.splitlines() if not line.lstrip().startswith("#"))
    for bashism in (r"\[\[", r"^\s*function\s", r"\blocal\s", r"\$'", r"\$\{!", r"\bdisown\b",
                    r"^\s*source\s", r"\[ [^]\n]*==", r"&>", r"<<<", r"\$\{[A-Za-z_]+//", r"/tmp\b"):
        assert not re.search(bashism, code, re.M), bashism


# --- ocf-tester ---------------------------------------------------------------

def test_ocf_tester_passes_with_zero_failures(node):
    n = node()
    rc, output = n.ocf_tester()
    assert rc == 0, output
    assert "passed all tests" in output
    assert not re.search(r"^\* rc=", output, re.M), output
    assert n.alive()


def test_ocf_tester_passes_after_the_vip_arrives_on_a_running_pluto(node):
    """Failover onto this node: pluto started without the VIP (its client
    conn toward the VIP pending), then the VIP arrives. Libreswan 4.10 would
    abort on --listen if the pending client conn were not taken down first."""
    n = node(with_vip=False)
    assert wait_for(lambda: any("pending" in line or "STATE_V2" in line for line in n.pluto.status().splitlines()))
    n.add_vip()
    assert n.agent("monitor", interval=0)[0] == OCF_NOT_RUNNING  # a probe: loaded, not served yet
    assert n.agent("monitor", interval=10000)[0] == OCF_ERR_GENERIC  # after a start: broken
    assert n.agent("start")[0] == OCF_SUCCESS
    assert n.alive(), n.pluto.log()[-2000:]
    assert n.agent("monitor", interval=10000)[0] == OCF_SUCCESS
    rc, output = n.ocf_tester()
    assert rc == 0, output
    assert n.alive()


def test_negative_control_bare_listen_with_a_pending_client_conn(node):
    """What TripleO's start did (add, then --listen) in the same situation:
    shows the test above would catch an agent that re-listens before taking
    the client conn down."""
    n = node(with_vip=False)
    assert wait_for(lambda: any("pending" in line or "STATE_V2" in line for line in n.pluto.status().splitlines()))
    n.add_vip()
    n.pluto.whack("--listen")
    died = wait_for(lambda: not n.alive(), timeout=3)
    if n.pluto.libreswan.major < 5:
        # Libreswan 4.10: "ABORT: ASSERTION FAILED: ... (free_host_pair() ...)"
        assert died and "ASSERTION FAILED" in n.pluto.log(), n.pluto.log()[-2000:]
    else:
        # 5.3.2 survives it and orients the server conn on the VIP: there
        # the agent's ordering is only a precaution.
        assert not died, n.pluto.log()[-2000:]
        assert "unoriented" not in "".join(n.conn_lines(vipnode.SERVER))


# --- bad cases ----------------------------------------------------------------

def test_pluto_down(node):
    n = node(start=False)
    rc, err = n.agent("monitor", interval=10000)
    assert rc == OCF_ERR_GENERIC and "pluto does not answer" in err
    # A probe: nothing is served yet (pluto may still be starting at boot);
    # the start waits for pluto. Only a recurring monitor calls it failed.
    assert n.agent("monitor", interval=0)[0] == OCF_NOT_RUNNING
    assert n.agent("validate-all")[0] == OCF_SUCCESS             # configuration is fine
    rc, err = n.agent("start", timeout_ms=2000)                  # waits 1 s for pluto
    assert rc == OCF_ERR_GENERIC and "ocf-exit-reason:pluto does not answer" in err
    assert n.agent("stop")[0] == OCF_SUCCESS                     # nothing to stop
    n.del_vip()
    assert n.agent("monitor", interval=0)[0] == OCF_NOT_RUNNING  # no VIP, no pluto: cleanly stopped
    rc, output = n.ocf_tester()
    assert rc != 0 and "Start failed" in output, output


def test_start_waits_for_a_pluto_still_starting(node):
    """At boot ipsec.service and pacemaker start in parallel: start waits up
    to half its timeout for pluto to answer."""
    n = node(start=False)
    starting = n.agent_process("start", timeout_ms=20000)
    time.sleep(1.5)
    n.pluto.start()
    _, err = starting.communicate(timeout=30)
    assert starting.returncode == OCF_SUCCESS, err
    assert n.agent("monitor", interval=10000)[0] == OCF_SUCCESS


def test_a_hung_pluto_cannot_make_an_action_outlive_its_timeout(node):
    """pluto stopped (SIGSTOP): its control socket still accepts, nothing
    answers. Pacemaker kills an action at its timeout, and a killed stop
    gets the node fenced: every action answers before that, and says why."""
    n = node()
    assert n.agent("start")[0] == OCF_SUCCESS
    timeout_ms = 8000
    os.kill(n.pluto.process.pid, signal.SIGSTOP)
    try:
        answers = []
        for action, interval, vip_here in (("monitor", 10000, True), ("start", None, True),
                                           ("monitor", 0, True), ("stop", None, False)):
            if not vip_here:
                n.del_vip()  # the order stops the VIP before this resource
            began = time.monotonic()
            rc, err = n.agent(action, interval=interval, timeout_ms=timeout_ms)
            took = time.monotonic() - began
            answers.append((action, interval, rc))
            assert took < timeout_ms / 1000, (action, took, err)   # pacemaker would have killed it
            assert "pluto does not answer" in err, (action, err)
        assert answers == [("monitor", 10000, OCF_ERR_GENERIC), ("start", None, OCF_ERR_GENERIC),
                           ("monitor", 0, OCF_NOT_RUNNING), ("stop", None, OCF_SUCCESS)]
    finally:
        os.kill(n.pluto.process.pid, signal.SIGCONT)
    # pluto resumed: nothing of the bounded calls left it broken.
    assert n.pluto.whack("--briefstatus").returncode == 0


def test_conn_not_loaded(node):
    n = node()
    n.pluto.whack("--name", vipnode.SERVER, "--delete")
    assert not n.conn_lines(vipnode.SERVER)
    # TripleO's agent answered "running" here.
    assert n.agent("monitor", interval=10000)[0] == OCF_NOT_RUNNING
    assert n.agent("start")[0] == OCF_SUCCESS
    assert n.conn_lines(vipnode.SERVER) and "unoriented" not in "".join(n.conn_lines(vipnode.SERVER))
    assert n.agent("monitor", interval=10000)[0] == OCF_SUCCESS


def test_conn_loaded_but_unoriented_with_the_vip_here_is_a_failure(node):
    n = node(with_vip=False)
    n.add_vip()                   # pluto was not told (no --listen): not listening on the VIP
    assert "unoriented" in "".join(n.conn_lines(vipnode.SERVER))
    rc, err = n.agent("monitor", interval=10000)
    assert rc == OCF_ERR_GENERIC and "unoriented" in err


def test_a_probe_after_the_vip_came_finds_the_tunnel_not_running_and_start_serves_it(node):
    """Seen on the live cluster (cold start, in the VM): pacemaker started
    the VIP before this resource's probe ran there; pluto had loaded the
    server conn from ipsec.conf before the VIP existed. The probe must say
    "not running" (7), not "failed" (a recovery and a failed action in
    crm_mon): the start that follows serves it."""
    n = node(with_vip=False)
    n.add_vip()
    rc, err = n.agent("monitor", interval=0)
    assert rc == OCF_NOT_RUNNING and "not served on VIP" in err, err
    assert n.agent("start")[0] == OCF_SUCCESS
    assert n.agent("monitor", interval=0)[0] == OCF_SUCCESS
    assert n.agent("monitor", interval=10000)[0] == OCF_SUCCESS


def test_a_monitor_between_the_vips_stop_and_its_own_is_not_a_failure(node):
    """Seen on the live cluster in the VM: a move stops the VIP, then this
    resource; the recurring monitor that ran in between answered 7 and
    crm_mon kept a failed action. The stop under way is no failure."""
    n = node()
    assert n.agent("start")[0] == OCF_SUCCESS
    n.del_vip()
    rc, err = n.agent("monitor", interval=10000)
    assert rc == OCF_SUCCESS and "served until its stop" in err, err
    assert n.agent("monitor", interval=0)[0] == OCF_NOT_RUNNING   # a probe: not served here
    assert n.agent("stop")[0] == OCF_SUCCESS
    assert n.agent("monitor", interval=10000)[0] == OCF_NOT_RUNNING


def test_vip_absent(node):
    n = node(with_vip=False)
    # pluto loaded the server conn from ipsec.conf (auto=add), unoriented:
    # normal on every node that does not hold the VIP.
    assert n.conn_lines(vipnode.SERVER)
    assert n.agent("monitor", interval=0)[0] == OCF_NOT_RUNNING
    rc, err = n.agent("start")
    assert rc == OCF_ERR_GENERIC and "VIP 198.51.100.100 is not on this node" in err
    assert n.agent("stop")[0] == OCF_SUCCESS
    rc, output = n.ocf_tester()
    assert rc != 0 and "Start failed" in output, output


def test_vip_matched_exactly_not_as_a_substring(node):
    """TripleO grepped `ip addr` for the VIP: 198.51.100.1 'matched' a node
    holding 198.51.100.10 or 198.51.100.100."""
    n = node()
    assert n.agent("monitor", interval=0, vip="198.51.100.1")[0] == OCF_NOT_RUNNING
    assert n.agent("start", vip="198.51.100.1")[0] == OCF_ERR_GENERIC


def test_configuration_problems(node):
    n = node()
    rc, err = n.agent("validate-all", tunnel="overcloud-nosuch-vip-tunnel")
    assert rc == OCF_ERR_INSTALLED and "is not defined in" in err        # this node's config only
    assert n.agent("start", tunnel="overcloud-nosuch-vip-tunnel")[0] == OCF_ERR_INSTALLED
    assert n.agent("monitor", interval=0, tunnel="overcloud-nosuch-vip-tunnel")[0] == OCF_NOT_RUNNING
    assert n.agent("validate-all", tunnel="")[0] == OCF_ERR_CONFIGURED
    assert n.agent("validate-all", vip="not-an-address")[0] == OCF_ERR_CONFIGURED
    assert n.agent("validate-all", fallbacktunnel=vipnode.SERVER)[0] == OCF_ERR_CONFIGURED
    assert n.agent("monitor", interval=0, tunnel="")[0] == OCF_NOT_RUNNING
    assert n.agent("stop", tunnel="")[0] == OCF_SUCCESS
    missing = "/nonexistent/ipsec"
    assert n.agent("validate-all", ipsec_bin=missing)[0] == OCF_ERR_INSTALLED
    assert n.agent("monitor", interval=10000, ipsec_bin=missing)[0] == OCF_ERR_INSTALLED
    assert n.agent("monitor", interval=0, ipsec_bin=missing)[0] == OCF_NOT_RUNNING
    assert n.agent("stop", ipsec_bin=missing)[0] == OCF_SUCCESS
    assert n.agent("promote")[0] == 3


# Every parameter that reaches a command line, with values that would be an
# option, a path to somewhere else, or not an address at all.
BAD_PARAMETERS = [
    ("fallbacktunnel", "--autoall"), ("fallbacktunnel", "-x"), ("tunnel", "--listen"), ("tunnel", ".hidden"),
    ("tunnel", "a b"), ("tunnel", "a;touch /tmp/x"), ("vip", "1.2.3.4.5"), ("vip", "::::"), ("vip", "-1"),
    ("vip", "256.1.1.1"), ("vip", "1::2::3"), ("vip", "198.51.100.100\n"), ("ctlsocket", "run/pluto.ctl"),
    ("ctlsocket", "--help"), ("ipsec_conf", "-"), ("ipsec_bin", "ipsec"),
]


@pytest.mark.parametrize("param,value", BAD_PARAMETERS)
def test_bad_parameters_are_refused_before_every_use(node, param, value):
    """validate-all and start refuse them; stop does nothing with them (and
    succeeds: a failed stop gets a node fenced); monitor reports not
    running on a probe. Pluto's loaded set never changes."""
    n = node()
    before = n.pluto.connection_names()
    rc, err = n.agent("validate-all", **{param: value})
    assert rc == OCF_ERR_CONFIGURED, err
    assert n.agent("start", **{param: value})[0] == OCF_ERR_CONFIGURED
    assert n.agent("monitor", interval=0, **{param: value})[0] == OCF_NOT_RUNNING
    assert n.agent("stop", **{param: value})[0] == OCF_SUCCESS
    assert n.pluto.connection_names() == before


# --- failover between two real nodes ----------------------------------------------

def test_failover_makes_the_old_holder_a_client_of_the_new_one(node, namespace_factory):
    ns0, ns1 = namespace_factory("ctl0"), namespace_factory("ctl1")
    dev0, dev1 = netns.link(ns0, ns1, [], [])
    c0 = node("controller-0", with_vip=False, start=False, ns=ns0, dev=dev0)
    c1 = node("controller-1", with_vip=False, start=False, ns=ns1, dev=dev1)
    c0.add_vip()
    c0.pluto.start()
    c1.pluto.start()

    # controller-0 holds the VIP: pacemaker started the VIP, then the tunnel.
    assert c0.agent("start")[0] == OCF_SUCCESS
    assert c0.agent("monitor", interval=10000)[0] == OCF_SUCCESS
    assert c1.agent("monitor", interval=0)[0] == OCF_NOT_RUNNING
    assert wait_for(lambda: c1.ike_established(vipnode.CLIENT)), c1.pluto.status()[-3000:]

    # Failover: the VIP stops on controller-0 first, then the tunnel; the VIP
    # starts on controller-1, then the tunnel.
    c0.del_vip()
    assert c0.agent("stop")[0] == OCF_SUCCESS
    assert not c0.conn_lines(vipnode.SERVER)
    c1.add_vip()
    rc, err = c1.agent("start")
    assert rc == OCF_SUCCESS, err
    # start did not sit out the delete exchange of controller-1's own client
    # IKE SA with the gone holder (5.x whack --terminate waits for it until
    # retransmit-timeout, 15 s: then it would have logged the timeout).
    assert "timeout exceeded" not in c1.pluto.log(), c1.pluto.log()[-2000:]
    assert c0.alive() and c1.alive(), c1.pluto.log()[-2000:]
    assert c1.agent("monitor", interval=10000)[0] == OCF_SUCCESS
    assert c0.agent("monitor", interval=10000)[0] == OCF_NOT_RUNNING

    # The old holder's fallback client conn reaches the new holder.
    assert wait_for(lambda: c0.ike_established(vipnode.CLIENT), timeout=30), c0.pluto.status()[-3000:]
    assert wait_for(lambda: c1.ike_established(vipnode.SERVER)), c1.pluto.status()[-3000:]
    assert c0.alive() and c1.alive()
