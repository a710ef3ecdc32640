"""
Tunnel planning for ipsec-formula: pure logic, no I/O.

``build_plan`` turns the ``ipsec`` pillar, this node's addresses, its peers,
its cluster membership and the Libreswan major version into one
deterministic, JSON-able plan. Everything downstream (file rendering,
states, verify) consumes the plan and never recomputes topology.

Every pillar problem raises ``SaltInvocationError`` whose message starts
with the pillar key (``ipsec:networks:storage:cidr: ...``), before anything
is written anywhere.
"""

import re

import netaddr
from salt.exceptions import SaltInvocationError

REDACTED = "<redacted>"

DEFAULT_PREFIX = "overcloud"
DEFAULT_ALGORITHM = "aes_gcm128-null"
DEFAULT_SKIP_NETWORKS = ("ctlplane",)
DEFAULT_CONFIG_SETUP = {"uniqueids": "no"}
DEFAULT_RESOURCE_PREFIX = "tripleo-ipsec"
DEFAULT_VIP_RESOURCE = "ip-{address}"
MIN_PSK_LENGTH = 32

CONF_MODE = "0640"
SECRETS_MODE = "0600"

# Pillar keys the formula reads; anything else is most likely a typo and is
# reported as a warning (not an error: a newer pillar must not break an
# older formula).
KNOWN_KEYS = {
    "": {
        "psk", "prefix", "algorithm", "ike_algorithm", "networks",
        "extra_vips", "skip_networks", "conn_options", "nodes", "mine",
        "cluster", "pacemaker", "firewall", "config_setup",
        "libreswan_version", "lookup", "clean", "keys",
    },
    "networks": {"cidr", "vip", "algorithm", "ike_algorithm", "conn_options"},
    "extra_vips": {"network", "address"},
    "nodes": {"addresses"},
    "mine": {"target", "tgt_type", "function"},
    "cluster": {"nodes", "grain", "detect"},
    "pacemaker": {"manage", "resource_prefix", "vip_resource", "apply_from", "monitor_interval"},
    "firewall": {"manage", "backend", "table"},
    "clean": {"remove_package"},
}

# Keywords that carry the tunnel's identity: overriding them would make the
# two ends disagree or break the secrets lookup, so the plan owns them.
RESERVED_KEYWORDS = {"left", "right", "leftid", "rightid", "also", "authby"}

