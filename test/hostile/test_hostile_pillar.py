"""Property-based tests: random and adversarial pillars.

For every generated pillar: either a SaltInvocationError naming an
``ipsec:`` key, or a plan whose rendered files contain only lines of the
formula's own shapes built from validated values, and (for a sample) that a
real pluto loads without a single failure. Never any other exception.

Example counts are printed at the end of the run (``-s`` or the summary in
``make test`` output) and recorded in README.
"""

import os
import re
import subprocess

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from salt.exceptions import SaltInvocationError

import ipsec_plan
import ipsec_render

COUNTS = {"plans": 0, "refused": 0, "loaded_by_pluto": 0, "refused_by_algparse": 0}

# --- strategies -----------------------------------------------------------

NASTY_TEXT = st.sampled_from([
    "", " ", "a b", 'q"uote', "new\nline", "nul\x00", "tab\tx", "#comment", "ünïcødé", "x" * 300,
    "conn evil", "also=x", "\n\tauto=ignore", "%any", "@id", "'single'", "a;b", "$(reboot)", "`id`",
])
TEXT = st.one_of(NASTY_TEXT, st.text(max_size=20))
ANY_SCALAR = st.one_of(st.none(), st.booleans(), st.integers(-10, 2 ** 40), st.floats(allow_nan=False), TEXT,
                       st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))

V4_HOSTS = ["198.51.100.{}".format(i) for i in (1, 2, 3, 10, 77, 100, 200)] + ["203.0.113.{}".format(i) for i in (1, 5, 9)]
V6_HOSTS = ["2001:db8::1", "2001:db8::2", "2001:db8::a", "2001:DB8:0:0::3", "2001:db8:1::1"]
ADDRESS = st.one_of(st.sampled_from(V4_HOSTS + V6_HOSTS), ANY_SCALAR, st.sampled_from(["198.51.100.1/24", "::", "0.0.0.0", "1"]))
CIDR = st.one_of(
    st.sampled_from([
        "198.51.100.0/24", "198.51.100.0/25", "198.51.100.128/25", "203.0.113.0/24", "2001:db8::/64",
        "2001:db8:1::/64", "198.51.100.5/24", "2001:db8::1/64", "198.51.100.0/33", "198.51.100.0", "::/0",
    ]),
    ANY_SCALAR,
)
NET_NAMES = st.one_of(st.sampled_from(["internal_api", "storage", "tenant", "ctlplane", "net-1"]), TEXT)
ALGORITHMS = st.one_of(
    st.sampled_from([
        "aes_gcm128-null", "aes_gcm256-null", "aes256-sha2_512", "aes-sha1", "chacha20_poly1305",
        "aes_gcm128-sha1", "aes-null", "vanity", "aes;reboot", "aes\nconn x", "aes gcm", "aes_gcm128-null,aes-sha1",
    ]),
    TEXT,
)
KEYWORDS = st.one_of(
    st.sampled_from(["ikelifetime", "rekey", "mtu", "left", "rightid", "also", "auto", "dpddelay",
                     "retransmit-timeout", "ike", "Left", "auto=add\nconn x", "bad key", "x" * 70]),
    TEXT,
)
OPTION_VALUES = st.one_of(st.sampled_from(["8h", "yes", "no", "1400", "30s", "add", "start"]), ANY_SCALAR)


def network_entry():
    return st.fixed_dictionaries(
        {"cidr": CIDR},
        optional={
            "vip": ADDRESS,
            "algorithm": ALGORITHMS,
            "conn_options": st.dictionaries(KEYWORDS, OPTION_VALUES, max_size=3),
            "typo_key": ANY_SCALAR,
        },
    )


VALID_NETWORKS = {
    "internal_api": {"cidr": "198.51.100.0/25", "vip": "198.51.100.100"},
    "ctlplane": {"cidr": "198.51.100.128/25"},
    "storage": {"cidr": "203.0.113.0/24", "vip": "203.0.113.100"},
    "tenant": {"cidr": "2001:db8::/64"},
}
PEER_ADDRESSES = {
    "internal_api": ["198.51.100.{}".format(i) for i in range(2, 12)],
    "ctlplane": ["198.51.100.{}".format(i) for i in range(130, 140)],
    "storage": ["203.0.113.{}".format(i) for i in range(2, 12)],
    "tenant": ["2001:db8::{:x}".format(i) for i in range(2, 12)],
}
GOOD_VALUES = {
    "ikelifetime": ["8h", "3600s", "1d"], "rekey": ["yes", "no", True], "mtu": ["1400", 1500],
    "dpddelay": ["5", "10s"], "retransmit-timeout": ["30s", "2m"], "auto": ["add", "start", "ondemand"],
    "keyingtries": ["0", 3], "pfs": ["yes", False], "failureshunt": ["drop", "passthrough"],
    "rekeyfuzz": ["50%", "100%"], "ipsec-lifetime": ["1h"], "esn": ["either"],
}
GOOD_OPTIONS = st.dictionaries(
    st.sampled_from(sorted(GOOD_VALUES)),
    st.none(),
    max_size=3,
).flatmap(lambda keys: st.fixed_dictionaries(
    {k: st.one_of(st.sampled_from(GOOD_VALUES[k]), st.none()) for k in keys}))
