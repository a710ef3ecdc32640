"""The Libreswan installs the suite runs against.

- "4.10": Debian 12's package (``/usr/sbin/ipsec``, algparse as its own
  program under ``/usr/libexec/ipsec``).
- "5.3.2": the vendored source (``../shared/vendor/libreswan-5.3.2.tar.gz``
  beside the checkout) built by ``tools/build-libreswan.sh`` into the
  checkout's ignored ``.cache/libreswan-5.3.2`` (the first use builds it,
  ~35 s; later uses find it). Its PREFIX is compiled in, and the VM sees the
  host's root at the same paths, so the same install runs there.

``get(label)`` returns a ``Libreswan``; tests take one through the
``libreswan`` fixture (test/conftest.py), whose ids are these labels.
Only light imports: the VM's Python imports this too.
"""

import os
import subprocess

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD_SCRIPT = os.path.join(REPO, "tools", "build-libreswan.sh")
SYSTEM = "4.10"
VENDORED = "5.3.2"
LABELS = (SYSTEM, VENDORED)


class Libreswan:
    """One install: ``ipsec_bin`` (the ``ipsec`` command), ``algparse``
    (the lookup's algparse path; 5.x runs it as ``ipsec algparse``) and
    ``version``/``major`` as ``ipsec --version`` reports them."""

    def __init__(self, label, ipsec_bin, algparse):
        self.label = label
        self.ipsec_bin = ipsec_bin
        self.algparse = algparse
        out = subprocess.run([ipsec_bin, "--version"], capture_output=True, text=True, check=True).stdout
        # "Libreswan 4.10" / "Libreswan 5.3.2"
        self.version = out.split()[1] if out.startswith("Libreswan ") else None
        if self.version != label:
            raise RuntimeError("{} says {!r}, expected Libreswan {}".format(ipsec_bin, out.strip(), label))
        self.major = int(self.version.split(".")[0])

    @property
    def whack_bin(self):
        """``whack`` itself, beside algparse: the ``ipsec`` front end is a
        shell script that costs a second more per call under emulation
        (1.6 s against 0.5 s in the VM), and the lab polls pluto often."""
        return os.path.join(os.path.dirname(self.algparse), "whack")

    def lookup(self):
        """The ``ipsec:lookup`` keys that point the formula at this install."""
        return {"ipsec_bin": self.ipsec_bin, "algparse": self.algparse}

    def env(self):
        """Environment naming this install to a child process (esp_proof,
        in the VM too: paths are the host's there)."""
        return {"LABKIT_LIBRESWAN": self.label, "LABKIT_IPSEC_BIN": self.ipsec_bin,
                "LABKIT_ALGPARSE": self.algparse}

    def __repr__(self):
        return "Libreswan({} at {})".format(self.version, self.ipsec_bin)


_made = {}


def build(version=VENDORED):
    """The PREFIX of the vendored build (built once, then cached)."""
    out = subprocess.run([BUILD_SCRIPT, version], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError("building Libreswan {} failed:\n{}".format(version, out.stderr[-4000:]))
    return out.stdout.strip().splitlines()[-1]


def get(label=None):
    """The install named ``label`` (default: $LABKIT_LIBRESWAN, else 4.10);
    builds the vendored one if needed."""
    label = label or os.environ.get("LABKIT_LIBRESWAN") or SYSTEM
    if label not in _made:
        if label == os.environ.get("LABKIT_LIBRESWAN") and os.environ.get("LABKIT_IPSEC_BIN"):
            # Named by a parent process (env()): no build check here.
            _made[label] = Libreswan(label, os.environ["LABKIT_IPSEC_BIN"], os.environ["LABKIT_ALGPARSE"])
        elif label == SYSTEM:
            _made[label] = Libreswan(label, "/usr/sbin/ipsec", "/usr/libexec/ipsec/algparse")
        elif label == VENDORED:
            prefix = build(label)
            _made[label] = Libreswan(label, os.path.join(prefix, "sbin", "ipsec"),
                                     os.path.join(prefix, "libexec", "ipsec", "algparse"))
        else:
            raise KeyError("unknown Libreswan {!r} (known: {})".format(label, ", ".join(LABELS)))
    return _made[label]