# Keywords a pillar may override, each with the values Libreswan takes.
# An allowlist: `addconn --checkconfig` silently accepts some bad values
# (mtu=abc, keyingtries=1x) that only fail once pluto loads the conn, and
# the formula promises to refuse bad input before it touches a node.
_YES_NO = ("yes", "no")
_DURATION = re.compile(r"^[0-9]{1,9}[smhd]?$")
_INTEGER = re.compile(r"^[0-9]{1,9}$")
CONN_KEYWORDS = {
    "auto": ("add", "start", "ondemand", "route", "ignore", "keep"),
    "type": ("tunnel", "transport"),
    "failureshunt": ("none", "passthrough", "drop", "reject"),
    "negotiationshunt": ("hold", "passthrough", "drop"),
    "dpdaction": ("hold", "clear", "restart"),
    "encapsulation": ("yes", "no", "auto"),
    "fragmentation": ("yes", "no", "force"),
    "esn": ("yes", "no", "either"),
    "nic-offload": ("yes", "no", "auto"),
    "rekey": _YES_NO,
    "reauth": _YES_NO,
    "pfs": _YES_NO,
    "compress": _YES_NO,
    "mobike": _YES_NO,
    "narrowing": _YES_NO,
    "ikepad": _YES_NO,
    "decap-dscp": _YES_NO,
    "nopmtudisc": _YES_NO,
    "ikelifetime": _DURATION,
    "salifetime": _DURATION,
    "ipsec-lifetime": _DURATION,
    "rekeymargin": _DURATION,
    "dpddelay": _DURATION,
    "dpdtimeout": _DURATION,
    "retransmit-timeout": _DURATION,
    "retransmit-interval": _INTEGER,
    "keyingtries": _INTEGER,
    "mtu": re.compile(r"^[1-9][0-9]{2,4}$"),
    "replay-window": _INTEGER,
    "priority": _INTEGER,
    "metric": _INTEGER,
    "rekeyfuzz": re.compile(r"^[0-9]{1,3}%$"),
}
CONFIG_SETUP_KEYWORDS = {
    "uniqueids": _YES_NO,
    "logappend": _YES_NO,
    "logtime": _YES_NO,
    "logip": _YES_NO,
    "audit-log": _YES_NO,
    "logfile": re.compile(r"^/[A-Za-z0-9._/-]{1,200}$"),
    "dumpdir": re.compile(r"^/[A-Za-z0-9._/-]{1,200}$"),
    "plutodebug": re.compile(r"^[a-z0-9-]+(?: [a-z0-9-]+)*$"),
    "ikev1-policy": ("accept", "reject", "drop"),
    "ddos-mode": ("busy", "unlimited", "auto"),
    "nhelpers": re.compile(r"^-?[0-9]{1,3}$"),
    "keep-alive": _INTEGER,
    "crl-strict": _YES_NO,
    "ocsp-enable": _YES_NO,
}
# Proposals have their own pillar keys, checked by Libreswan's algparse.
PROPOSAL_KEYWORDS = {"ike", "esp", "phase2alg", "ah"}

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,47}$")
KEYWORD_RE = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
# Printable ASCII except the characters that end or quote a value in
# ipsec.conf ('"', '#'); values with spaces are quoted when rendered.
VALUE_RE = re.compile(r'^[\x20\x21\x24-\x7e]{1,256}$')
# Algorithm proposals: names, '-', '_', '+', ',', ';', '.'; Libreswan itself
# (algparse) judges the rest.
ALGORITHM_RE = re.compile(r"^[A-Za-z0-9_+;,.\-]{1,256}$")


def fail(key, problem):
    """Raise the formula's one error type, naming the pillar key."""
    raise SaltInvocationError("ipsec:{}: {}".format(key, problem) if key else "ipsec: " + problem)


def _mapping(value, key, default=None):
    if value is None:
        return {} if default is None else default
    if not isinstance(value, dict):
        fail(key, "must be a mapping, got {}".format(type(value).__name__))
    return value


def _short(value):
    text = repr(value)
    return value if len(text) <= 60 else text[:57] + "..."


def _name(value, key, what):
    if not isinstance(value, str) or not NAME_RE.match(value):
        fail(key, "{} {!r} must be 1-48 letters, digits, '_' or '-'".format(what, _short(value)))
    return value


def parse_address(value, key):
    """Return the canonical text of an IP address, or fail naming ``key``."""
    if not isinstance(value, str):
        fail(key, "must be an IP address string, got {!r}".format(_short(value)))
    try:
        return str(netaddr.IPAddress(value))
    except (netaddr.AddrFormatError, ValueError, TypeError):
        fail(key, "{!r} is not an IP address".format(_short(value)))


def parse_cidr(value, key):
    if not isinstance(value, str) or "/" not in value:
        fail(key, "{!r} is not a CIDR (address/prefix)".format(_short(value)))
    try:
        network = netaddr.IPNetwork(value)
    except (netaddr.AddrFormatError, ValueError, TypeError):
        fail(key, "{!r} is not a valid CIDR".format(_short(value)))
    if network.ip != network.network:
        fail(key, "{} has host bits set; did you mean {}?".format(value, network.cidr))
    return network


def check_algorithm(value, key):
    """Syntax gate for proposals; the semantic check is Libreswan's (algparse)."""
    if not isinstance(value, str) or not ALGORITHM_RE.match(value):
        fail(key, "{!r} is not an algorithm proposal".format(_short(value)))
    return value


def _keyword_value(value, key):
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if not isinstance(value, str) or not VALUE_RE.match(value):
        fail(key, "{!r} is not a valid value (printable, no quotes, no '#', max 256)".format(_short(value)))
    return value


def _allowed(rule, value):
    return value in rule if isinstance(rule, tuple) else bool(rule.match(value))


def _rule_text(rule):
    return "one of " + ", ".join(rule) if isinstance(rule, tuple) else "matching " + rule.pattern


