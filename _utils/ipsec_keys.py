"""
Per-tunnel keys for ipsec-formula: pure logic, no I/O.

Two modes, chosen by pillar ``ipsec:keys:mode``:

- ``shared`` (default): every secrets entry carries the one ``ipsec:psk``.
- ``derived``: the master holds one secret; its ext_pillar
  (``_pillar/ipsec_keys.py``) derives the key of every tunnel with
  HKDF-SHA256 and gives each minion, under ``ipsec:keys:issued``, only the
  keys of the tunnels it is an end of:

  - node to node: one key per (network, sorted pair of minion ids); both
    ends derive the same key, no third node learns it;
  - VIP tunnels: one key per (VIP, client). Each client presents its own ID
    toward the VIP (``@<prefix><vip>cluster-<minion id>``) and the VIP's
    server conn takes ``rightid=%any``: pluto picks the secret by the ID the
    client sends in IKE_AUTH (checked with real plutos: a client sending
    another client's ID without that client's key fails authentication, an
    unknown ID finds no PSK). Cluster nodes can hold the VIP, so they get
    the key of every client of the VIPs they serve.

``ipsec:keys:version`` (an integer, also used by the shared mode) tags the
keys: bumping it is a rotation (``ipsec/orch/rotate.sls``). Nothing here
logs or returns key material except ``issue`` (the ext_pillar's answer)
and the lookup ``secret_source`` hands to the renderer.
"""

import base64
import hashlib
import hmac
import re

from salt.exceptions import SaltInvocationError

MODES = ("shared", "derived")
# Changing the tag changes every key: it is part of the derivation's
# definition, not a setting.
TAG = b"ipsec-formula per-tunnel keys v1"
MIN_SECRET_BYTES = 32
KEY_BYTES = 32
# Minion ids become part of IKE IDs (@...cluster-<id>): FQDN characters only.
ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
KNOWN = {"mode", "version", "issued"}


def fail(key, problem):
    """The plan's error style: the message starts with the pillar key."""
    raise SaltInvocationError("ipsec:{}: {}".format(key, problem))


def parse_keys(conf):
    """``{"mode", "version"}`` of pillar ``ipsec:keys`` (validated)."""
    keys = (conf or {}).get("keys")
    if keys is None:
        keys = {}
    if not isinstance(keys, dict):
        fail("keys", "must be a mapping, got {}".format(type(keys).__name__))
    for name in sorted(map(str, keys)):
        if name not in KNOWN:
            fail("keys:" + name, "unknown key (known: mode, version; issued is written by the master)")
    mode = keys.get("mode", "shared")
    if mode not in MODES:
        fail("keys:mode", "{!r} must be shared or derived".format(mode))
    version = keys.get("version", 1)
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= 2 ** 31:
        fail("keys:version", "{!r} must be a positive integer".format(version))
    return {"mode": mode, "version": version}


def derived(conf):
    """Whether ``conf`` (the ``ipsec`` pillar) asks for per-tunnel keys."""
    return parse_keys(conf)["mode"] == "derived"


# --- derivation ---------------------------------------------------------------

def _field(value):
    data = value if isinstance(value, bytes) else str(value).encode("utf-8")
    # Length-prefixed: ("ab", "c") and ("a", "bc") must not give one key.
    return len(data).to_bytes(4, "big") + data


def hkdf_sha256(secret, info, length=KEY_BYTES):
    """RFC 5869 HKDF with SHA-256, the salt fixed to the formula's TAG."""
    prk = hmac.new(TAG, secret, hashlib.sha256).digest()
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        out += block
        counter += 1
    return out[:length]


def derive(secret, version, kind, network, ids):
    """The key (printable text) of one tunnel: HKDF over version, kind,
    network and the sorted ``ids``. Sorting makes both ends agree."""
    if not isinstance(secret, bytes) or len(secret) < MIN_SECRET_BYTES:
        raise SaltInvocationError("the master secret must be at least {} bytes".format(MIN_SECRET_BYTES))
    info = b"".join(_field(part) for part in [version, kind, network] + sorted(ids))
    # base64 is printable and has no '"': written as a quoted PSK as is.
    return base64.b64encode(hkdf_sha256(secret, info)).decode("ascii")


def pair_key(secret, version, network, node_a, node_b):
    return derive(secret, version, "node-to-node", network, [node_a, node_b])


def vip_key(secret, version, network, vip_name, client):
    return derive(secret, version, "vip-client", network, [vip_name + "/" + client])


def client_id(prefix, vip_name, node_id):
    """The IKE ID a VIP client presents in derived mode."""
    if not ID_RE.match(str(node_id)):
        fail("keys:mode", "minion id {!r} cannot be part of an IKE ID (letters, digits, '.', '_', '-')".format(
            node_id))
    return "@{}{}cluster-{}".format(prefix, vip_name, node_id)


