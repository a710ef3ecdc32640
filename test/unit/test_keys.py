"""Unit tests of per-tunnel keys (_utils/ipsec_keys.py): the derivation, what
each node is issued, and how the plan and the secrets files use them."""

import re

import pytest
from salt.exceptions import SaltInvocationError

import ipsec_keys
import ipsec_plan
import ipsec_render
from labkit import examples

SECRET = b"master-secret-for-unit-tests-0123456789abcdef"


def conf(**keys):
    pillar = examples.pillar()
    del pillar["psk"]
    pillar["keys"] = dict({"mode": "derived", "version": 1}, **keys)
    return pillar


def plan_of(node, pillar=None):
    pillar = pillar or conf()
    built = ipsec_plan.build_plan(pillar, node, examples.own_ips(node), cluster_node=node in examples.CLUSTER_NODES,
                                  require_psk=False)
    return built


def issued(node, pillar=None, secret=SECRET):
    pillar = pillar or conf()
    return ipsec_keys.issue(plan_of(node, pillar), secret, ipsec_keys.parse_keys(pillar)["version"])


def all_keys(tree):
    if isinstance(tree, dict):
        return [k for value in tree.values() for k in all_keys(value)]
    return [tree] if isinstance(tree, str) else []


# --- derivation ---------------------------------------------------------------

def test_both_ends_derive_the_same_key():
    assert ipsec_keys.pair_key(SECRET, 1, "internal_api", "controller-0", "compute-0") == \
        ipsec_keys.pair_key(SECRET, 1, "internal_api", "compute-0", "controller-0")
    ctl0, cmp0 = issued("controller-0"), issued("compute-0")
    for network in ("internal_api", "tenant"):
        assert ctl0["node_to_node"][network]["compute-0"] == cmp0["node_to_node"][network]["controller-0"]
    # A VIP client's key is the one every cluster node holds for it.
    ctl1 = issued("controller-1")
    for vip in ("internal_api", "redis"):
        assert cmp0["vip"][vip] == ctl0["vip_clients"][vip]["compute-0"] == ctl1["vip_clients"][vip]["compute-0"]
    assert ctl1["vip"]["storage"] == ctl0["vip_clients"]["storage"]["controller-1"]


@pytest.mark.parametrize("change", [
    dict(version=2), dict(network="storage"), dict(a="controller-2"), dict(b="compute-1"),
    dict(secret=SECRET + b"x"),
], ids=["version", "network", "first-identity", "second-identity", "master-secret"])
def test_changing_version_network_identity_or_secret_changes_the_key(change):
    base = dict(secret=SECRET, version=1, network="internal_api", a="controller-0", b="compute-0")
    key = ipsec_keys.pair_key(*base.values())
    assert ipsec_keys.pair_key(*dict(base, **change).values()) != key


def test_keys_of_different_pairs_and_kinds_differ():
    nodes = ["controller-0", "controller-1", "compute-0", "compute-1"]
    keys = [ipsec_keys.pair_key(SECRET, 1, net, a, b) for net in ("internal_api", "tenant")
            for i, a in enumerate(nodes) for b in nodes[i + 1:]]
    keys += [ipsec_keys.vip_key(SECRET, 1, "internal_api", vip, n) for vip in ("internal_api", "redis") for n in nodes]
    assert len(set(keys)) == len(keys)
    # Field boundaries count: ("ab", "c") is not ("a", "bc").
    assert ipsec_keys.pair_key(SECRET, 1, "n", "ab", "c") != ipsec_keys.pair_key(SECRET, 1, "n", "a", "bc")


def test_key_is_printable_256_bit_and_rfc5869_hkdf():
    key = ipsec_keys.pair_key(SECRET, 1, "internal_api", "a", "b")
    assert re.match(r"^[A-Za-z0-9+/]{43}=$", key)
    assert ipsec_render.psk_token(key) == '"{}"'.format(key)
    # RFC 5869 test case 3 (SHA-256, empty salt and info) through the same
    # expand loop: salt = TAG is the only difference, so check the loop with it.
    import hashlib
    import hmac
    ikm = bytes([0x0b] * 22)
    prk = hmac.new(ipsec_keys.TAG, ikm, hashlib.sha256).digest()
    t1 = hmac.new(prk, b"info\x01", hashlib.sha256).digest()
    t2 = hmac.new(prk, t1 + b"info\x02", hashlib.sha256).digest()
    assert ipsec_keys.hkdf_sha256(ikm, b"info", 42) == (t1 + t2)[:42]


def test_short_master_secret_refused():
    with pytest.raises(SaltInvocationError, match="at least 32 bytes"):
        ipsec_keys.pair_key(b"short", 1, "n", "a", "b")


# --- what each node gets -----------------------------------------------------------

def test_compute_node_gets_only_keys_of_its_own_tunnels():
    cmp0 = issued("compute-0")
    assert set(cmp0["node_to_node"]) == {"internal_api", "tenant"}
    assert all(set(peers) == {"controller-0", "controller-1"} for peers in cmp0["node_to_node"].values())
    assert set(cmp0["vip"]) == {"internal_api", "redis"} and cmp0["vip_clients"] == {}
    others = set(all_keys(issued("controller-0"))) | set(all_keys(issued("controller-1")))
    foreign = {ipsec_keys.pair_key(SECRET, 1, net, "controller-0", "controller-1")
               for net in ("internal_api", "storage", "tenant")}
    foreign |= {ipsec_keys.vip_key(SECRET, 1, "internal_api", vip, "controller-1") for vip in ("internal_api", "redis")}
    assert foreign <= others
    assert not foreign & set(all_keys(cmp0))