def parse_options(value, key, table=None):
    """Validate a mapping of ipsec.conf keywords against ``table`` (default
    CONN_KEYWORDS); ``None`` as a value means 'remove this keyword'."""
    table = CONN_KEYWORDS if table is None else table
    options = {}
    for keyword, item in _mapping(value, key).items():
        if not isinstance(keyword, str) or not KEYWORD_RE.match(keyword):
            fail(key, "{!r} is not a keyword".format(_short(keyword)))
        item_key = "{}:{}".format(key, keyword)
        if keyword in RESERVED_KEYWORDS:
            fail(item_key, "is set by the formula and cannot be overridden")
        if keyword in PROPOSAL_KEYWORDS:
            fail(item_key, "proposals are set with ipsec:algorithm / ipsec:ike_algorithm (checked by algparse)")
        if keyword not in table:
            fail(item_key, "is not a keyword the formula can override (known: {})".format(", ".join(sorted(table))))
        if item is None:
            options[keyword] = None
            continue
        text = _keyword_value(item, item_key)
        if not _allowed(table[keyword], text):
            fail(item_key, "{!r} is not a valid value ({})".format(_short(text), _rule_text(table[keyword])))
        options[keyword] = text
    return options


def psk_problem(psk):
    """Return why ``psk`` is unusable, or None."""
    if psk is None:
        return "is missing: a shared key of at least {} characters is required".format(MIN_PSK_LENGTH)
    if not isinstance(psk, str):
        return "must be a string, got {}".format(type(psk).__name__)
    if len(psk) < MIN_PSK_LENGTH:
        return "is too short ({} characters, at least {} required)".format(len(psk), MIN_PSK_LENGTH)
    return None


def unknown_keys(section, value, key):
    """Warnings for keys of ``value`` the formula does not read."""
    known = KNOWN_KEYS[section]
    return [
        "ipsec:{}{}: unknown key, ignored (typo?)".format(key + ":" if key else "", name)
        for name in sorted(map(str, value))
        if name not in known
    ]


def _ike_version_keywords(major):
    # 3.x defaulted to IKEv1; 4.x takes ikev2=yes; 5.x deprecated ikev2= for
    # keyexchange= (see reference table in the README).
    if major <= 3:
        return {"ikev2": "insist"}
    if major == 4:
        return {"ikev2": "yes"}
    return {"keyexchange": "ikev2"}


def _esp_keyword(major):
    return "phase2alg" if major <= 3 else "esp"


def _liveness_keywords(major, action):
    # IKEv2 liveness is dpddelay plus retransmit-timeout (TripleO's
    # dpdtimeout=15 is IKEv1-only: 4.x warns it is ignored). dpdaction is
    # obsolete in 5.x.
    keywords = {"dpddelay": "5", "retransmit-timeout": "15s"}
    if major <= 4:
        keywords = dict({"dpdaction": action}, **keywords)
    if major <= 3:
        keywords["dpdtimeout"] = "15"
    return keywords


def _algorithm_keywords(major, esp, ike):
    keywords = {_esp_keyword(major): esp}
    if ike:
        keywords["ike"] = ike
    return keywords


def _apply_options(keywords, options):
    for keyword, value in options.items():
        if value is None:
            keywords.pop(keyword, None)
        else:
            keywords[keyword] = value
    return keywords


class _Network:
    """One validated entry of ``ipsec:networks``."""

    __slots__ = ("name", "cidr", "vip", "algorithm", "ike_algorithm", "options")

    def __init__(self, name, cidr, vip, algorithm, ike_algorithm, options):
        self.name = name
        self.cidr = cidr
        self.vip = vip
        self.algorithm = algorithm
        self.ike_algorithm = ike_algorithm
        self.options = options

    def contains(self, address):
        return netaddr.IPAddress(address) in self.cidr


