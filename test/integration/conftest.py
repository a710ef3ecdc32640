"""The pluto integration tests run against every Libreswan install."""

import pytest


@pytest.fixture
def libreswan(libreswan_each):
    return libreswan_each