GOOD_ALGORITHMS = st.sampled_from(["aes_gcm128-null", "aes_gcm256-null", "aes256-sha2_512", "aes-sha1",
                                   "chacha20_poly1305", "aes_gcm128-null,aes-sha1"])


@st.composite
def valid_pillars(draw):
    """A well-formed pillar with random shape (which networks, peers, VIPs,
    options, PSK characters)."""
    names = draw(st.lists(st.sampled_from(sorted(VALID_NETWORKS)), min_size=1, max_size=4, unique=True))
    networks = {}
    for name in names:
        entry = dict(VALID_NETWORKS[name])
        if "vip" in entry and draw(st.booleans()):
            del entry["vip"]
        if draw(st.integers(0, 3)) == 0:
            entry["algorithm"] = draw(GOOD_ALGORITHMS)
        if draw(st.integers(0, 3)) == 0:
            entry["conn_options"] = draw(GOOD_OPTIONS)
        networks[name] = entry
    nodes = {"self": {"addresses": {n: {"internal_api": "198.51.100.1", "ctlplane": "198.51.100.129",
                                        "storage": "203.0.113.1", "tenant": "2001:db8::1"}[n] for n in names}}}
    for index in range(draw(st.integers(0, 4))):
        on = draw(st.lists(st.sampled_from(names), unique=True, max_size=len(names)))
        nodes["peer-{}".format(index)] = {"addresses": {n: PEER_ADDRESSES[n][index] for n in on}}
    pillar = {
        "psk": draw(st.text(min_size=32, max_size=64)),
        "networks": networks,
        "nodes": nodes,
        "algorithm": draw(GOOD_ALGORITHMS),
        "conn_options": draw(GOOD_OPTIONS),
    }
    if "internal_api" in names and draw(st.booleans()):
        pillar["extra_vips"] = {"redis": {"network": "internal_api", "address": "198.51.100.101"}}
    if "ctlplane" in names and draw(st.booleans()):
        pillar["skip_networks"] = draw(st.lists(st.sampled_from(names), unique=True))
    if draw(st.booleans()):
        pillar["prefix"] = draw(st.sampled_from(["overcloud", "oc", "x-1", "cluster_a"]))
    return pillar


def _paths(value, path=()):
    """Every (path) inside a nested dict, to pick a mutation point."""
    found = [path]
    if isinstance(value, dict):
        for key, item in value.items():
            found.extend(_paths(item, path + (key,)))
    return found


@st.composite
def pillars(draw):
    """Mostly valid pillars, each with 0-2 hostile mutations anywhere."""
    pillar = draw(valid_pillars())
    for _ in range(draw(st.sampled_from([0, 0, 1, 1, 1, 2]))):
        path = draw(st.sampled_from(_paths(pillar)[1:]))
        parent = pillar
        for key in path[:-1]:
            parent = parent[key]
        action = draw(st.sampled_from(["replace", "replace", "add_key", "delete"]))
        if action == "replace":
            parent[path[-1]] = draw(st.one_of(ANY_SCALAR, ADDRESS, CIDR, ALGORITHMS, NASTY_TEXT))
        elif action == "add_key" and isinstance(parent, dict):
            parent[draw(st.one_of(KEYWORDS, NET_NAMES))] = draw(st.one_of(ANY_SCALAR, OPTION_VALUES, network_entry()))
        elif action == "delete":
            del parent[path[-1]]
    return pillar


OWN_IPS = ["198.51.100.1", "198.51.100.129", "203.0.113.1", "2001:db8::1"]

# --- what a rendered line may look like ------------------------------------

CONN_LINE = re.compile(r"^conn [A-Za-z0-9_.:-]+$")
KEYWORD_LINE = re.compile(r'^\t[a-z][a-z0-9_-]*=(?:[\x21\x24-\x7e]+|"[\x20\x21\x24-\x7e]+")$')
SECRET_LINE = re.compile(r'^(?:(?:"[0-9a-f:]+"|[0-9.]+|@[A-Za-z0-9_-]+) )+: PSK (?:"[\x20\x21\x23-\x7e]+"|0s[A-Za-z0-9+/=]+)$')