def _parse_networks(conf, defaults, warnings):
    raw = _mapping(conf.get("networks"), "networks")
    if not raw:
        fail("networks", "is missing or empty: at least one network is required")
    networks = {}
    for name in sorted(raw, key=str):
        key = "networks:{}".format(name)
        _name(name, "networks", "network name")
        entry = _mapping(raw[name], key)
        warnings.extend(unknown_keys("networks", entry, key))
        cidr = parse_cidr(entry.get("cidr"), key + ":cidr")
        vip = None
        if entry.get("vip") is not None:
            vip = parse_address(entry["vip"], key + ":vip")
            _check_in(vip, cidr, key + ":vip")
        algorithm = check_algorithm(entry.get("algorithm", defaults["algorithm"]), key + ":algorithm")
        ike = entry.get("ike_algorithm", defaults["ike_algorithm"])
        if ike is not None:
            check_algorithm(ike, key + ":ike_algorithm")
        options = dict(defaults["options"])
        options.update(parse_options(entry.get("conn_options"), key + ":conn_options"))
        networks[name] = _Network(name, cidr, vip, algorithm, ike, options)
    _check_overlaps(networks)
    return networks


def _check_in(address, cidr, key):
    if netaddr.IPAddress(address) not in cidr:
        fail(key, "{} is outside the network {}".format(address, cidr))


def _check_overlaps(networks):
    ordered = sorted(networks.values(), key=lambda n: (n.cidr.version, n.cidr.first))
    for left, right in zip(ordered, ordered[1:]):
        if left.cidr.version == right.cidr.version and right.cidr.first <= left.cidr.last:
            fail(
                "networks",
                "{} ({}) overlaps {} ({})".format(left.name, left.cidr, right.name, right.cidr),
            )


def _parse_extra_vips(conf, networks, warnings):
    raw = _mapping(conf.get("extra_vips"), "extra_vips")
    extra = {}
    for name in sorted(raw, key=str):
        key = "extra_vips:{}".format(name)
        _name(name, "extra_vips", "VIP name")
        if name in networks:
            fail(key, "has the name of a network; VIP tunnel names would collide")
        entry = _mapping(raw[name], key)
        warnings.extend(unknown_keys("extra_vips", entry, key))
        network = entry.get("network")
        if not isinstance(network, str) or network not in networks:
            fail(key + ":network", "{!r} is not a network in ipsec:networks".format(_short(network)))
        address = parse_address(entry.get("address"), key + ":address")
        _check_in(address, networks[network].cidr, key + ":address")
        extra[name] = (network, address)
    return extra


def _all_vips(networks, extra_vips):
    """name -> (network, address) for network VIPs and extra VIPs."""
    vips = {name: (name, net.vip) for name, net in networks.items() if net.vip}
    vips.update(extra_vips)
    seen = {}
    for name, (_, address) in sorted(vips.items()):
        if address in seen:
            fail("extra_vips" if name not in networks else "networks:{}:vip".format(name),
                 "VIP {} is also the VIP {!r}".format(address, seen[address]))
        seen[address] = name
    return vips


def match_addresses(networks, addresses, exclude=()):
    """Map each network to this host's address inside it.

    ``addresses`` are the host's IPs (grains ipv4 + ipv6). VIPs are excluded
    (the VIP holder carries the VIP in the same subnet). With several
    candidates the numerically lowest wins, so the choice is stable.
    """
    excluded = set(exclude)
    parsed = []
    for text in addresses:
        try:
            address = netaddr.IPAddress(text)
        except (netaddr.AddrFormatError, ValueError, TypeError):
            continue
        if str(address) not in excluded:
            parsed.append(address)
    parsed.sort(key=lambda a: (a.version, int(a)))
    found = {}
    for name, net in networks.items():
        for address in parsed:
            if address.version == net.cidr.version and address in net.cidr:
                found[name] = str(address)
                break
    return found


def _parse_inventory(conf, networks, warnings):
    """``ipsec:nodes`` -> {node_id: {network: address}}, strictly validated."""
    raw = _mapping(conf.get("nodes"), "nodes")
    inventory = {}
    for node_id in sorted(raw, key=str):
        key = "nodes:{}".format(node_id)
        entry = _mapping(raw[node_id], key)
        warnings.extend(unknown_keys("nodes", entry, key))
        addresses = {}
        for net, value in _mapping(entry.get("addresses"), key + ":addresses").items():
            akey = "{}:addresses:{}".format(key, net)
            if net not in networks:
                fail(akey, "{!r} is not a network in ipsec:networks".format(_short(net)))
            if value is None or value == "":
                fail(akey, "node {} is listed on {} but has no address there".format(node_id, net))
            address = parse_address(value, akey)
            if not networks[net].contains(address):
                fail(akey, "node {} has no address on {}: {} is outside {}".format(
                    node_id, net, address, networks[net].cidr))
            addresses[net] = address
        inventory[str(node_id)] = addresses
    return inventory