def _vip_name(plan, conn_name):
    # Connection names are <prefix>-<vip>-vip-tunnel / -node-to-vip-tunnel.
    for suffix in ("-node-to-vip-tunnel", "-vip-tunnel"):
        if conn_name.endswith(suffix):
            return conn_name[len(plan["prefix"]) + 1:-len(suffix)]
    raise ValueError(conn_name)


def _vip_clients(plan, network):
    """Every node on ``network`` (the VIP's clients when another holds it)."""
    return sorted(set(plan["networks"][network]["peers"]) | {plan["node"]})


def issue(plan, secret, version):
    """The keys a minion gets, from the plan the minion will build itself
    (same pillar, same peers): ``{version, node_to_node: {net: {peer: key}},
    vip: {vip: key}, vip_clients: {vip: {client: key}}}``."""
    node = plan["node"]
    issued = {"version": version, "node_to_node": {}, "vip": {}, "vip_clients": {}}
    for name, conn in sorted(plan["connections"].items()):
        if conn["role"] == "node-to-node":
            issued["node_to_node"].setdefault(conn["network"], {})[conn["peer"]] = pair_key(
                secret, version, conn["network"], node, conn["peer"])
        elif conn["role"] == "vip-client":
            vip = _vip_name(plan, name)
            issued["vip"][vip] = vip_key(secret, version, conn["network"], vip, node)
    for vip, meta in sorted(plan["vips"].items()):
        issued["vip_clients"][vip] = {
            client: vip_key(secret, version, meta["network"], vip, client)
            for client in _vip_clients(plan, meta["network"]) if client != node
        }
    return issued


# --- the minion's side ----------------------------------------------------------

def adapt_plan(plan, conf):
    """In derived mode: each VIP client presents its own ID, the VIP server
    conn accepts any ID (its secrets decide who authenticates), and every
    secrets entry names the key it takes (``key``: where in
    ``ipsec:keys:issued``). Shared mode: the plan is returned unchanged."""
    if not derived(conf):
        return plan
    prefix, node = plan["prefix"], plan["node"]
    conns = plan["connections"]
    by_address = {}
    for name, conn in conns.items():
        keywords = conn["keywords"]
        if conn["role"] == "node-to-node":
            by_address[(conn["file"][:-len(".conf")] + ".secrets", keywords["right"])] = conn
        elif conn["role"] == "vip-client":
            keywords["leftid"] = client_id(prefix, _vip_name(plan, name), node)
        elif conn["role"] == "vip-server":
            keywords["rightid"] = "%any"
    secrets = []
    for entry in plan["secrets"]:
        if not entry["ids"][0].startswith("@"):
            conn = by_address[(entry["file"], entry["ids"][1])]
            secrets.append(dict(entry, key=["node_to_node", conn["network"], conn["peer"]]))
            continue
        vip_id = entry["ids"][0]
        vip = vip_id[1:-len("vip")]
        secrets.append(dict(entry, ids=[client_id(prefix, vip, node), vip_id], key=["vip", vip]))
        meta = plan["vips"].get(vip)
        if meta:
            for client in _vip_clients(plan, meta["network"]):
                if client != node:
                    secrets.append(dict(entry, ids=[vip_id, client_id(prefix, vip, client)],
                                        key=["vip_clients", vip, client]))
    plan["secrets"] = secrets
    plan["keys"] = {"mode": "derived", "version": parse_keys(conf)["version"]}
    if conf.get("psk") is not None:
        plan["warnings"].append("ipsec:psk: ignored with ipsec:keys:mode derived; remove it from the pillar "
                                "(a node holding it can impersonate any other)")
    return plan


def secret_source(conf):
    """What the renderer joins into secrets files: the PSK (shared mode) or
    a function ``entry -> key`` (derived mode) that fails naming the
    missing ``ipsec:keys:issued`` key. Checked before anything is written."""
    settings = parse_keys(conf)
    if settings["mode"] == "shared":
        return conf["psk"]
    issued = conf["keys"].get("issued")
    if not isinstance(issued, dict):
        fail("keys:issued", "is missing: the master's ipsec_keys ext_pillar issued no keys to this minion "
             "(is it configured and synced with `salt-run saltutil.sync_all`?)")
    if issued.get("error"):
        fail("keys:issued", "the master could not issue keys: {}".format(issued["error"]))
    if issued.get("version") != settings["version"]:
        fail("keys:issued:version", "is {!r}, the pillar asks for {!r}: refresh the pillar".format(
            issued.get("version"), settings["version"]))

    def lookup(entry):
        value, path = issued, ["keys", "issued"]
        for part in entry["key"]:
            path.append(str(part))
            value = value.get(part) if isinstance(value, dict) else None
        if not isinstance(value, str) or len(value) < MIN_SECRET_BYTES:
            fail(":".join(path), "no key issued for this tunnel: run `salt '*' mine.update`, then apply "
                 "again (the pillar is compiled anew for each run)")
        return value

    return lookup
