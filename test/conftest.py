"""Shared fixtures: the repo on sys.path, temp pillar + minion, namespaces."""

import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
for path in (HERE, os.path.join(REPO, "_utils")):
    if path not in sys.path:
        sys.path.insert(0, path)

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
def pluto_factory():
    started = []

    def make(root, netns_name=None):
        instance = Pluto(root, netns_name)
        started.append(instance)
        return instance

    yield make
    for instance in started:
        instance.stop()


@pytest.fixture
def salt_node(salt_factories, tmp_path):
    """Make a salt-call --local minion with its own pillar dir and grains."""
    made = []

    def make(node_id, addresses, pillar, overrides=None):
        pillar_dir = tmp_path / "pillar-{}".format(node_id)
        saltenv.write_pillar(pillar_dir, pillar)
        settings = saltenv.minion_overrides(pillar_dir, saltenv.node_grains(addresses))
        settings.update(overrides or {})
        factory = salt_factories.salt_minion_daemon(node_id, overrides=settings)
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
