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
DEFAULT_CONTROL_PLANE = "ctlplane"
DEFAULT_CONFIG_SETUP = {"uniqueids": "no"}
DEFAULT_RESOURCE_PREFIX = "tripleo-ipsec"
DEFAULT_VIP_RESOURCE = "ip-{address}"
DEFAULT_MONITOR_INTERVAL = "10s"
# The tunnel resource's start and stop op timeouts (ipsec_cib explains why).
DEFAULT_START_TIMEOUT = "60s"
DEFAULT_STOP_TIMEOUT = "60s"
MIN_PSK_LENGTH = 32
# Libreswan reads a secrets line into a fixed buffer: a longer PSK is cut
# into fragments that pluto then logs. The token as written (quoted, or
# the 0s base64 form) stays well below it with the longest IDs the plan
# makes (two IPv6 addresses); a test loads one this long into a real pluto.
MAX_PSK_TOKEN = 1200

CONF_MODE = "0640"
SECRETS_MODE = "0600"

# The built-in lookup (paths, package, service, agent) and its per-OS-family
# differences: the one place these defaults live. ``ipsec.lookup`` merges
# and validates them with pillar ``ipsec:lookup``; the SLS files read that.
DEFAULT_LOOKUP = {
    "pkg": {"name": "libreswan", "manage": True},
    "service": {"name": "ipsec", "manage": True},
    "config_file": "/etc/ipsec.conf",
    "secrets_file": "/etc/ipsec.secrets",
    "config_dir": "/etc/ipsec.d",
    "nss_dir": "/var/lib/ipsec/nss",
    "rundir": "/run/pluto",
    "ctlsocket": "/run/pluto/pluto.ctl",
    "ipsec_bin": "/usr/sbin/ipsec",
    "algparse": "/usr/libexec/ipsec/algparse",
    # The OCF agent is installed as <ocf_root>/resource.d/<provider>/<agent>;
    # cib_file: a CIB file instead of the live cluster (tests).
    "pacemaker": {
        "ocf_root": "/usr/lib/ocf",
        "provider": "ipsec-formula",
        "agent": "vip-tunnel",
        "cib_file": None,
    },
    # Where the rules persist across a reboot (ipsec:firewall:persist): the
    # nftables service loads nft_conf, which gets one include of nft_file
    # (the formula's table); with iptables, the files iptables-persistent
    # (netfilter-persistent) restores, the formula's rules in a marked block.
    "firewall": {
        "nft_conf": "/etc/nftables.conf",
        "nft_file": "/etc/ipsec-formula.nft",
        "nft_service": "nftables",
        "iptables_rules_v4": "/etc/iptables/rules.v4",
        "iptables_rules_v6": "/etc/iptables/rules.v6",
    },
}
OS_FAMILY_LOOKUP = {
    # nftables.service loads /etc/sysconfig/nftables.conf, whose examples
    # include files of /etc/nftables; iptables-services restores these two.
    "RedHat": {"nss_dir": "/etc/ipsec.d",
               "firewall": {"nft_conf": "/etc/sysconfig/nftables.conf", "nft_file": "/etc/nftables/ipsec-formula.nft",
                            "iptables_rules_v4": "/etc/sysconfig/iptables",
                            "iptables_rules_v6": "/etc/sysconfig/ip6tables"}},
    "Suse": {"nss_dir": "/etc/ipsec.d"},
}
LOOKUP_PATHS = ("config_file", "secrets_file", "config_dir", "nss_dir", "rundir", "ctlsocket",
                "ipsec_bin", "algparse")
# Names that reach command lines and file names: never an option, never a
# path separator or shell/YAML metacharacter.
LOOKUP_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+@-]{0,63}")
LOOKUP_SECTIONS = {
    "pkg": {"name": LOOKUP_NAME_RE, "manage": "flag"},
    "service": {"name": LOOKUP_NAME_RE, "manage": "flag"},
    "pacemaker": {"ocf_root": "path", "provider": LOOKUP_NAME_RE, "agent": LOOKUP_NAME_RE,
                  "cib_file": "path?"},
    "firewall": {"nft_conf": "path", "nft_file": "path", "nft_service": LOOKUP_NAME_RE,
                 "iptables_rules_v4": "path", "iptables_rules_v6": "path"},
}
PILLAR_KEY_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
ADDRESS_RE = re.compile(r"[0-9A-Fa-f.:]{2,45}")
CIDR_RE = re.compile(r"[0-9A-Fa-f.:]{2,45}/[0-9]{1,3}")
PATH_RE = re.compile(r"(?:/[A-Za-z0-9_+.-]+)+")
TABLE_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,31}")
VIP_RESOURCE_RE = re.compile(r"[A-Za-z0-9_.:{}-]{1,64}")
MINION_ID_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.@-]{0,252}")
GRAIN_MATCH_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:-]*:[\x21-\x7e]+")
INTERVAL_RE = re.compile(r"[0-9]{1,9}(?:ms|msec|us|usec|s|sec|m|min|h|hr)?")

