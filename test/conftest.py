"""Shared fixtures (temp pillar + minion, namespaces, plutos) and the test
tiers.

labkit and _utils are importable through pytest.ini's ``pythonpath``.
"""

import os
import tempfile

import pytest

from labkit import libreswan as libreswans
from labkit import netns, saltenv
from labkit.pluto import Pluto

HERE = os.path.dirname(os.path.abspath(__file__))

# --- tiers (markers registered in pytest.ini) --------------------------------
# A test's tiers follow from where it lives and what it uses, so that a new
# test is marked without anyone thinking of it: its folder, then the
# fixtures it requests (directly or through other fixtures). A test that
# starts namespaces or daemons some other way says so with an explicit
# marker. Every test ends up with at least one tier.
DIRECTORY_TIERS = {
    "unit": ("unit",),
    "lab": ("lab", "salt", "netns"),
    "vm": ("vm", "netns"),
}
FIXTURE_TIERS = {
    "namespace_factory": ("netns",),
    "pluto_factory": ("netns",),
    "salt_node": ("salt",),
    "salt_factories": ("salt",),
    # The lab's ESP phases (test/lab): the same mesh replayed in the VM.
    "esp": ("vm",),
    "esp_join": ("vm",),
}
TIERS = ("unit", "netns", "salt", "lab", "vm")


def tiers_of(item):
    """The tier markers ``item`` gets: folder, fixtures, explicit ones."""
    folder = os.path.relpath(str(item.path), HERE).split(os.sep)[0]
    found = set(DIRECTORY_TIERS.get(folder, ()))
    for name in item.fixturenames:
        found.update(FIXTURE_TIERS.get(name, ()))
    found.update(mark.name for mark in item.iter_markers() if mark.name in TIERS)
    return found


def pytest_collection_modifyitems(config, items):
    unmarked = []
    for item in items:
        found = tiers_of(item)
        if not found:
            unmarked.append(item.nodeid)
        if "unit" in found and len(found) > 1:
            raise pytest.UsageError("{}: a unit test cannot also be {}".format(
                item.nodeid, "/".join(sorted(found - {"unit"}))))
        for tier in sorted(found):
            item.add_marker(tier)
    if unmarked:
        raise pytest.UsageError("tests without a tier marker (unit, netns, salt, lab, vm; see "
                                "test/conftest.py): " + ", ".join(unmarked))


# The systemd VM test (test/vm/test_systemd_node.py) takes about 11
# minutes of one emulated core, and the rest of the suite mostly keeps one
# core busy: when it is selected, its VM starts in the background as soon
# as the session is collected, and its tests (run near the end) collect
# what it recorded. labkit.sysnode.start / collect.
SYSTEMD_NODE_TESTS = "vm/test_systemd_node.py"
_background = {}


def pytest_collection_finish(session):
    if session.config.option.collectonly:
        return
    if any(SYSTEMD_NODE_TESTS in item.nodeid for item in session.items):
        from labkit import sysnode
        job = tempfile.mkdtemp(prefix="ipsec-systemd-node-")
        _background["systemd_node"] = (sysnode.start(job), job)


@pytest.fixture(scope="session")
def systemd_node_run():
    """(process, job dir) of the systemd VM started at collection."""
    if "systemd_node" not in _background:  # pragma: no cover - collected alone by some other path
        from labkit import sysnode
        job = tempfile.mkdtemp(prefix="ipsec-systemd-node-")
        _background["systemd_node"] = (sysnode.start(job), job)
    return _background["systemd_node"]


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
