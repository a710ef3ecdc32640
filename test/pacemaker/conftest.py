"""Fixtures of the pacemaker tests (helpers: labkit/pcmknode.py)."""

import pytest

from labkit.examples import VIPS
from labkit.pcmknode import PacemakerNode


@pytest.fixture
def pacemaker_node(salt_node, tmp_path):
    return PacemakerNode(salt_node, tmp_path)


@pytest.fixture
def make_pacemaker_node(salt_node, tmp_path):
    def make(node_id="controller-0", vips=tuple(VIPS.values())):
        return PacemakerNode(salt_node, tmp_path, node_id, vips)
    return make