def check_rendered(plan, files):
    for path, text in files.items():
        assert path.startswith("/etc/ipsec.d/") and "\n" not in path and " " not in path
        for line in text.splitlines():
            if not line or line.startswith("# "):
                continue
            if path.endswith(".conf"):
                assert CONN_LINE.match(line) or KEYWORD_LINE.match(line), (path, line)
            else:
                assert SECRET_LINE.match(line), (path, line)
    # Every conn line names a planned conn; every keyword line is one of the
    # plan's keywords (so it came from a validated value).
    for name, conn in plan["connections"].items():
        block = "conn {}\n".format(name) + "".join(
            "\t{}={}\n".format(k, ipsec_render.format_value(v)) for k, v in conn["keywords"].items()
        )
        assert block in files[conn["file"]]


def plan_or_refusal(pillar):
    try:
        plan = ipsec_plan.build_plan(pillar, "self", OWN_IPS, cluster_node=True)
    except SaltInvocationError as exc:
        message = str(exc)
        assert message.startswith("ipsec:"), message
        assert "\n" not in message.split(":", 1)[0]
        COUNTS["refused"] += 1
        return None
    COUNTS["plans"] += 1
    return plan


@pytest.mark.unit
@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(pillars())
def test_hostile_pillar_is_refused_or_renders_only_validated_lines(pillar):
    plan = plan_or_refusal(pillar)
    if plan is None:
        return
    psk = pillar["psk"]
    files = ipsec_render.render_files(plan, psk)
    check_rendered(plan, files)
    if any(c in psk for c in '"\n\x00') or not psk.isascii():
        for path, text in files.items():
            assert psk not in text


# --- the same, loaded by a real pluto --------------------------------------

ALGPARSE = "/usr/libexec/ipsec/algparse"


def algparse_rejects(pillar):
    for _, kind, proposal in ipsec_plan.algorithm_sources(pillar):
        result = subprocess.run([ALGPARSE, "-v2", "{}={}".format(kind, proposal)], capture_output=True, text=True)
        if result.returncode != 0 or "ERROR" in result.stdout:
            return True
    return False


@pytest.fixture(scope="module")
def running_pluto(tmp_path_factory):
    from labkit import netns
    from labkit.pluto import Pluto

    ns = netns.Namespace("hyp")
    ns.add_stub(["198.51.100.1/24", "203.0.113.1/24", "2001:db8::1/64"])
    pluto = Pluto(tmp_path_factory.mktemp("hostile-pluto"), ns.name)
    with open(pluto.config_file, "w") as handle:
        handle.write("config setup\n\tuniqueids=no\n")
    open(pluto.secrets_file, "w").close()
    pluto.start()
    yield pluto
    pluto.stop()
    ns.close()
    print("\nhostile pillars: {plans} planned, {refused} refused by the plan, "
          "{refused_by_algparse} refused by algparse, {loaded_by_pluto} loaded by pluto".format(**COUNTS))


@pytest.mark.netns  # running_pluto: its own namespace
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                                   HealthCheck.function_scoped_fixture])
@given(pillar=pillars())
def test_hostile_pillar_plan_loads_into_real_pluto(pillar, running_pluto):
    plan = plan_or_refusal(pillar)
    if plan is None or not plan["connections"]:
        return
    if algparse_rejects(pillar):
        COUNTS["refused_by_algparse"] += 1
        return
    pluto = running_pluto
    files = ipsec_render.render_files(
        {**plan, "files": {p.replace("/etc/ipsec.d", pluto.config_dir): m for p, m in plan["files"].items()},
         "connections": {n: {**c, "file": c["file"].replace("/etc/ipsec.d", pluto.config_dir)}
                         for n, c in plan["connections"].items()},
         "secrets": [{**s, "file": s["file"].replace("/etc/ipsec.d", pluto.config_dir)} for s in plan["secrets"]]},
        pillar["psk"],
    )
    config = os.path.join(pluto.root, "hostile.conf")
    with open(config, "w") as handle:
        handle.write("config setup\n\tuniqueids=no\n")
        for path, text in files.items():
            if path.endswith(".conf"):
                handle.write("\n" + text)
    names = list(plan["connections"])
    added = pluto.run("addconn", "--config", config, "--ctlsocket", pluto.ctlsocket, *names)
    try:
        output = added.stdout + added.stderr
        assert added.returncode == 0, output
        assert "failed" not in output and "ERROR" not in output, output
        assert set(names) <= pluto.connection_names()
        COUNTS["loaded_by_pluto"] += 1
    finally:
        for name in names:
            pluto.whack("--name", name, "--delete")