def _mine_peers(mine_data, networks, warnings):
    """Mine data is other minions' view: drop (and warn about) what does not fit."""
    peers = {}
    for node_id in sorted(mine_data or {}, key=str):
        value = mine_data[node_id]
        if not isinstance(value, dict):
            warnings.append("mine: ignoring {}: ipsec.addresses returned {!r}".format(node_id, type(value).__name__))
            continue
        addresses = {}
        for net, text in value.items():
            if net not in networks:
                continue
            try:
                address = str(netaddr.IPAddress(text))
            except (netaddr.AddrFormatError, ValueError, TypeError):
                warnings.append("mine: ignoring {} address {!r} on {}".format(node_id, _short(text), net))
                continue
            if networks[net].contains(address):
                addresses[net] = address
            else:
                warnings.append("mine: ignoring {} address {} outside {} ({})".format(
                    node_id, address, net, networks[net].cidr))
        peers[str(node_id)] = addresses
    return peers


def _check_unique_addresses(node_id, own, peers, vips, from_inventory):
    owner = {}
    for vip_name, (_, address) in vips.items():
        owner[address] = "VIP {}".format(vip_name)
    for peer_id, addresses in [(node_id, own)] + sorted(peers.items()):
        for net, address in sorted(addresses.items()):
            if address in owner and owner[address] != "node " + peer_id:
                key = "nodes:{}:addresses:{}".format(peer_id, net) if from_inventory else "mine"
                fail(key, "address {} of node {} is already used by {}".format(address, peer_id, owner[address]))
            owner[address] = "node " + peer_id


def _address_order(text):
    address = netaddr.IPAddress(text)
    return address.version, int(address)


def _conn_keywords(net, major, ends, tail):
    """Keywords of one conn in the order every conn shares: tunnel and auth,
    the two ends, IKE version, proposals, then the role's own ``tail``;
    the pillar's overrides last."""
    left, leftid, right, rightid = ends
    keywords = {
        "type": "tunnel",
        "authby": "secret",
        "left": left,
        "leftid": leftid,
        "right": right,
        "rightid": rightid,
    }
    keywords.update(_ike_version_keywords(major))
    keywords.update(_algorithm_keywords(major, net.algorithm, net.ike_algorithm))
    keywords["failureshunt"] = "drop"
    keywords.update(tail)
    return _apply_options(keywords, net.options)


def _node_to_node(net, own, peer_address, prefix, major):
    # Both ends sort the pair the same way, so both derive the same name.
    low, high = sorted((own, peer_address), key=_address_order)
    name = "{}-{}-{}-{}".format(prefix, net.name, low, high)
    tail = {"retransmit-timeout": "2s", "auto": "start"}
    return name, _conn_keywords(net, major, (own, own, peer_address, peer_address), tail)


def _vip_ids(prefix, vip_name):
    return "@{}vip".format(vip_name), "@{}{}cluster".format(prefix, vip_name)


def _vip_server(net, vip_name, address, prefix, major):
    vip_id, cluster_id = _vip_ids(prefix, vip_name)
    tail = dict(_liveness_keywords(major, "hold"), auto="add")
    return "{}-{}-vip-tunnel".format(prefix, vip_name), _conn_keywords(
        net, major, (address, vip_id, "%any", cluster_id), tail)


def _vip_client(net, vip_name, address, own, prefix, major):
    vip_id, cluster_id = _vip_ids(prefix, vip_name)
    # restart, not hold: hold blocked traffic after a VIP failover.
    tail = dict(_liveness_keywords(major, "restart"), auto="start")
    return "{}-{}-node-to-vip-tunnel".format(prefix, vip_name), _conn_keywords(
        net, major, (own, cluster_id, address, vip_id), tail)


