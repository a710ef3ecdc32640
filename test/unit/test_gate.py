"""The one gate (_utils/ipsec_plan.py) over every string field of the pillar
and of ipsec:lookup: a value with a line break, a control character or a
Unicode line separator anywhere is refused naming its pillar key, never
taken (Python's ``$`` matches before a final newline, and a YAML ``|``
block gives exactly that). Plus the other classes of the red-team review:
malformed mine entries, PSKs Libreswan cannot read, conn name collisions,
typed booleans."""

import copy

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from salt.exceptions import SaltInvocationError

import ipsec_events
import ipsec_plan
from labkit import examples

BAD = ["\n", "\r", "\t", "\x00", "\x0b", "\x0c", "\x85", "\u2028", "\u2029", "\x1b"]
NODE = "controller-0"


def full_pillar():
    """The example pillar with every optional key set."""
    pillar = examples.pillar(
        lookup={"pacemaker": {"cib_file": "/var/lib/pacemaker/cib/cib.xml"}},
        prefix="overcloud", algorithm="aes_gcm128-null", ike_algorithm="aes256-sha2_512",
        control_plane="ctlplane", skip_networks=["redis"], libreswan_version="4.10",
        conn_options={"dpddelay": "10s"}, config_setup={"plutodebug": "all crypt", "logfile": "/var/log/p.log"},
        cluster={"nodes": ["controller-0", "controller-1"]},
        pacemaker={"manage": True, "resource_prefix": "tripleo-ipsec", "vip_resource": "ip-{address}",
                   "apply_from": "controller-0", "monitor_interval": "10s"},
        firewall={"manage": True, "backend": "nftables", "table": "ipsec_formula", "persist": True},
        clean={"remove_package": False},
        mine={"target": "*", "tgt_type": "glob", "function": "ipsec.addresses"},
        beacon={"enabled": True, "level": "ike"},
        metrics={"enabled": True, "directory": "/var/lib/prometheus/node-exporter", "file": "ipsec.prom"},
    )
    pillar["networks"]["storage"].update(algorithm="aes_gcm256-null", ike_algorithm="aes256-sha2_256",
                                         conn_options={"rekey": "yes"})
    pillar["lookup"].update({name: value for name, value in ipsec_plan.DEFAULT_LOOKUP.items()
                             if not isinstance(value, dict)})
    pillar["lookup"]["pkg"] = dict(ipsec_plan.DEFAULT_LOOKUP["pkg"])
    pillar["lookup"]["service"] = dict(ipsec_plan.DEFAULT_LOOKUP["service"])
    pillar["lookup"]["firewall"] = dict(ipsec_plan.DEFAULT_LOOKUP["firewall"])
    pillar["lookup"]["pacemaker"].update(ocf_root="/usr/lib/ocf", provider="ipsec-formula", agent="vip-tunnel")
    return pillar


def plan(pillar, **kwargs):
    """The gate as ipsec.build runs it: the plan, then the events settings."""
    built = ipsec_plan.build_plan(pillar, NODE, examples.own_ips(NODE), cluster_node=True, **kwargs)
    built["events"] = ipsec_events.pillar_settings(pillar)
    return built


