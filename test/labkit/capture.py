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