def _file_path(config_dir, prefix, label, kind):
    return "{}/{}-{}.{}".format(config_dir.rstrip("/"), prefix, label, kind)


def _parse_skip(conf, networks):
    if "skip_networks" not in conf:
        return set(DEFAULT_SKIP_NETWORKS)
    raw = conf["skip_networks"]
    if raw is None:
        return set()
    if not isinstance(raw, list):
        fail("skip_networks", "must be a list of network names")
    for name in raw:
        if not isinstance(name, str) or name not in networks:
            fail("skip_networks", "{!r} is not a network in ipsec:networks".format(_short(name)))
    return set(raw)


def _parse_cluster_options(conf, warnings):
    pacemaker = _mapping(conf.get("pacemaker"), "pacemaker")
    warnings.extend(unknown_keys("pacemaker", pacemaker, "pacemaker"))
    resource_prefix = _name(pacemaker.get("resource_prefix", DEFAULT_RESOURCE_PREFIX),
                            "pacemaker:resource_prefix", "resource prefix")
    vip_resource = pacemaker.get("vip_resource", DEFAULT_VIP_RESOURCE)
    if not isinstance(vip_resource, str) or not re.match(r"^[A-Za-z0-9_.:{}-]{1,64}$", vip_resource):
        fail("pacemaker:vip_resource", "{!r} is not a resource name template".format(_short(vip_resource)))
    try:
        vip_resource.format(address="198.51.100.1", name="x", network="x")
    except (KeyError, IndexError, ValueError):
        fail("pacemaker:vip_resource", "may only use {address}, {name} and {network}")
    # Read by _modules/ipsec_pacemaker.py (and init.sls for manage); checked
    # here so a typo fails every node's plan, not only the applier's run.
    if not isinstance(pacemaker.get("manage", False), bool):
        fail("pacemaker:manage", "must be true or false")
    apply_from = pacemaker.get("apply_from")
    if apply_from is not None and (not isinstance(apply_from, str) or not apply_from.strip()):
        fail("pacemaker:apply_from", "{!r} must be a minion id".format(_short(apply_from)))
    interval = pacemaker.get("monitor_interval", "10s")
    if isinstance(interval, bool) or not (
            (isinstance(interval, int) and interval > 0)
            or (isinstance(interval, str) and re.match(r"^[0-9]{1,9}(ms|msec|us|usec|s|sec|m|min|h|hr)?$", interval)
                and int(re.match(r"[0-9]+", interval).group()) > 0)):
        fail("pacemaker:monitor_interval", "{!r} is not a pacemaker interval (e.g. 10s, 1min, 30)".format(
            _short(interval)))
    return resource_prefix, vip_resource


def _parse_firewall(conf, warnings):
    firewall = _mapping(conf.get("firewall"), "firewall")
    warnings.extend(unknown_keys("firewall", firewall, "firewall"))
    manage = firewall.get("manage", True)
    if not isinstance(manage, bool):
        fail("firewall:manage", "must be true or false")
    backend = firewall.get("backend", "nftables")
    if backend not in ("nftables", "iptables"):
        fail("firewall:backend", "{!r} must be nftables or iptables".format(_short(backend)))
    table = firewall.get("table", "ipsec_formula")
    if not isinstance(table, str) or not re.match(r"^[A-Za-z][A-Za-z0-9_]{0,31}$", table):
        fail("firewall:table", "{!r} must be 1-32 letters, digits or '_'".format(_short(table)))
    return {"manage": manage, "backend": backend, "table": table}


def _parse_defaults(conf):
    """Values every network inherits unless it sets its own."""
    defaults = {
        "algorithm": check_algorithm(conf.get("algorithm", DEFAULT_ALGORITHM), "algorithm"),
        "ike_algorithm": conf.get("ike_algorithm"),
        "options": parse_options(conf.get("conn_options"), "conn_options"),
    }
    if defaults["ike_algorithm"] is not None:
        check_algorithm(defaults["ike_algorithm"], "ike_algorithm")
    return defaults


