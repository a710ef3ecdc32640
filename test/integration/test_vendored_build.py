"""The vendored Libreswan build stays inside its PREFIX.

By default Libreswan's ``make install-base`` writes ``ipsec.service`` and
``tmpfiles.d/libreswan.conf`` over the distribution's own and runs
``systemctl daemon-reload``: the system's ``ipsec.service`` then started
the test build's pluto (seen on this machine, and it would have made the
systemd VM test boot the wrong pluto). tools/build-libreswan.sh turns that
off; this checks the files Debian's package owns are still Debian's.
"""

import subprocess

import pytest

from labkit import libreswan as libreswans


# Not the unit tier: the first use builds Libreswan (35 s). It runs with
# the pluto tiers, which build it anyway.
@pytest.mark.netns
def test_building_5x_leaves_the_distribution_files_of_libreswan_alone():
    install = libreswans.get(libreswans.VENDORED)  # builds it when missing
    assert install.ipsec_bin.startswith(libreswans.REPO)
    # dpkg --verify prints one line per file that differs from the package.
    changed = subprocess.run(["dpkg", "--verify", "libreswan"], capture_output=True, text=True).stdout
    assert "ipsec.service" not in changed and "tmpfiles.d" not in changed, changed
    with open("/lib/systemd/system/ipsec.service", encoding="utf-8") as handle:
        unit = handle.read()
    assert "ExecStart=/usr/libexec/ipsec/pluto " in unit, unit
