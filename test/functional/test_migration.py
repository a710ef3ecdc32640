"""Migrating a node deployed by tripleo-ipsec (issue: TripleO parity).

One node in its own namespace with what TripleO left: its node-to-node
files (`overcloud-<net>-node-to-node-private-tunnels.conf`, conns
`overcloud-private-node-to-node-<net>-ip-<N>`), its VIP files of the same
names as the formula's, loaded in a real pluto, and its pacemaker resource
`tripleo-ipsec-redis` (`ocf:heartbeat:ipsec`) with the constraints pcs made
for it in a file CIB.

Without `ipsec:adopt_tripleo` the run is refused, naming what was found and
how to go on, and nothing changes. With it, one run replaces everything of
TripleO's by the formula's: nothing of TripleO's is left.
"""

import hashlib
import os

from labkit import examples, pcmk, saltenv
from labkit.pcmknode import PacemakerNode

CIDRS = ["198.51.100.10/25", "198.51.100.130/25", "203.0.113.10/24", "2001:db8:0:1::10/64"]
TRIPLEO_N2N = """conn overcloud-private-node-to-node-internal_api-ip-1
\ttype=tunnel
\tauthby=secret
\tleft=198.51.100.10
\tleftid=198.51.100.10
\tright=198.51.100.11
\trightid=198.51.100.11
\tfailureshunt=drop
\tauto=start
\tretransmit-timeout=2s
\tphase2alg=aes_gcm128-null

conn overcloud-private-node-to-node-internal_api-ip-2
\ttype=tunnel
\tauthby=secret
\tleft=198.51.100.10
\tleftid=198.51.100.10
\tright=198.51.100.20
\trightid=198.51.100.20
\tfailureshunt=drop
\tauto=start
\tretransmit-timeout=2s
\tphase2alg=aes_gcm128-null
"""
TRIPLEO_VIP = """conn overcloud-redis-vip-tunnel
\tleft=198.51.100.101
\tleftid=@redisvip
\tright=%any
\trightid=@overcloudrediscluster
\tauthby=secret
\tauto=add
\tdpdaction=hold
\tdpddelay=5
\tdpdtimeout=15
\tfailureshunt=drop
"""
TRIPLEO_PSK = "tripleo-psk-0123456789abcdefghijklmnopqrstuvwxyz"
TRIPLEO_CONNS = {"overcloud-private-node-to-node-internal_api-ip-1",
                 "overcloud-private-node-to-node-internal_api-ip-2", "overcloud-redis-vip-tunnel"}


def digests(root):
    found = {}
    for base, _, files in os.walk(root):
        for name in files:
            path = os.path.join(base, name)
            if "pluto.log" in path or "/run/" in path or "/nss/" in path:
                continue
            with open(path, "rb") as handle:
                found[os.path.relpath(path, root)] = hashlib.sha256(handle.read()).hexdigest()
    return found


def tripleo_node(layout, cib):
    files = {
        "overcloud-internal_api-node-to-node-private-tunnels.conf": TRIPLEO_N2N,
        "overcloud-internal_api-node-to-node-tunnels.secrets":
            '198.51.100.10 198.51.100.11 : PSK "{0}"\n198.51.100.10 198.51.100.20 : PSK "{0}"\n'.format(TRIPLEO_PSK),
        "overcloud-redis-vip-tunnels.conf": TRIPLEO_VIP,
        "overcloud-redis-vip-tunnels.secrets": '@redisvip @overcloudrediscluster : PSK "{}"\n'.format(TRIPLEO_PSK),
    }
    for name, text in files.items():
        with open(os.path.join(layout.config_dir, name), "w") as handle:
            handle.write(text)
    with open(layout.config_file, "w") as handle:
        handle.write("config setup\n\tuniqueids=no\n\ninclude {}/*.conf\n".format(layout.config_dir))
    with open(layout.secrets_file, "w") as handle:
        handle.write("include {}/*.secrets\n".format(layout.config_dir))
    pcmk.create(cib, "resources", pcmk.primitive_xml(
        "tripleo-ipsec-redis", "ocf", "ipsec", {"tunnel": "overcloud-redis-vip-tunnel", "vip": "198.51.100.101",
                                                "fallbacktunnel": "overcloud-redis-node-to-vip-tunnel"},
        provider="heartbeat"))
    for xml in (
        '<rsc_colocation id="colocation-tripleo-ipsec-redis-ip-198.51.100.101-INFINITY" rsc="tripleo-ipsec-redis" '
        'with-rsc="ip-198.51.100.101" score="INFINITY"/>',
        '<rsc_order id="order-ip-198.51.100.101-tripleo-ipsec-redis-mandatory" first="ip-198.51.100.101" '
        'first-action="start" then="tripleo-ipsec-redis" then-action="start" kind="Mandatory" symmetrical="false"/>',
        '<rsc_order id="order-ip-198.51.100.101-tripleo-ipsec-redis-mandatory-1" first="ip-198.51.100.101" '
        'first-action="stop" then="tripleo-ipsec-redis" then-action="stop" kind="Mandatory" symmetrical="false"/>',
    ):
        pcmk.create(cib, "constraints", xml)


def test_a_tripleo_node_is_refused_then_adopted_whole(salt_node, tmp_path, namespace_factory, pluto_factory):
    ns = namespace_factory("trip")
    ns.add_stub(CIDRS + ["198.51.100.101/32"])
    node = PacemakerNode(salt_node, tmp_path)
    layout = node.layout
    tripleo_node(layout, node.cib)
    pluto = pluto_factory(layout.root, ns.name).start()
    assert TRIPLEO_CONNS <= pluto.connection_names()
    cib_before = pcmk.objects(node.cib)
    before = digests(layout.root)

    rc, _, output = saltenv.call_in_netns(node.cli, ns.name, "state.apply", "ipsec")
    assert rc != 0
    assert "ipsec:adopt_tripleo: true" in output and "node-to-node-private-tunnels.conf" in output
    assert digests(layout.root) == before
    assert pluto.connection_names() >= TRIPLEO_CONNS
    assert pcmk.objects(node.cib) == cib_before

    node.set_pillar(dict(node.pillar(), adopt_tripleo=True))
    rc, data, output = saltenv.call_in_netns(node.cli, ns.name, "state.apply", "ipsec")
    assert rc == 0, output
    plan = saltenv.call_in_netns(node.cli, ns.name, "ipsec.plan")[1]
    loaded = pluto.connection_names()
    assert loaded == set(plan["connections"]), loaded
    assert not any("private-node-to-node" in name for name in loaded)
    names = sorted(os.listdir(layout.config_dir))
    assert not [n for n in names if "private" in n], names
    for name in names:
        if not name.startswith("."):
            with open(os.path.join(layout.config_dir, name)) as handle:
                text = handle.read()
            assert TRIPLEO_PSK not in text and text.startswith("# Managed by Salt (ipsec-formula).")
    objects = pcmk.objects(node.cib)
    assert "ocf:heartbeat:ipsec" not in str(objects)
    assert not [object_id for object_id in objects if object_id.startswith(("colocation-tripleo", "order-ip-"))]
    assert TRIPLEO_PSK not in output and examples.PSK not in output