def node_addresses(conf, own_ips):
    """{network: address} of this host (the mine function's answer)."""
    conf = _mapping(conf, "")
    networks = _parse_networks(conf, _parse_defaults(conf), [])
    vips = _all_vips(networks, _parse_extra_vips(conf, networks, []))
    return match_addresses(networks, own_ips, exclude={address for _, address in vips.values()})


def parse_cluster(conf):
    """How to tell whether this node is a cluster (pacemaker) node.

    Returns ("nodes", [ids]), ("grain", "key:value"), ("detect", True) or
    ("none", None).
    """
    cluster = _mapping(_mapping(conf, "").get("cluster"), "cluster")
    if cluster.get("nodes") is not None:
        nodes = cluster["nodes"]
        if not isinstance(nodes, list) or not all(isinstance(n, str) and n for n in nodes):
            fail("cluster:nodes", "must be a list of minion ids")
        return "nodes", nodes
    if cluster.get("grain") is not None:
        grain = cluster["grain"]
        if not isinstance(grain, str) or ":" not in grain:
            fail("cluster:grain", "{!r} must be a grain match 'key:value'".format(_short(grain)))
        return "grain", grain
    detect = cluster.get("detect", True)
    if not isinstance(detect, bool):
        fail("cluster:detect", "must be true or false")
    return ("detect", True) if detect else ("none", None)


def algorithm_sources(conf):
    """(pillar key, 'esp'|'ike', proposal) for every proposal the plan uses."""
    conf = _mapping(conf, "")
    sources = [("algorithm" if "algorithm" in conf else "algorithm (default)", "esp",
                conf.get("algorithm", DEFAULT_ALGORITHM))]
    if conf.get("ike_algorithm") is not None:
        sources.append(("ike_algorithm", "ike", conf["ike_algorithm"]))
    for name, entry in sorted(_mapping(conf.get("networks"), "networks").items(), key=lambda i: str(i[0])):
        entry = entry if isinstance(entry, dict) else {}
        if entry.get("algorithm") is not None:
            sources.append(("networks:{}:algorithm".format(name), "esp", entry["algorithm"]))
        if entry.get("ike_algorithm") is not None:
            sources.append(("networks:{}:ike_algorithm".format(name), "ike", entry["ike_algorithm"]))
    seen, unique = set(), []
    for source in sources:
        if (source[1], source[2]) not in seen:
            seen.add((source[1], source[2]))
            unique.append(source)
    return unique


