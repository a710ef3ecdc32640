"""Real pluto output saved as unit-test data, on request.

With ``LABKIT_CAPTURE=1`` in the environment, the tests that bring real
plutos up (test/integration/test_status_pluto.py: the formula's files for
controller-0 and compute-0 on this kernel, IKE only; test/vm/test_vm_esp.py:
a Child SA with ESP in the VM) write what pluto printed to
``test/unit/data/libreswan-<version>-<scene>-<node>-<kind>.txt``, where the
unit tests parse it (test/unit/test_status_real*.py). Without it nothing is
written: a normal run leaves the checkout alone.

    LABKIT_CAPTURE=1 .venv/bin/pytest test/integration/test_status_pluto.py -k all_up
"""

import os

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "unit", "data")


def wanted():
    return os.environ.get("LABKIT_CAPTURE") == "1"


def save(libreswan, scene, node, status_text, traffic_text):
    """Write one node's ``whack --status`` and ``--trafficstatus`` text."""
    if not wanted():
        return []
    written = []
    for kind, text in (("status", status_text), ("trafficstatus", traffic_text)):
        path = os.path.join(DATA, "libreswan-{}-{}-{}-{}.txt".format(libreswan.version, scene, node, kind))
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text)
        written.append(path)
    return written


# The nodes of the captures taken with the formula's files (test_status_pluto)
# and the internal_api tunnel between them.
NODES = ("controller-0", "compute-0")
N2N_API = "overcloud-internal_api-198.51.100.10-198.51.100.20"


def load(version, scene, node):
    """[status text, trafficstatus text] of one capture."""
    texts = []
    for kind in ("status", "trafficstatus"):
        with open(os.path.join(DATA, "libreswan-{}-{}-{}-{}.txt".format(version, scene, node, kind))) as handle:
            texts.append(handle.read())
    return texts


def node_plan(node, major):
    """The plan the captured ``node`` ran: the example cluster's
    controller-0 (VIP holder) and compute-0, planned for ``major``."""
    import ipsec_plan  # pylint: disable=import-outside-toplevel

    from labkit import examples  # pylint: disable=import-outside-toplevel

    nodes = {name: examples.THREE_NODES[name] for name in NODES}
    return ipsec_plan.build_plan(examples.pillar(nodes=nodes), node_id=node, own_ips=examples.own_ips(node, nodes),
                                 major=major, cluster_node=node in examples.CLUSTER_NODES)


def parsed(version, scene, nodes=NODES):
    """{node: ipsec_status.parse_status of its capture}."""
    import ipsec_status  # pylint: disable=import-outside-toplevel

    return {node: ipsec_status.parse_status(*load(version, scene, node)) for node in nodes}
