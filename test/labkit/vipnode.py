"""A cluster node for OCF agent tests, without Salt: a network namespace with
the node's address (and the VIP while it holds it), the formula's own
rendered tunnel files (plan + render, the same pure code the states use)
and an isolated pluto. The agent runs inside the namespace, as pacemaker's
executor would run it on the node.
"""

import os
import subprocess

import ipsec_plan
import ipsec_render

from labkit import examples

OCF_ROOT = "/usr/lib/ocf"
NET = "internal_api"
VIP = examples.VIPS[NET]
SERVER = "overcloud-internal_api-vip-tunnel"
CLIENT = "overcloud-internal_api-node-to-vip-tunnel"
RESOURCE = "tripleo-ipsec-internal_api"
ADDRESSES = {"controller-0": "198.51.100.10", "controller-1": "198.51.100.11"}


def pillar():
    """Two cluster nodes on internal_api (and its VIP), nothing else."""
    return {
        "psk": examples.PSK,
        "networks": {NET: dict(examples.NETWORKS[NET])},
        "skip_networks": [],
        "cluster": {"nodes": sorted(ADDRESSES)},
        "nodes": {node: {"addresses": {NET: address}} for node, address in ADDRESSES.items()},
    }


def write_config(node_id, pluto, conf=None):
    """The formula's files for ``node_id`` into the pluto layout, planned
    for the major release that pluto runs."""
    conf = conf or pillar()
    plan = ipsec_plan.build_plan(conf, node_id, [ADDRESSES[node_id]], major=pluto.libreswan.major,
                                 config_dir=pluto.config_dir, cluster_node=True)
    for path, text in ipsec_render.render_files(plan, conf["psk"]).items():
        with open(path, "w") as handle:
            handle.write(text)
        os.chmod(path, int(plan["files"][path]["mode"], 8))
    setup = "".join("\t{}={}\n".format(k, v) for k, v in plan["config_setup"].items())
    with open(pluto.config_file, "w") as handle:
        handle.write("config setup\n{}\ninclude {}/*.conf\n".format(setup, pluto.config_dir))
    with open(pluto.secrets_file, "w") as handle:
        handle.write("include {}/*.secrets\n".format(pluto.config_dir))
    os.chmod(pluto.secrets_file, 0o600)
    return plan


class VipNode:
    def __init__(self, node_id, ns, pluto, agent, dev=None):
        """dev: the node's link to its peers (netns.link); None: a stub
        link of its own (a single node)."""
        self.node_id = node_id
        self.ns = ns
        self.pluto = pluto
        self.agent_path = agent
        self.address = ADDRESSES[node_id]
        if dev is None:
            self.dev = ns.add_stub(["{}/25".format(self.address)])
        else:
            self.dev = dev
            ns.add_address(dev, "{}/25".format(self.address))
        self.plan = write_config(node_id, pluto)

    def params(self, **overrides):
        params = {
            "tunnel": SERVER,
            "vip": VIP,
            "fallbacktunnel": CLIENT,
            "ctlsocket": self.pluto.ctlsocket,
            "ipsec_conf": self.pluto.config_file,
            "ipsec_bin": self.pluto.ipsec_bin,
        }
        params.update(overrides)
        return {k: v for k, v in params.items() if v is not None}

    def add_vip(self, dev=None):
        self.ns.add_address(dev or self.dev, VIP + "/32")

    def del_vip(self, dev=None):
        self.ns.exec(["ip", "addr", "del", VIP + "/32", "dev", dev or self.dev])

    def _env(self, interval, timeout_ms, overrides):
        env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "OCF_ROOT": OCF_ROOT,
            "OCF_RA_VERSION_MAJOR": "1",
            "OCF_RA_VERSION_MINOR": "1",
            "OCF_RESOURCE_INSTANCE": RESOURCE,
            "OCF_RESOURCE_TYPE": "vip-tunnel",
            "OCF_RESOURCE_PROVIDER": "ipsec-formula",
        }
        if interval is not None:
            env["OCF_RESKEY_CRM_meta_interval"] = str(interval)
        if timeout_ms is not None:
            env["OCF_RESKEY_CRM_meta_timeout"] = str(timeout_ms)
        for name, value in self.params(**overrides).items():
            env["OCF_RESKEY_" + name] = value
        return env

    def agent_process(self, action, interval=None, timeout_ms=20000, **overrides):
        """Start one agent action in the namespace (a Popen)."""
        return subprocess.Popen(["ip", "netns", "exec", self.ns.name, self.agent_path, action],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=self._env(interval, timeout_ms, overrides))

    def agent(self, action, interval=None, timeout_ms=20000, **overrides):
        """Run one agent action in the namespace: (exit code, stderr).
        timeout_ms: the action's timeout as pacemaker passes it (start waits
        up to half of it for pluto; every pluto call is bounded by 3/4 of
        it); pacemaker's default, 20 s, unless told."""
        process = self.agent_process(action, interval, timeout_ms, **overrides)
        _, err = process.communicate(timeout=60)
        return process.returncode, err

    def ocf_tester(self, **overrides):
        cmd = ["ip", "netns", "exec", self.ns.name, "ocf-tester", "-v", "-n", RESOURCE]
        for name, value in sorted(self.params(**overrides).items()):
            cmd += ["-o", "{}={}".format(name, value)]
        cmd.append(self.agent_path)
        env = dict(os.environ, OCF_ROOT=OCF_ROOT)
        result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
        return result.returncode, result.stdout + result.stderr

    def conn_lines(self, name):
        prefix = '"{}"'.format(name)
        lines = []
        for line in self.pluto.status().splitlines():
            text = line[4:] if line[:4] in ("000 ", "006 ") else line
            if text.startswith(prefix):
                lines.append(text)
        return lines

    def ike_established(self, name):
        """Is there an established IKE SA of conn ``name`` (or of one of its
        instances, "name"[1] ...)?"""
        quoted = '"{}"'.format(name)
        return any(
            (quoted + ":" in line or quoted + "[" in line) and "established IKE SA" in line
            for line in self.pluto.status().splitlines()
        )

    def alive(self):
        return self.pluto.process is not None and self.pluto.process.poll() is None