def test_cluster_node_gets_every_other_clients_vip_key():
    ctl0 = issued("controller-0")
    assert ctl0["vip_clients"] == {
        "internal_api": {"controller-1": ctl0["vip_clients"]["internal_api"]["controller-1"],
                         "compute-0": ctl0["vip_clients"]["internal_api"]["compute-0"]},
        "redis": {"controller-1": ctl0["vip_clients"]["redis"]["controller-1"],
                  "compute-0": ctl0["vip_clients"]["redis"]["compute-0"]},
        "storage": {"controller-1": ctl0["vip_clients"]["storage"]["controller-1"]},
    }


# --- the minion's plan and files --------------------------------------------------

def rendered(node, pillar=None):
    pillar = pillar or conf()
    pillar["keys"]["issued"] = issued(node, pillar)
    built = ipsec_keys.adapt_plan(plan_of(node, pillar), pillar)
    return built, ipsec_render.render_files(built, ipsec_keys.secret_source(pillar)), pillar


def test_derived_plan_gives_vip_clients_their_own_id_and_servers_any_id():
    built, files, _ = rendered("controller-0")
    conns = built["connections"]
    assert conns["overcloud-internal_api-node-to-vip-tunnel"]["keywords"]["leftid"] == \
        "@overcloudinternal_apicluster-controller-0"
    assert conns["overcloud-internal_api-vip-tunnel"]["keywords"]["rightid"] == "%any"
    assert built["keys"] == {"mode": "derived", "version": 1}
    text = files["/etc/ipsec.d/overcloud-internal_api-vip-tunnels.secrets"]
    ids = [line.split(" : ")[0] for line in text.splitlines() if " : PSK " in line]
    assert ids == ["@overcloudinternal_apicluster-controller-0 @internal_apivip",
                   "@internal_apivip @overcloudinternal_apicluster-compute-0",
                   "@internal_apivip @overcloudinternal_apicluster-controller-1"]


def test_secrets_files_carry_each_tunnels_own_key_and_the_plan_none():
    built, files, pillar = rendered("compute-0")
    keys = pillar["keys"]["issued"]
    text = files["/etc/ipsec.d/overcloud-internal_api-node-to-node-tunnels.secrets"]
    assert '198.51.100.20 198.51.100.10 : PSK "{}"'.format(keys["node_to_node"]["internal_api"]["controller-0"]) in text
    assert '198.51.100.20 198.51.100.11 : PSK "{}"'.format(keys["node_to_node"]["internal_api"]["controller-1"]) in text
    plan_text = repr(built)
    for key in all_keys(keys):
        assert key not in plan_text
        holders = [path for path, body in files.items() if key in body]
        assert holders and all(path.endswith(".secrets") for path in holders)


def test_shared_mode_is_the_default_and_unchanged():
    pillar = examples.pillar()
    built = ipsec_plan.build_plan(pillar, "controller-0", examples.own_ips("controller-0"), cluster_node=True)
    before = repr(built)
    assert ipsec_keys.adapt_plan(built, pillar) is built and repr(built) == before
    assert ipsec_keys.secret_source(pillar) == examples.PSK


@pytest.mark.parametrize("mutate, message", [
    (lambda p: p["keys"].update(mode="perfect"), "ipsec:keys:mode: 'perfect' must be shared or derived"),
    (lambda p: p["keys"].update(version="2"), "ipsec:keys:version: '2' must be a positive integer"),
    (lambda p: p["keys"].update(version=0), "ipsec:keys:version: 0 must be a positive integer"),
    (lambda p: p["keys"].update(verison=2), "ipsec:keys:verison: unknown key"),
    (lambda p: p.update(keys=[1]), "ipsec:keys: must be a mapping"),
])
def test_bad_keys_pillar_names_the_key(mutate, message):
    pillar = conf()
    mutate(pillar)
    with pytest.raises(SaltInvocationError, match=re.escape(message)):
        ipsec_keys.parse_keys(pillar)


@pytest.mark.parametrize("issue, message", [
    (None, "ipsec:keys:issued: is missing"),
    ({"version": 1, "error": "secret_file /x: No such file"}, "the master could not issue keys: secret_file /x"),
    ({"version": 2}, "ipsec:keys:issued:version: is 2, the pillar asks for 1"),
])
def test_missing_or_stale_issued_keys_fail_naming_the_key(issue, message):
    pillar = conf()
    if issue is not None:
        pillar["keys"]["issued"] = issue
    with pytest.raises(SaltInvocationError, match=re.escape(message)):
        ipsec_keys.secret_source(pillar)


def test_missing_key_of_one_tunnel_fails_the_render_naming_it():
    pillar = conf()
    pillar["keys"]["issued"] = issued("compute-0", pillar)
    del pillar["keys"]["issued"]["node_to_node"]["tenant"]["controller-1"]
    built = ipsec_keys.adapt_plan(plan_of("compute-0", pillar), pillar)
    with pytest.raises(SaltInvocationError, match="ipsec:keys:issued:node_to_node:tenant:controller-1: no key"):
        ipsec_render.render_files(built, ipsec_keys.secret_source(pillar))


def test_psk_left_in_derived_mode_is_warned_about():
    pillar = conf()
    pillar["psk"] = examples.PSK
    built = ipsec_keys.adapt_plan(plan_of("compute-0", pillar), pillar)
    assert any(w.startswith("ipsec:psk: ignored") for w in built["warnings"])
