"""Shared fixtures: the repo on sys.path, temp pillar + minion, namespaces."""

import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
for path in (HERE, os.path.join(REPO, "_utils")):
    if path not in sys.path:
        sys.path.insert(0, path)

from labkit import libreswan as libreswans  # noqa: E402
from labkit import netns, saltenv  # noqa: E402
from labkit.pluto import Pluto  # noqa: E402

# Long enough for every test key check.
PSK = "test-psk-Zq8v1XbN3mKp7RtY5wLc2HdJ9sFg4"


@pytest.fixture(scope="session", autouse=True)
def _sweep_namespaces():
    netns.sweep_stale()
    yield


@pytest.fixture
def namespace_factory():
    created = []

    def make(label):
        ns = netns.Namespace(label)
        created.append(ns)
        return ns

    yield make
    for ns in created:
        ns.close()


@pytest.fixture
def libreswan():
    """The Libreswan install (labkit.libreswan) plutos run and the formula's
    lookup points at: Debian's 4.10. The tiers that run against every
    install (test/integration, test/vm, the agent tests) override this
    fixture with ``libreswan_each``."""
    return libreswans.get(libreswans.SYSTEM)


@pytest.fixture(scope="session", params=libreswans.LABELS)
def libreswan_each(request):
    """Each install in turn, test ids "4.10" and "5.3.2" (the vendored
    5.3.2 is built on first use, then cached: tools/build-libreswan.sh).
    Session scope: module fixtures (test/vm's proof) can take it too."""
    return libreswans.get(request.param)


@pytest.fixture
def pluto_factory(libreswan):
    started = []

    def make(root, netns_name=None):
        instance = Pluto(root, netns_name, libreswan)
        started.append(instance)
        return instance

    yield make
    for instance in started:
        instance.stop()


@pytest.fixture
def salt_node(salt_factories, tmp_path):
    """Make a salt-call --local minion with its own pillar dir and grains."""
    made = []

    def make(node_id, addresses, pillar):
        pillar_dir = tmp_path / "pillar-{}".format(node_id)
        saltenv.write_pillar(pillar_dir, pillar)
        factory = salt_factories.salt_minion_daemon(
            node_id, overrides=saltenv.minion_overrides(pillar_dir, saltenv.node_grains(addresses))
        )
        factory.pillar_dir = pillar_dir
        made.append(factory)
        return factory

    return make


@pytest.fixture(scope="session")
def salt_factories_config(tmp_path_factory):
    return {"root_dir": str(tmp_path_factory.mktemp("salt-root"))}


def pytest_unconfigure(config):
    # Salt's log handlers flush at interpreter exit into streams pytest has
    # already closed, printing "--- Logging error ---" blocks after the
    # summary; they carry nothing about the tests (and would bury pytest's
    # closing line).
    import logging

    logging.raiseExceptions = False
