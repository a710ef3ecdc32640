"""
Firewall rules of ipsec-formula: pure formatting and parsing, no I/O.

The plan's ``firewall`` section lists the tunneled networks; every network
gets, inbound from and outbound to its CIDR: IKE (udp 500), NAT-T
(udp 4500), ESP and AH. A rule is the tuple
``(chain, family, cidr, proto, port)``: chain "input"/"output", family 4/6,
proto "udp"/"esp"/"ah", port 500/4500/None.

Two backends:
- nftables: a table of the formula's own (``inet <table>``), replaced whole
  in one transaction when it differs from the plan;
- iptables: rules at the top of INPUT/OUTPUT of iptables/ip6tables, marked
  with the comment ``ipsec-formula`` so they can be found and removed.
"""

import json

import netaddr

COMMENT = "ipsec-formula"
CHAIN_PRIORITY = -10  # before the usual filter chains (priority 0)
IPT_CHAINS = {"input": "INPUT", "output": "OUTPUT"}


def desired_rules(firewall):
    """Rules for the plan's ``firewall`` section, in a stable order."""
    rules = []
    for chain in ("input", "output"):
        for name in sorted(firewall["networks"]):
            cidr = firewall["networks"][name]
            family = netaddr.IPNetwork(cidr).version
            for proto, port in (("udp", 500), ("udp", 4500), ("esp", None), ("ah", None)):
                rules.append((chain, family, cidr, proto, port))
    return rules


# --- nftables ---------------------------------------------------------------

def _nft_rule(rule):
    chain, family, cidr, proto, port = rule
    direction = "saddr" if chain == "input" else "daddr"
    match = "{} {} {}".format("ip" if family == 4 else "ip6", direction, cidr)
    if proto == "udp":
        return "{} udp dport {} accept".format(match, port)
    return "{} meta l4proto {} accept".format(match, proto)


def nft_script(table, rules, replace):
    """An nft -f script that (re)creates the table atomically.

    ``replace``: the table exists and is deleted in the same transaction.
    """
    lines = ["table inet {}".format(table)]
    if replace:
        lines.append("delete table inet {}".format(table))
    lines.append("table inet {} {{".format(table))
    for chain in ("input", "output"):
        lines.append("\tchain {} {{".format(chain))
        lines.append("\t\ttype filter hook {} priority {}; policy accept;".format(chain, CHAIN_PRIORITY))
        lines.extend("\t\t" + _nft_rule(rule) for rule in rules if rule[0] == chain)
        lines.append("\t}")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _match(expr):
    match = expr.get("match") if isinstance(expr, dict) else None
    if not match or match.get("op") != "==":
        return None
    return match.get("left"), match.get("right")


def _parse_nft_rule(chain, exprs):
    """A live rule's expressions back to a rule tuple, or None if foreign."""
    if len(exprs) != 3 or exprs[2] != {"accept": None}:
        return None
    address, kind = _match(exprs[0]), _match(exprs[1])
    if not address or not kind:
        return None
    payload = address[0].get("payload", {}) if isinstance(address[0], dict) else {}
    prefix = address[1].get("prefix") if isinstance(address[1], dict) else None
    field = "saddr" if chain == "input" else "daddr"
    if payload.get("field") != field or payload.get("protocol") not in ("ip", "ip6") or not prefix:
        return None
    family = 4 if payload["protocol"] == "ip" else 6
    cidr = "{}/{}".format(prefix["addr"], prefix["len"])
    left = kind[0] if isinstance(kind[0], dict) else {}
    if left.get("payload") == {"protocol": "udp", "field": "dport"} and kind[1] in (500, 4500):
        return (chain, family, cidr, "udp", kind[1])
    if left.get("meta") == {"key": "l4proto"} and kind[1] in ("esp", "ah"):
        return (chain, family, cidr, kind[1], None)
    return None


def parse_nft_table(text):
    """``nft -j list table inet T`` -> {"chains": {...}, "rules": [...]}.

    Rules of a shape the formula never writes come back as ("foreign", ...)
    so the table is seen as different from the plan.
    """
    chains, rules = {}, []
    for item in json.loads(text).get("nftables", []):
        if "chain" in item:
            chain = item["chain"]
            chains[chain["name"]] = (chain.get("type"), chain.get("hook"), chain.get("prio"), chain.get("policy"))
        elif "rule" in item:
            rule = item["rule"]
            parsed = _parse_nft_rule(rule.get("chain"), rule.get("expr", []))
            rules.append(parsed or ("foreign", rule.get("chain"), json.dumps(rule.get("expr"), sort_keys=True)))
    return {"chains": chains, "rules": rules}


def nft_matches(live, rules):
    """Whether a parsed live table is exactly the desired one."""
    expected_chains = {c: ("filter", c, CHAIN_PRIORITY, "accept") for c in ("input", "output")}
    return live["chains"] == expected_chains and live["rules"] == list(rules)


# --- iptables ---------------------------------------------------------------

def iptables_line(rule, action="-A"):
    """The rule as `iptables -S` prints it (so listings compare as text)."""
    chain, _, cidr, proto, port = rule
    side = "-s" if chain == "input" else "-d"
    spec = [action, IPT_CHAINS[chain], side, cidr, "-p", proto]
    if proto == "udp":
        spec += ["-m", "udp", "--dport", str(port)]
    spec += ["-m", "comment", "--comment", COMMENT, "-j", "ACCEPT"]
    return spec


def iptables_ours(save_text):
    """The formula's rules in `iptables -S` output, as argument lists."""
    return [
        line.split()
        for line in save_text.splitlines()
        if line.startswith("-A ") and "--comment {}".format(COMMENT) in line
    ]


def rules_by_family(rules):
    return {4: [r for r in rules if r[1] == 4], 6: [r for r in rules if r[1] == 6]}


def describe(rule):
    chain, family, cidr, proto, port = rule
    return "{} {} {}{}".format(chain, "from" if chain == "input" else "to", cidr,
                               " {} {}".format(proto, port) if port else " " + proto)


# --- persistence --------------------------------------------------------------

PERSIST_HEADER = ("# Managed by Salt (ipsec-formula): its firewall table, included by the nftables\n"
                  "# service's config so it is loaded at boot. ipsec.clean removes it.\n")


def nft_persisted(table, rules):
    """The formula's nftables file: the very script it loads at run time,
    replacing the table whole, so loading it again (a reload without
    ``flush ruleset``) never doubles a rule."""
    return PERSIST_HEADER + nft_script(table, rules, replace=True)


def is_persisted_file(text):
    """Whether ``text`` is a table file the formula wrote."""
    return text.startswith(PERSIST_HEADER)


def iptables_saved_lines(rules):
    """The rules as ``iptables-save`` lists them (one text line each)."""
    return [" ".join(iptables_line(rule)) for rule in rules]