def string_leaves(value, path=()):
    """(path, value) of every string value, (path + ("<key>",), key) of every
    mapping key: all the strings a pillar holds."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield path + ("<key>", key), key
            yield from string_leaves(item, path + (key,))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from string_leaves(item, path + (index,))
    elif isinstance(value, str):
        yield path, value


def replaced(pillar, path, new):
    """A copy of ``pillar`` with the string at ``path`` (a key if the path
    ends with ``("<key>", old)``) replaced by ``new``."""
    pillar = copy.deepcopy(pillar)
    if len(path) >= 2 and path[-2] == "<key>":
        parent = pillar
        for step in path[:-2]:
            parent = parent[step]
        parent[new] = parent.pop(path[-1])
        return pillar
    parent = pillar
    for step in path[:-1]:
        parent = parent[step]
    parent[path[-1]] = new
    return pillar


def key_of(path):
    """The pillar key a message must name (the mapping keys, no indexes)."""
    steps = [str(step) for step in path if not isinstance(step, int)]
    if len(steps) >= 2 and steps[-2] == "<key>":
        steps = steps[:-2]
    return "ipsec:" + ":".join(steps)


FIELDS = [(path, value) for path, value in string_leaves(full_pillar()) if path != ("psk",)]


def test_the_full_pillar_plans_cleanly():
    assert plan(full_pillar())["connections"]
    assert len(FIELDS) > 60


@pytest.mark.parametrize("path,value", FIELDS, ids=["/".join(map(str, p)) for p, _ in FIELDS])
def test_every_string_field_refuses_line_breaks_and_control_characters(path, value):
    """At the end (the YAML `|` case), at the start and in the middle."""
    for bad in BAD:
        for new in (value + bad, bad + value, value[:1] + bad + value[1:]):
            with pytest.raises(SaltInvocationError) as error:
                plan(replaced(full_pillar(), path, new))
            message = str(error.value)
            assert message.startswith("ipsec:"), message
            # The key named is the field's or one of its parents (a bad
            # mapping key is reported on its mapping).
            named = message.split(": ", 1)[0]
            assert key_of(path).startswith(named) or named.startswith(key_of(path)), (path, message)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(field=st.sampled_from(FIELDS), text=st.text(min_size=0, max_size=40))
def test_any_text_in_any_field_is_refused_naming_a_key_or_is_clean(field, text):
    path, _ = field
    try:
        built = plan(replaced(full_pillar(), path, text))
    except SaltInvocationError as error:
        assert str(error).startswith("ipsec:")
        return
    assert not any(ord(char) < 0x20 or char in "\x7f\x85\u2028\u2029" for char in text), (path, text)
    assert built["connections"]


LOOKUP_ATTACKS = {
    "nss_dir": "/x; touch /tmp/PWNED;",
    "config_dir": "/etc/ipsec.d/../../tmp",
    "secrets_file": None,
    "config_file": "/etc/ipsec.conf #site",
    "ctlsocket": "run/pluto/pluto.ctl",
    "ipsec_bin": "/usr/sbin/ipsec --help",
    "rundir": "/",
    "algparse": "",
}


@pytest.mark.parametrize("name,value", sorted(LOOKUP_ATTACKS.items(), key=str))
def test_lookup_paths_are_absolute_normalised_and_plain(name, value):
    pillar = examples.pillar(lookup={name: value})
    with pytest.raises(SaltInvocationError, match="^ipsec:lookup:{}: ".format(name)):
        plan(pillar)


@pytest.mark.parametrize("section,name,value", [
    ("pacemaker", "agent", "../../../../file"), ("pacemaker", "provider", "a/b"),
    ("pacemaker", "ocf_root", "usr/lib/ocf"), ("pkg", "name", "-libreswan"), ("service", "name", "ipsec;id"),
    ("pkg", "manage", "false"), ("service", "manage", "no"),
    ("firewall", "nft_conf", "etc/nftables.conf"), ("firewall", "nft_file", "/etc/x.nft\n"),
    ("firewall", "nft_service", "nftables;reboot"), ("firewall", "iptables_rules_v4", "/etc/iptables/../x y"),
])
def test_lookup_names_and_flags(section, name, value):
    pillar = examples.pillar(lookup={section: {name: value}})
    with pytest.raises(SaltInvocationError, match="^ipsec:lookup:{}:{}: ".format(section, name)):
        plan(pillar)


@pytest.mark.parametrize("key,value", [
    ("clean", {"remove_package": "false"}), ("firewall", {"manage": "false"}), ("firewall", {"persist": "no"}),
    ("pacemaker", {"manage": 1}),
    ("cluster", {"detect": "yes"}),
])
def test_booleans_are_typed(key, value):
    """The string "false" is truthy: it once removed the package."""
    with pytest.raises(SaltInvocationError, match="must be true or false"):
        plan(examples.pillar(**{key: value}))


def test_settings_validate_without_the_rest_of_the_pillar():
    """ipsec.clean reads only these: they work with broken networks."""
    settings_ = ipsec_plan.parse_settings({"networks": "broken", "prefix": "old", "clean": {"remove_package": True}})
    assert settings_["prefix"] == "old" and settings_["clean"] == {"remove_package": True}
    with pytest.raises(SaltInvocationError, match="^ipsec:prefix: "):
        ipsec_plan.parse_settings({"prefix": "*"})


MALFORMED_MINE = [
    ["198.51.100.24"], {"internal_api": ["198.51.100.24"]}, {"internal_api": {"a": 1}},
    {"internal_api": 3232235777}, {"internal_api": None}, {"internal_api": 3.5}, {7: "198.51.100.24"},
    {"internal_api": "198.51.100.24\n"}, "198.51.100.24", None, 42,
]


@pytest.mark.parametrize("entry", MALFORMED_MINE, ids=repr)
def test_one_malformed_mine_entry_is_ignored_with_a_warning(entry):
    mine = {"controller-1": {"internal_api": "198.51.100.11"}, "bad-minion": entry}
    pillar = examples.pillar()
    del pillar["nodes"]
    built = plan(pillar, mine_data=mine)
    assert "controller-1" in built["networks"]["internal_api"]["peers"]
    assert "bad-minion" not in built["networks"]["internal_api"]["peers"]
    if entry not in ({7: "198.51.100.24"},):
        assert any("bad-minion" in warning for warning in built["warnings"]), built["warnings"]


def test_a_malformed_mine_answer_or_minion_id():
    pillar = examples.pillar()
    del pillar["nodes"]
    for mine in (["x"], {("a",): {}}, {"bad id\n": {"internal_api": "198.51.100.11"}}):
        built = plan(pillar, mine_data=mine)
        assert built["warnings"] and not built["networks"]["internal_api"]["peers"]


def test_psk_limits_name_the_key_and_never_echo_it():
    longest = "p" * (ipsec_plan.MAX_PSK_TOKEN - 2)
    assert plan(examples.pillar(psk=longest))
    for psk in ("p" * (ipsec_plan.MAX_PSK_TOKEN - 1), "é" * 600, "\"" * 1000, "x" * 3000,
                "abc\ud800" + "x" * 40):
        with pytest.raises(SaltInvocationError) as error:
            plan(examples.pillar(psk=psk))
        assert str(error.value).startswith("ipsec:psk: ")
        assert psk not in str(error.value) and psk[:32] not in str(error.value)


@given(name=st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_-]{0,20}", fullmatch=True))
@settings(max_examples=300, deadline=None)
def test_conn_names_never_collide(name):
    """Any extra VIP name: the plan's conn names are unique, or the VIP is
    refused naming it (internal_api-node-to made a server conn named like
    internal_api's client conn)."""
    pillar = examples.pillar()
    pillar["extra_vips"] = {name: {"network": "internal_api", "address": "198.51.100.102"}}
    try:
        built = plan(pillar)
    except SaltInvocationError as error:
        assert str(error).startswith(("ipsec:extra_vips", "ipsec:networks")), str(error)
        return
    names = [conn for conn in built["connections"]]
    assert len(names) == len(set(names))


def test_the_reported_collision():
    pillar = examples.pillar()
    pillar["extra_vips"] = {"internal_api-node-to": {"network": "internal_api", "address": "198.51.100.102"}}
    with pytest.raises(SaltInvocationError, match=r"^ipsec:(extra_vips:internal_api-node-to|networks:internal_api"
                                                  r":vip): gives a conn named overcloud-internal_api-node-to-vip-tunnel"):
        plan(pillar)
    # on a node that is not a cluster node too (it failed late there)
    with pytest.raises(SaltInvocationError):
        ipsec_plan.build_plan(pillar, "compute-0", examples.own_ips("compute-0"), cluster_node=False)


def test_tripleo_variable_names_are_refused_naming_the_formula_key():
    with pytest.raises(SaltInvocationError, match=r"^ipsec:ipsec_algorithm: is TripleO's variable.*ipsec:algorithm"):
        plan(examples.pillar(ipsec_algorithm="aes_gcm256-null"))