# TripleO's variable names: refused with the formula's key, never taken
# for a typo whose old value silently stays in force.
TRIPLEO_KEYS = {
    "ipsec_algorithm": "algorithm",
    "ipsec_skip_networks": "skip_networks",
    "ipsec_psk": "psk",
    "ipsec_skip_firewall_rules": "firewall:manage",
    "ipsec_setup_resource_agents": "pacemaker:manage",
    "ipsec_configure_vips": "networks:<net>:vip",
    "ipsec_uninstall_ipsec": "state ipsec.clean",
}

# Pillar keys the formula reads; anything else is most likely a typo and is
# reported as a warning (not an error: a newer pillar must not break an
# older formula).
KNOWN_KEYS = {
    "": {
        "psk", "prefix", "algorithm", "ike_algorithm", "networks",
        "extra_vips", "skip_networks", "conn_options", "nodes", "mine",
        "cluster", "pacemaker", "firewall", "config_setup",
        "libreswan_version", "lookup", "clean", "control_plane", "adopt_tripleo", "keys",
        # validated by _utils/ipsec_events.py (ipsec.build puts them in plan["events"])
        "beacon", "metrics",
    },
    "networks": {"cidr", "vip", "algorithm", "ike_algorithm", "conn_options"},
    "extra_vips": {"network", "address"},
    "nodes": {"addresses"},
    "mine": {"target", "tgt_type", "function"},
    "cluster": {"nodes", "grain", "detect"},
    "pacemaker": {"manage", "resource_prefix", "vip_resource", "apply_from", "monitor_interval",
                  "start_timeout", "stop_timeout"},
    "firewall": {"manage", "backend", "table", "persist"},
    "clean": {"remove_package"},
    "lookup": set(DEFAULT_LOOKUP),
    "lookup:pkg": set(DEFAULT_LOOKUP["pkg"]),
    "lookup:service": set(DEFAULT_LOOKUP["service"]),
    "lookup:pacemaker": set(DEFAULT_LOOKUP["pacemaker"]),
    "lookup:firewall": set(DEFAULT_LOOKUP["firewall"]),
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
    if not isinstance(value, str) or not NAME_RE.fullmatch(value):
        fail(key, "{} {!r} must be 1-48 letters, digits, '_' or '-'".format(what, _short(value)))
    return value


def ip_text(value):
    """The canonical text of an IP address given as a string, else None
    (netaddr takes ints, and raises AttributeError on lists)."""
    if not isinstance(value, str) or not ADDRESS_RE.fullmatch(value):
        return None
    try:
        return str(netaddr.IPAddress(value))
    except (netaddr.AddrFormatError, ValueError, TypeError):
        return None


def parse_address(value, key):
    """Return the canonical text of an IP address, or fail naming ``key``."""
    text = ip_text(value)
    if text is None:
        fail(key, "{!r} is not an IP address".format(_short(value)))
    return text


def parse_cidr(value, key):
    if not isinstance(value, str) or not CIDR_RE.fullmatch(value):
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
    if not isinstance(value, str) or not ALGORITHM_RE.fullmatch(value):
        fail(key, "{!r} is not an algorithm proposal".format(_short(value)))
    return value


def _keyword_value(value, key):
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if not isinstance(value, str) or not VALUE_RE.fullmatch(value):
        fail(key, "{!r} is not a valid value (printable, no quotes, no '#', max 256)".format(_short(value)))
    return value


def _allowed(rule, value):
    return value in rule if isinstance(rule, tuple) else bool(rule.fullmatch(value))


def _rule_text(rule):
    return "one of " + ", ".join(rule) if isinstance(rule, tuple) else "matching " + rule.pattern


def parse_options(value, key, table=None):
    """Validate a mapping of ipsec.conf keywords against ``table`` (default
    CONN_KEYWORDS); ``None`` as a value means 'remove this keyword'."""
    table = CONN_KEYWORDS if table is None else table
    options = {}
    for keyword, item in _mapping(value, key).items():
        if not isinstance(keyword, str) or not KEYWORD_RE.fullmatch(keyword):
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


def psk_token_length(psk):
    """Length of the PSK as ``ipsec_render.psk_token`` writes it: quoted when
    printable ASCII without '"', else ``0s`` + base64 of its UTF-8 bytes."""
    if all(0x20 <= ord(char) <= 0x7E for char in psk) and '"' not in psk:
        return len(psk) + 2
    return 2 + 4 * -(-len(psk.encode("utf-8")) // 3)


def psk_problem(psk):
    """Return why ``psk`` is unusable, or None. Never quotes the PSK."""
    if psk is None:
        return "is missing: a shared key of at least {} characters is required".format(MIN_PSK_LENGTH)
    if not isinstance(psk, str):
        return "must be a string, got {}".format(type(psk).__name__)
    if len(psk) < MIN_PSK_LENGTH:
        return "is too short ({} characters, at least {} required)".format(len(psk), MIN_PSK_LENGTH)
    try:
        psk.encode("utf-8")
    except UnicodeEncodeError:
        return "holds characters that are not valid Unicode (lone surrogates)"
    if psk_token_length(psk) > MAX_PSK_TOKEN:
        return ("is too long for Libreswan ({} characters; at most {} printable ASCII characters, "
                "fewer with '\"', control or non-ASCII characters, which are written base64-encoded)".format(
                    len(psk), MAX_PSK_TOKEN - 2))
    return None


def unknown_keys(section, value, key):
    """Warnings for keys of ``value`` the formula does not read."""
    known = KNOWN_KEYS[section]
    if section == "":
        for name in sorted(map(str, value)):
            if name in TRIPLEO_KEYS:
                fail(name, "is TripleO's variable, not read by this formula: use ipsec:{} "
                           "(see docs/migration.md)".format(TRIPLEO_KEYS[name]))
    for name in value:
        if not isinstance(name, str) or not PILLAR_KEY_RE.fullmatch(name):
            # Not a newer formula's key: a broken one (a line break, a
            # control character) that must not silently drop its section.
            fail(key, "{!r} is not a valid key".format(_short(name)))
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
    if major == 4 and action == "restart":
        # An initiating end (auto=start) on 4.x: when a keying attempt times
        # out (peer down > retransmit-timeout), 4.x both starts the next
        # attempt (keyingtries=0: unlimited) and schedules a revival of the
        # connection; the revival's Child SA then rides the attempt's IKE SA
        # as a second CREATE_CHILD_SA, the peer keeps two Child SAs and sends
        # on the one this end refused: a black hole (seen in the lab's VM).
        # With one try per attempt, the revival alone retries (back-off
        # 0, 5, 10 ... s, at most 300 s; reset once a Child SA is up).
        keywords["keyingtries"] = "1"
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
        _pattern(node_id, "nodes", MINION_ID_RE, "is not a minion id")
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
    """Mine data is other minions' view: drop (and warn about) what does not
    fit, naming the minion and the key; one bad minion never breaks a plan."""
    peers = {}
    if not isinstance(mine_data, dict):
        if mine_data is not None:
            warnings.append("mine: ignoring the mine's answer: {} is not a mapping".format(type(mine_data).__name__))
        return peers
    for node_id in sorted(mine_data, key=str):
        value = mine_data[node_id]
        if not isinstance(node_id, str) or not MINION_ID_RE.fullmatch(node_id):
            warnings.append("mine: ignoring minion id {!r}: not a minion id".format(_short(node_id)))
            continue
        if not isinstance(value, dict):
            warnings.append("mine: ignoring {}: ipsec.addresses returned {}".format(node_id, type(value).__name__))
            continue
        addresses = {}
        for net, text in sorted(value.items(), key=lambda item: str(item[0])):
            if not isinstance(net, str) or net not in networks:
                continue
            address = ip_text(text)
            if address is None:
                warnings.append("mine: ignoring {} address {!r} on {}: not an IP address".format(
                    node_id, _short(text), net))
            elif networks[net].contains(address):
                addresses[net] = address
            else:
                warnings.append("mine: ignoring {} address {} outside {} ({})".format(
                    node_id, address, net, networks[net].cidr))
        peers[node_id] = addresses
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
    """(name, keywords, initiator address) of the tunnel to one peer.

    One negotiation per tunnel: the end with the lower address initiates
    (auto=start), the other answers (auto=add); both ends sort the pair the
    same way, so they agree without talking. When both ends initiated
    (TripleO), the two negotiations crossed after a simultaneous start and
    Libreswan could leave each end sending on a Child SA its peer had
    already replaced: up on paper, every packet dropped. Liveness (IKEv2
    DPD) makes the initiator revive the tunnel when the answering end
    restarts, and the answering end drop its SAs when the initiator is gone
    (4.x: dpdaction restart / clear; 5.x: what follows is auto=).
    An ``auto`` override in pillar applies to both ends alike: then no end
    is the initiator (None)."""
    low, high = sorted((own, peer_address), key=_address_order)
    name = "{}-{}-{}-{}".format(prefix, net.name, low, high)
    initiates = own == low
    tail = dict(_liveness_keywords(major, "restart" if initiates else "clear"),
                auto="start" if initiates else "add")
    keywords = _conn_keywords(net, major, (own, own, peer_address, peer_address), tail)
    return name, keywords, None if "auto" in net.options else low


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


def _vip_key(vip_name, networks):
    return "networks:{}:vip".format(vip_name) if vip_name in networks else "extra_vips:" + vip_name


def _check_conn_names(prefix, networks, vips):
    """Refuse two VIPs whose conns (or files) would share a name, on every
    node alike: an extra VIP named ``internal_api-node-to`` has a server
    conn named exactly like internal_api's client conn."""
    owner = {}
    for vip_name in sorted(vips):
        names = ("{}-{}-vip-tunnel".format(prefix, vip_name),
                 "{}-{}-node-to-vip-tunnel".format(prefix, vip_name),
                 "file {}-{}-vip-tunnels".format(prefix, vip_name))
        for name in names:
            if name in owner:
                fail(_vip_key(vip_name, networks), "gives {}, which the VIP tunnels of {!r} have too".format(
                    name.replace("file ", "the file ") if name.startswith("file ") else "a conn named " + name,
                    owner[name]))
            owner[name] = vip_name
    for net_name in networks:
        name = "file {}-{}-node-to-node-tunnels".format(prefix, net_name)
        if name in owner:
            fail("networks:" + net_name, "its node-to-node file collides with the VIP tunnels of {!r}".format(
                owner[name]))


def _file_path(config_dir, prefix, label, kind):
    return "{}/{}-{}.{}".format(config_dir.rstrip("/"), prefix, label, kind)


def _parse_skip(conf, networks, extra_vips):
    """(control plane, networks skipped, extra VIPs skipped).

    The control plane is never tunneled, whatever ``skip_networks`` says:
    tunneling it could cut the Salt master off from its minions.
    ``skip_networks`` adds networks (and extra VIPs, TripleO's ``redis``)."""
    control_plane = _name(conf.get("control_plane", DEFAULT_CONTROL_PLANE), "control_plane", "network name")
    raw = conf.get("skip_networks")
    if raw is None:
        raw = []
    if not isinstance(raw, list):
        fail("skip_networks", "must be a list of network or extra VIP names")
    skipped_vips = set()
    for name in raw:
        if isinstance(name, str) and name in extra_vips:
            skipped_vips.add(name)
        elif not isinstance(name, str) or name not in networks:
            fail("skip_networks", "{!r} is neither a network of ipsec:networks nor an extra VIP of "
                                  "ipsec:extra_vips".format(_short(name)))
    return control_plane, {control_plane} | (set(raw) - skipped_vips), skipped_vips


def _flag(value, key, default):
    """A pillar boolean: YAML true/false only (the string "false" is truthy)."""
    if value is None:
        return default
    if not isinstance(value, bool):
        fail(key, "must be true or false, got {!r}".format(_short(value)))
    return value


def _pattern(value, key, regex, what):
    if not isinstance(value, str) or not regex.fullmatch(value):
        fail(key, "{!r} {}".format(_short(value), what))
    return value


def parse_interval(value, key="pacemaker:monitor_interval"):
    """A pacemaker interval or timeout from pillar (int seconds or '10s',
    '1min'), > 0."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        fail(key, "{!r} is not a pacemaker interval (e.g. 10s, 1min, 30)".format(_short(value)))
    text = str(value)
    if not INTERVAL_RE.fullmatch(text) or not int(re.match(r"[0-9]+", text).group()):
        fail(key, "{!r} is not a pacemaker interval (e.g. 10s, 1min, 30)".format(_short(value)))
    return text if isinstance(value, str) else "{}s".format(value)


# Seconds per unit of a pacemaker duration (INTERVAL_RE's units).
DURATION_UNITS = {"": 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hr": 3600,
                  "ms": 0.001, "msec": 0.001, "us": 0.000001, "usec": 0.000001}
# Pacemaker's own default: the agent's start waits for pluto up to half of
# it and bounds every pluto call to 3/4 of it; less gets a stop killed
# (and the node fenced) on a busy node.
MIN_OP_TIMEOUT = 20


def parse_op_timeout(value, key):
    """A start/stop op timeout from pillar: a pacemaker interval of at least
    MIN_OP_TIMEOUT seconds."""
    text = parse_interval(value, key)
    number, unit = re.fullmatch(r"([0-9]+)([a-z]*)", text).groups()
    if int(number) * DURATION_UNITS[unit] < MIN_OP_TIMEOUT:
        fail(key, "{!r} is shorter than {}s: a stop that times out gets the node fenced".format(
            _short(value), MIN_OP_TIMEOUT))
    return text


def parse_pacemaker(conf, warnings):
    """``ipsec:pacemaker``: the VIP tunnel resources' settings."""
    pacemaker = _mapping(conf.get("pacemaker"), "pacemaker")
    warnings.extend(unknown_keys("pacemaker", pacemaker, "pacemaker"))
    vip_resource = _pattern(pacemaker.get("vip_resource", DEFAULT_VIP_RESOURCE), "pacemaker:vip_resource",
                            VIP_RESOURCE_RE, "is not a resource name template")
    try:
        vip_resource.format(address="198.51.100.1", name="x", network="x")
    except (KeyError, IndexError, ValueError):
        fail("pacemaker:vip_resource", "may only use {address}, {name} and {network}")
    apply_from = pacemaker.get("apply_from")
    if apply_from is not None:
        _pattern(apply_from, "pacemaker:apply_from", MINION_ID_RE, "is not a minion id")
    return {
        # None: follow pacemaker (managed on cluster nodes where it runs).
        "manage": _flag(pacemaker.get("manage"), "pacemaker:manage", None),
        "resource_prefix": _name(pacemaker.get("resource_prefix", DEFAULT_RESOURCE_PREFIX),
                                 "pacemaker:resource_prefix", "resource prefix"),
        "vip_resource": vip_resource,
        "apply_from": apply_from,
        "monitor_interval": parse_interval(pacemaker.get("monitor_interval", DEFAULT_MONITOR_INTERVAL)),
        "start_timeout": parse_op_timeout(pacemaker.get("start_timeout", DEFAULT_START_TIMEOUT),
                                          "pacemaker:start_timeout"),
        "stop_timeout": parse_op_timeout(pacemaker.get("stop_timeout", DEFAULT_STOP_TIMEOUT),
                                         "pacemaker:stop_timeout"),
    }


def parse_firewall(conf, warnings):
    """``ipsec:firewall``: whether and how the formula opens IKE/ESP."""
    firewall = _mapping(conf.get("firewall"), "firewall")
    warnings.extend(unknown_keys("firewall", firewall, "firewall"))
    backend = firewall.get("backend", "nftables")
    if backend not in ("nftables", "iptables"):
        fail("firewall:backend", "{!r} must be nftables or iptables".format(_short(backend)))
    return {
        "manage": _flag(firewall.get("manage"), "firewall:manage", True),
        "persist": _flag(firewall.get("persist"), "firewall:persist", True),
        "backend": backend,
        "table": _pattern(firewall.get("table", "ipsec_formula"), "firewall:table", TABLE_RE,
                          "must be 1-32 letters, digits or '_', starting with a letter"),
    }


def parse_clean(conf, warnings):
    """``ipsec:clean``: what ``ipsec.clean`` removes besides the formula's own objects."""
    clean = _mapping(conf.get("clean"), "clean")
    warnings.extend(unknown_keys("clean", clean, "clean"))
    return {"remove_package": _flag(clean.get("remove_package"), "clean:remove_package", False)}


def _merge(base, override):
    merged = dict(base)
    for key, value in override.items():
        if isinstance(merged.get(key), dict) and isinstance(value, dict):
            value = _merge(merged[key], value)
        merged[key] = value
    return merged


def _path(value, key):
    """An absolute, normalised path of plain characters (it reaches config
    lines, command arguments and files the formula writes or deletes)."""
    if not isinstance(value, str) or not PATH_RE.fullmatch(value) or any(
            part in (".", "..") for part in value.split("/")):
        fail(key, "{!r} must be an absolute normalised path of letters, digits and . _ + - "
                  "(not '/' itself)".format(_short(value)))
    return value


def parse_lookup(conf, os_family=None, warnings=None):
    """``ipsec:lookup`` over the built-in defaults and the OS family's
    values: every path, package, service and agent name the formula uses on
    the node, validated. The one place these defaults live (``ipsec.lookup``
    gives them to the SLS files)."""
    override = _mapping(_mapping(conf, "").get("lookup"), "lookup")
    merged = _merge(_merge(DEFAULT_LOOKUP, OS_FAMILY_LOOKUP.get(os_family, {})), override)
    if warnings is not None:
        warnings.extend(unknown_keys("lookup", override, "lookup"))
    lookup = {}
    for section, names in LOOKUP_SECTIONS.items():
        value = _mapping(merged.get(section), "lookup:" + section)
        if warnings is not None and section in override:
            warnings.extend(unknown_keys("lookup:" + section, override[section] or {}, "lookup:" + section))
        lookup[section] = {}
        for name, kind in names.items():
            key = "lookup:{}:{}".format(section, name)
            item = value.get(name)
            if kind == "flag":
                lookup[section][name] = _flag(item, key, True)
            elif kind == "path?":
                lookup[section][name] = None if item is None else _path(item, key)
            elif kind == "path":
                lookup[section][name] = _path(item, key)
            else:
                lookup[section][name] = _pattern(item, key, kind, "is not a valid name "
                                                 "(letters, digits and . _ + @ -, not starting with '-')")
    for name in LOOKUP_PATHS:
        lookup[name] = _path(merged.get(name), "lookup:" + name)
    return lookup


MINE_TARGET_TYPES = ("glob", "pcre", "list", "grain", "grain_pcre", "pillar", "pillar_pcre", "compound",
                     "ipcidr", "nodegroup", "range")
MINE_TARGET_RE = re.compile(r"[\x20-\x7e]{1,1024}")
MINE_FUNCTION_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\.[A-Za-z_][A-Za-z0-9_]*")
VERSION_RE = re.compile(r"([3-5])\.([0-9]{1,3})(?:\.[0-9]{1,3})?")


def parse_mine(conf, warnings):
    """``ipsec:mine``: where peers come from when there is no ``ipsec:nodes``."""
    mine = _mapping(conf.get("mine"), "mine")
    warnings.extend(unknown_keys("mine", mine, "mine"))
    tgt_type = mine.get("tgt_type", "glob")
    if tgt_type not in MINE_TARGET_TYPES:
        fail("mine:tgt_type", "{!r} must be one of {}".format(_short(tgt_type), ", ".join(MINE_TARGET_TYPES)))
    return {
        "target": _pattern(mine.get("target", "*"), "mine:target", MINE_TARGET_RE, "is not a target expression"),
        "tgt_type": tgt_type,
        "function": _pattern(mine.get("function", "ipsec.addresses"), "mine:function", MINE_FUNCTION_RE,
                             "is not a function name (module.function)"),
    }


def _persistence(backend, paths):
    """Where the backend's rules persist (the lookup's paths for the
    backend, under the lookup's names), and the service that loads them at
    boot (nftables only: the nftables package ships it; iptables-persistent
    or iptables-services is the operator's choice, docs/operations.md)."""
    if backend == "nftables":
        return {"persist_files": {name: paths[name] for name in ("nft_conf", "nft_file")},
                "persist_service": paths["nft_service"]}
    return {"persist_files": {name: paths[name] for name in ("iptables_rules_v4", "iptables_rules_v6")},
            "persist_service": None}


def parse_libreswan_version(conf):
    """``ipsec:libreswan_version`` ("5.2"): (version text, major) or None."""
    pinned = conf.get("libreswan_version")
    if pinned is None:
        return None
    match = VERSION_RE.fullmatch(str(pinned)) if isinstance(pinned, (str, int, float)) else None
    if not match or isinstance(pinned, bool):
        fail("libreswan_version", "{!r} is not a Libreswan 3.x, 4.x or 5.x version".format(_short(pinned)))
    return "{}.{}".format(match.group(1), match.group(2)), int(match.group(1))


def parse_settings(conf, os_family=None, warnings=None):
    """Every setting that is not topology, validated: what ``ipsec.clean``
    needs works with an otherwise broken pillar (prefix, lookup, firewall,
    pacemaker, clean)."""
    conf = _mapping(conf, "")
    warnings = [] if warnings is None else warnings
    lookup = parse_lookup(conf, os_family, warnings)
    firewall = parse_firewall(conf, warnings)
    firewall.update(_persistence(firewall["backend"], lookup["firewall"]))
    return {
        "prefix": _name(conf.get("prefix", DEFAULT_PREFIX), "prefix", "prefix"),
        "lookup": lookup,
        "firewall": firewall,
        "pacemaker": parse_pacemaker(conf, warnings),
        "clean": parse_clean(conf, warnings),
        "mine": parse_mine(conf, warnings),
        "cluster": parse_cluster(conf),
        "libreswan_version": parse_libreswan_version(conf),
        # Replace what tripleo-ipsec left (files, conns, its pacemaker
        # resources and their pcs constraints) instead of refusing to start.
        "adopt_tripleo": _flag(conf.get("adopt_tripleo"), "adopt_tripleo", False),
    }


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
        if not isinstance(nodes, list) or not all(isinstance(n, str) and MINION_ID_RE.fullmatch(n) for n in nodes):
            fail("cluster:nodes", "must be a list of minion ids")
        return "nodes", nodes
    if cluster.get("grain") is not None:
        grain = cluster["grain"]
        if not isinstance(grain, str) or not GRAIN_MATCH_RE.fullmatch(grain):
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


def build_plan(conf, node_id, own_ips, major=4, config_dir=None,
               cluster_node=False, mine_data=None, os_family=None, pacemaker_running=False,
               require_psk=True):
    """Compute the plan of one node: the gate every input passes.

    conf:        the ``ipsec`` pillar subtree (dict)
    node_id:     this minion's id
    own_ips:     this host's IP addresses (grains ipv4 + ipv6)
    major:       installed Libreswan major version (3, 4, 5)
    config_dir:  override of lookup ``config_dir`` (tests); None: the lookup's
    cluster_node: whether this node runs pacemaker (gets VIP server conns)
    mine_data:   {minion_id: {network: address}} used when ``ipsec:nodes``
                 is absent
    os_family:   grain ``os_family`` (per-family lookup defaults)
    pacemaker_running: whether pacemaker runs here (its CIB answers): with
                 ``pacemaker:manage`` unset, the VIP tunnel resources are
                 managed on cluster nodes where it runs (TripleO's default)
    require_psk: False in derived key mode (``ipsec:keys``, _utils/ipsec_keys.py)

    Every value any state, module or template of the formula uses comes out
    of here validated (``plan["lookup"]``, ``["firewall"]``,
    ``["pacemaker"]``, ``["clean"]``, ...); the PSK is checked here and only
    ever read again by the secrets renderer.
    """
    conf = _mapping(conf, "")
    warnings = unknown_keys("", conf, "")
    problem = psk_problem(conf.get("psk")) if require_psk else None
    if problem:
        fail("psk", problem)
    settings = parse_settings(conf, os_family, warnings)
    prefix = settings["prefix"]
    if config_dir is None:
        config_dir = settings["lookup"]["config_dir"]
    defaults = _parse_defaults(conf)
    config_setup = dict(DEFAULT_CONFIG_SETUP)
    config_setup.update(parse_options(conf.get("config_setup"), "config_setup", CONFIG_SETUP_KEYWORDS))
    config_setup = {k: v for k, v in config_setup.items() if v is not None}
    for section in ("cluster",):
        warnings.extend(unknown_keys(section, _mapping(conf.get(section), section), section))
    pacemaker = dict(settings["pacemaker"])
    if pacemaker["manage"] is None:
        pacemaker["manage"] = bool(cluster_node and pacemaker_running)

    networks = _parse_networks(conf, defaults, warnings)
    extra_vips = _parse_extra_vips(conf, networks, warnings)
    control_plane, skip, skipped_vips = _parse_skip(conf, networks, extra_vips)
    vips = _all_vips(networks, extra_vips)
    _check_conn_names(prefix, networks, vips)
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
    if not peers:
        warnings.append(
            "no peers: {} lists no other node; node-to-node tunnels need peers from pillar "
            "ipsec:nodes or the Salt mine (mine_functions: ipsec.addresses, then mine.update)".format(
                "ipsec:nodes" if from_inventory else "the mine"))

    plan = {
        "node": str(node_id),
        "prefix": prefix,
        "libreswan_major": major,
        "cluster_node": bool(cluster_node),
        "peer_source": "pillar" if from_inventory else "mine",
        "addresses": own,
        "control_plane": control_plane,
        "config_setup": config_setup,
        "networks": {},
        "connections": {},
        "secrets": [],
        "files": {},
        "vips": {},
        "lookup": settings["lookup"],
        "firewall": dict(settings["firewall"], networks={}),
        "pacemaker": pacemaker,
        "clean": settings["clean"],
        "mine": settings["mine"],
        "adopt_tripleo": settings["adopt_tripleo"],
        "warnings": warnings,
    }

    def add_file(path, kind):
        return plan["files"].setdefault(path, {
            "kind": kind,
            "mode": CONF_MODE if kind == "conf" else SECRETS_MODE,
            "connections": [],
        })

    def add_conn(name, path, net, role, peer, keywords, key, extra=None):
        if name in plan["connections"]:
            fail(key, "gives a conn named {}, which the plan already has for {} {}".format(
                name, plan["connections"][name]["role"], plan["connections"][name]["network"]))
        plan["connections"][name] = dict({
            "file": path, "network": net.name, "role": role, "peer": peer, "keywords": keywords,
        }, **(extra or {}))
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
            "control_plane": name == control_plane,
            "peers": net_peers,
        }
        if not tunneled:
            continue
        plan["firewall"]["networks"][name] = str(net.cidr)
        conf_path = _file_path(config_dir, prefix, name + "-node-to-node-tunnels", "conf")
        secrets_path = _file_path(config_dir, prefix, name + "-node-to-node-tunnels", "secrets")
        for peer_id, peer_address in sorted(net_peers.items(), key=lambda item: _address_order(item[1])):
            conn, keywords, initiator = _node_to_node(net, address, peer_address, prefix, major)
            # initiator: the address of the end that starts the tunnel (verify
            # expects the answering end up too), None when pillar sets auto.
            add_conn(conn, conf_path, net, "node-to-node", peer_id, keywords, "networks:" + name,
                     {"initiator": initiator})
            add_secret(secrets_path, [address, peer_address])

    for vip_name, (net_name, vip_address) in sorted(vips.items()):
        net = networks[net_name]
        address = own.get(net_name)
        if net_name in skip or vip_name in skipped_vips or address is None:
            continue
        key = _vip_key(vip_name, networks)
        conf_path = _file_path(config_dir, prefix, vip_name + "-vip-tunnels", "conf")
        secrets_path = _file_path(config_dir, prefix, vip_name + "-vip-tunnels", "secrets")
        client, client_keywords = _vip_client(net, vip_name, vip_address, address, prefix, major)
        server = None
        if cluster_node:
            server, server_keywords = _vip_server(net, vip_name, vip_address, prefix, major)
            add_conn(server, conf_path, net, "vip-server", vip_address, server_keywords, key)
        add_conn(client, conf_path, net, "vip-client", vip_address, client_keywords, key)
        add_secret(secrets_path, list(_vip_ids(prefix, vip_name)))
        if cluster_node:
            plan["vips"][vip_name] = {
                "network": net_name,
                "address": vip_address,
                "resource": "{}-{}".format(pacemaker["resource_prefix"], vip_name),
                "vip_resource": pacemaker["vip_resource"].format(address=vip_address, name=vip_name, network=net_name),
                "tunnel": server,
                "fallback_tunnel": client,
            }
    return plan