def build_plan(conf, node_id, own_ips, major=4, config_dir="/etc/ipsec.d",
               cluster_node=False, mine_data=None, require_psk=True):
    """Compute the plan of one node.

    conf:        the ``ipsec`` pillar subtree (dict)
    node_id:     this minion's id
    own_ips:     this host's IP addresses (grains ipv4 + ipv6)
    major:       installed Libreswan major version (3, 4, 5)
    config_dir:  where the formula's files go (lookup ``config_dir``)
    cluster_node: whether this node runs pacemaker (gets VIP server conns)
    mine_data:   {minion_id: {network: address}} used when ``ipsec:nodes``
                 is absent
    require_psk: False in derived key mode (``ipsec:keys``, _utils/ipsec_keys.py)
    """
    conf = _mapping(conf, "")
    warnings = unknown_keys("", conf, "")
    problem = psk_problem(conf.get("psk")) if require_psk else None
    if problem:
        fail("psk", problem)
    prefix = _name(conf.get("prefix", DEFAULT_PREFIX), "prefix", "prefix")
    defaults = _parse_defaults(conf)
    config_setup = dict(DEFAULT_CONFIG_SETUP)
    config_setup.update(parse_options(conf.get("config_setup"), "config_setup", CONFIG_SETUP_KEYWORDS))
    config_setup = {k: v for k, v in config_setup.items() if v is not None}
    for section in ("mine", "cluster", "clean"):
        warnings.extend(unknown_keys(section, _mapping(conf.get(section), section), section))
    resource_prefix, vip_resource = _parse_cluster_options(conf, warnings)
    firewall = _parse_firewall(conf, warnings)

    networks = _parse_networks(conf, defaults, warnings)
    skip = _parse_skip(conf, networks)
    extra_vips = _parse_extra_vips(conf, networks, warnings)
    vips = _all_vips(networks, extra_vips)
    vip_addresses = {address for _, address in vips.values()}

    own = match_addresses(networks, own_ips, exclude=vip_addresses)
    from_inventory = conf.get("nodes") is not None
    if from_inventory:
        peers = _parse_inventory(conf, networks, warnings)
        listed_self = peers.pop(str(node_id), None)
        if listed_self is not None:
            for net, address in sorted(listed_self.items()):
                if own.get(net) != address:
                    fail("nodes:{}:addresses:{}".format(node_id, net),
                         "{} is not an address of this node (its address there: {})".format(
                             address, own.get(net, "none")))
    else:
        peers = _mine_peers(mine_data, networks, warnings)
        peers.pop(str(node_id), None)
    _check_unique_addresses(str(node_id), own, peers, vips, from_inventory)

    plan = {
        "node": str(node_id),
        "prefix": prefix,
        "libreswan_major": major,
        "cluster_node": bool(cluster_node),
        "peer_source": "pillar" if from_inventory else "mine",
        "addresses": own,
        "config_setup": config_setup,
        "networks": {},
        "connections": {},
        "secrets": [],
        "files": {},
        "vips": {},
        "firewall": dict(firewall, networks={}),
        "warnings": warnings,
    }

    def add_file(path, kind):
        return plan["files"].setdefault(path, {
            "kind": kind,
            "mode": CONF_MODE if kind == "conf" else SECRETS_MODE,
            "connections": [],
        })

    def add_conn(name, path, net, role, peer, keywords):
        plan["connections"][name] = {
            "file": path, "network": net.name, "role": role, "peer": peer, "keywords": keywords,
        }
        add_file(path, "conf")["connections"].append(name)

    def add_secret(path, ids):
        add_file(path, "secrets")
        plan["secrets"].append({"file": path, "ids": ids, "psk": REDACTED})

    for name, net in networks.items():
        address = own.get(name)
        tunneled = name not in skip and address is not None
        net_peers = {pid: addrs[name] for pid, addrs in sorted(peers.items()) if name in addrs}
        plan["networks"][name] = {
            "cidr": str(net.cidr),
            "vip": net.vip,
            "address": address,
            "tunneled": tunneled,
            "skipped": name in skip,
            "peers": net_peers,
        }
        if not tunneled:
            continue
        plan["firewall"]["networks"][name] = str(net.cidr)
        conf_path = _file_path(config_dir, prefix, name + "-node-to-node-tunnels", "conf")
        secrets_path = _file_path(config_dir, prefix, name + "-node-to-node-tunnels", "secrets")
        for peer_id, peer_address in sorted(net_peers.items(), key=lambda item: _address_order(item[1])):
            conn, keywords = _node_to_node(net, address, peer_address, prefix, major)
            add_conn(conn, conf_path, net, "node-to-node", peer_id, keywords)
            add_secret(secrets_path, [address, peer_address])

    for vip_name, (net_name, vip_address) in sorted(vips.items()):
        net = networks[net_name]
        address = own.get(net_name)
        if net_name in skip or address is None:
            continue
        conf_path = _file_path(config_dir, prefix, vip_name + "-vip-tunnels", "conf")
        secrets_path = _file_path(config_dir, prefix, vip_name + "-vip-tunnels", "secrets")
        client, client_keywords = _vip_client(net, vip_name, vip_address, address, prefix, major)
        server = None
        if cluster_node:
            server, server_keywords = _vip_server(net, vip_name, vip_address, prefix, major)
            add_conn(server, conf_path, net, "vip-server", vip_address, server_keywords)
        add_conn(client, conf_path, net, "vip-client", vip_address, client_keywords)
        add_secret(secrets_path, list(_vip_ids(prefix, vip_name)))
        if cluster_node:
            plan["vips"][vip_name] = {
                "network": net_name,
                "address": vip_address,
                "resource": "{}-{}".format(resource_prefix, vip_name),
                "vip_resource": vip_resource.format(address=vip_address, name=vip_name, network=net_name),
                "tunnel": server,
                "fallback_tunnel": client,
            }
    return plan
