"""
Parsing of Libreswan's ``ipsec whack --status`` and ``--trafficstatus``
text: pure, no Salt dunders, no I/O.

``parse_status(text, traffic=None)`` returns one dict for every output
generation seen in the field:

- 3.x and 4.x prefix every line with a three-digit code (``000 ``, traffic
  lines ``006 ``; 3.x separator lines are a bare ``000``); 5.0 dropped the
  prefixes.
- State lines carry an internal state name and a human text:
  ``STATE_V2_ESTABLISHED_IKE_SA (established IKE SA)`` (4.x),
  ``STATE_PARENT_I3 (PARENT SA established)`` (3.x),
  ``ESTABLISHED_CHILD_SA (established Child SA)`` (5.1-5.3) or the human
  text alone, ``established Child SA;`` (5.4+). Libreswan's maintainers call
  the names internal and changing, so every decision here is made on the
  human text ("established ... SA" / "... SA established"), and the name is
  only kept for display.
- Lines that are not understood are counted and ignored, never fatal; a
  text with nothing Libreswan-like at all is an error.

The summary lines (``Total IPsec connections``, ``IKE SAs``, ``IPsec
SAs``) have the same text in every version; 5.3 added ``routed N``.
"""

import re

from salt.exceptions import SaltInvocationError

GENERATIONS = ("3", "4", "5")

_ENUM_TEXT_RE = re.compile(r"([A-Z][A-Z0-9_]*) \(([^)]*)\)")
_ESTABLISHED_RE = re.compile(
    r"\bestablished (?:IKE|ISAKMP|PARENT|Child|CHILD|IPsec|IPSEC) SA\b"
    r"|\b(?:IKE|ISAKMP|PARENT|Child|CHILD|IPsec|IPSEC) SA established\b"
)
_CHILD_WORD_RE = re.compile(r"\b(?:Child|CHILD|IPsec|IPSEC) SA\b|\bQ[IR]\d")
_IKE_REKEY_RE = re.compile(r"\brekey IKE SA\b", re.I)
_PARENT_RE = re.compile(r"\b(?:IKE|ISAKMP|parent) SA #(\d+)|\bisakmp#(\d+)")
_CHILD_ENUM_RE = re.compile(r"CHILD|IPSEC|QUICK")
_SPI_RE = re.compile(r"(esp|ah|comp)[.:]([0-9a-fA-F]+)@(\S+)")
_TRAFFIC_RE = re.compile(r"\b(ESP|AH|IPCOMP)(in|out)=(\d+)([KMGT]?)B?")
_NEWEST_SA_RE = re.compile(r"newest (IKE|ISAKMP|IPsec|Child) SA: #(\d+)")
_EROUTE_OWNER_RE = re.compile(r"eroute owner: #(\d+)")
_ORIENTED_RE = re.compile(r"\b(un)?oriented\b")
_COUNTER_RE = re.compile(r"([A-Za-z-]+)\((\d+)\)")
_TOTAL_RE = re.compile(r"([a-z-]+) (\d+)")
_KEYVAL_RE = re.compile(r"(\w+)=('[^']*'|[^,]*)")
_VERSION_RE = re.compile(r"\bpluto_version=v?(\d+)\.(\d+)")
_PENDING_RE = re.compile(r'pending (?:CHILD|Child|IPsec|Phase 2) SA for "([^"]*)"((?:\[\d+\])*)')
_PORT_TAIL_RE = re.compile(r":(\d+)$")
_SA_TOKEN_RE = re.compile(r"(?:esp|ah|comp|tun)[.:]|Traffic:")
# The common state line in one match: '#2: "c"[1] 198.51.100.20:500 NAME
# (text); tail' or '#2: "c":500 text; tail' (5.4+); anything else takes
# the slower, more tolerant path of hash_line.
_STATE_LINE_RE = re.compile(
    r'#(\d+): "([^"]*)"((?:\[\d+\])*)(?::(\d+)| (?:\.\.\.)?\[?([^\s\]@]+?)\]?:(\d+)) '
    # An IPv6 instance address on an SA detail line ('2001:db8::20 esp:...')
    # looks like address:port: what follows a state's port is never an SPI.
    r'(?!(?:esp|ah|comp|tun)[.:])'
    r'(?:([A-Z][A-Z0-9_]*) \(([^)]*)\)|([^;(]*))(.*)'
)

_UNITS = {"": 1, "K": 1024, "M": 1024 ** 2, "G": 1024 ** 3, "T": 1024 ** 4}


def _quoted_name(text):
    """``"name"[1][2]...`` at the start of ``text`` -> (base, instance
    suffix, index after it), or None when the quotes or brackets are
    unbalanced."""
    end = text.find('"', 1)
    if end < 0:
        return None
    pos = end + 1
    while pos < len(text) and text[pos] == "[":
        close = text.find("]", pos)
        if close < 0:
            return None
        pos = close + 1
    return text[1:end], text[end + 1:pos], pos


def _fail(problem):
    raise SaltInvocationError("ipsec status: " + problem)


def _new_summary():
    return {
        "connections": {"loaded": None, "active": None, "routed": None},
        "ike_sas": {"total": None, "half_open": None, "open": None, "authenticated": None, "anonymous": None},
        "ipsec_sas": {"total": None, "authenticated": None, "anonymous": None},
    }


class _Parser:
    """One pass over the lines; ``result()`` builds the returned dict."""

    def __init__(self):
        self.summary = _new_summary()
        self.connections = {}
        self.states = {}
        self.traffic = []
        self.interfaces = []
        self.pluto_version = None
        self.lines = 0
        self.prefixed = 0
        self.recognised = 0
        self.ignored = 0
        self.markers = set()
        self._verdicts = {}

    # --- connections --------------------------------------------------------

    def _conn(self, key, base=None, instance=None):
        conn = self.connections.get(key)
        if conn is None:
            if base is None:
                base, instance = _split_key(key)
            conn = self.connections[key] = {
                "name": key,
                "base": base,
                "instance": instance or None,
                "local": None,
                "local_id": None,
                "local_subnet": None,
                "remote": None,
                "remote_id": None,
                "remote_subnet": None,
                "routing": None,
                "oriented": None,
                "eroute_owner": None,
                "newest_ike_sa": None,
                "newest_child_sa": None,
                "ike_sas": [],
                "child_sas": [],
                "pending_child_sas": [],
            }
        return conn

    def connection_line(self, line):
        name = _quoted_name(line)
        if name is None:
            return False
        base, instance, pos = name
        length = len(line)
        key = base + instance
        if pos < length and line[pos] == ":":
            body = line[pos + 1:]
        elif pos < length and line[pos] == " ":
            # Older instance form: '"road"[1] 192.0.2.9: ...' (3.x adds
            # '...' before the address). The address ends at the first ':'
            # followed by a blank (IPv6 colons never are).
            split = line.find(": ", pos)
            if split < 0:
                if not line.endswith(":"):
                    return False
                split = length - 1
            body = line[split + 1:]
        else:
            return False
        conn = self.connections.get(key)
        if conn is not None and body.startswith("  "):
            # Detail line of a known conn: only two of ~20 matter.
            if "oriented" in body:
                match = _ORIENTED_RE.search(body)
                if match:
                    conn["oriented"] = match.group(1) is None
            if "SA: #" in body:
                for kind, serial in _NEWEST_SA_RE.findall(body):
                    field = "newest_ike_sa" if kind in ("IKE", "ISAKMP") else "newest_child_sa"
                    conn[field] = int(serial) or None
            return True
        first = body.split(";", 1)[0].strip()
        if "..." in first and ": " not in first:
            conn = self._conn(key, base, instance)
            _endpoints(conn, first)
            parts = body.split(";")
            if len(parts) > 1:
                conn["routing"] = parts[1].strip() or None
            match = _EROUTE_OWNER_RE.search(body)
            if match:
                conn["eroute_owner"] = int(match.group(1)) or None
            return True
        if conn is None:
            return False
        # Other per-conn lines (5.x "host: oriented; ..." and friends).
        match = _ORIENTED_RE.search(body) if "oriented" in body else None
        if match:
            conn["oriented"] = match.group(1) is None
        return True

    # --- states, SA details, traffic ----------------------------------------

    def hash_line(self, line):
        match = _STATE_LINE_RE.match(line)
        if match:
            serial, base, instance, port, peer, peer_port, enum, human, bare, tail = match.groups()
            if enum is None:
                human = bare.strip()
            self.state(int(serial), base + instance, peer, int(port or peer_port), enum, human, tail)
            return True
        colon = line.find(": ")
        if colon < 2 or not line[1:colon].isdigit():
            return False
        serial = int(line[1:colon])
        rest = line[colon + 2:]
        if rest.startswith("pending"):
            match = _PENDING_RE.match(rest)
            if not match:
                return False
            self._conn(match.group(1) + match.group(2))["pending_child_sas"].append(serial)
            return True
        if not rest.startswith('"'):
            return False
        name = _quoted_name(rest)
        if name is None:
            return False
        base, instance, pos = name
        key = base + instance
        tail = rest[pos:]
        if tail.startswith(":"):
            # '#2: "c":500 STATE_... (text); ...'
            port, _, text = tail[1:].partition(" ")
            if not port.isdigit():
                return False
            self.state_text(serial, key, None, int(port), text)
            return True
        if tail.startswith(","):
            self.traffic_line(serial, key, None, tail)
            return True
        if not tail.startswith(" "):
            return False
        token, _, after = tail[1:].partition(" ")
        if token.endswith(","):
            self.traffic_line(serial, key, _clean_peer(token[:-1]), "," + after)
            return True
        if _SA_TOKEN_RE.match(token):
            self.sa_detail(serial, key, tail)
            return True
        # The token is an instance's peer address ('...' before it in 3.x).
        if _SA_TOKEN_RE.match(after):
            self.sa_detail(serial, key, after)
            return True
        match = _PORT_TAIL_RE.search(token)
        if match and after:
            # '#3: "c"[1] 198.51.100.20:500 STATE_...' (IPv6: the last ':N')
            self.state_text(serial, key, _clean_peer(token[:match.start()]), int(match.group(1)), after)
            return True
        return False

    def state_text(self, serial, key, peer, port, text):
        match = _ENUM_TEXT_RE.match(text)
        if match:
            self.state(serial, key, peer, port, match.group(1), match.group(2), text[match.end():])
        else:
            human, _, tail = text.partition(";")
            self.state(serial, key, peer, port, None, human.strip(), ";" + tail)

    def state(self, serial, key, peer, port, enum, human, tail):
        parent = _PARENT_RE.search(tail) if ("SA #" in tail or "isakmp#" in tail) else None
        parent_serial = int(parent.group(1) or parent.group(2)) if parent else None
        # The same few (name, text) pairs repeat across thousands of conns.
        cache_key = (enum, human, parent_serial is not None)
        verdict = self._verdicts.get(cache_key)
        if verdict is None:
            verdict = self._verdicts[cache_key] = _classify(enum, human, parent_serial is not None)
            self._version_markers(enum, human)
        if "isakmp#" in tail or "newest ISAKMP" in tail or "newest IPSEC" in tail:
            self.markers.add("3")
        conn = self.connections.get(key) or self._conn(key)
        record = {
            "serial": serial,
            "established": verdict[0],
            "state": enum,
            "text": human,
            "peer": peer,
            "port": port,
            "newest": "; newest" in tail,
        }
        if verdict[1]:
            record.update({
                "ike_sa": parent_serial,
                "eroute_owner": "eroute owner" in tail,
                "protocol": None,
                "spi_in": None,
                "spi_out": None,
                "in_bytes": None,
                "out_bytes": None,
                "bytes_exact": False,
            })
            existing = self.states.get(serial)
            if existing is not None and existing.get("_detail_only"):
                # Detail line came first (never seen, but cheap to allow).
                for field in ("protocol", "spi_in", "spi_out", "in_bytes", "out_bytes", "bytes_exact"):
                    record[field] = existing[field]
                conn["child_sas"].remove(existing)
            conn["child_sas"].append(record)
        else:
            conn["ike_sas"].append(record)
        self.states[serial] = record

    def _version_markers(self, enum, human):
        if enum is None:
            self.markers.add("5.4")
        elif not enum.startswith("STATE_"):
            self.markers.add("5.1")
        elif enum.startswith("STATE_PARENT_"):
            self.markers.add("3")
        if "PARENT SA established" in human or "ISAKMP SA established" in human:
            self.markers.add("3")

    def sa_detail(self, serial, key, text):
        record = self.states.get(serial)
        if record is None or "spi_in" not in record:
            # An SA detail without its state line: an installed IPsec SA.
            record = {
                "serial": serial, "established": True, "state": None, "text": None, "peer": None,
                "port": None, "newest": False, "ike_sa": None, "eroute_owner": False, "protocol": None,
                "spi_in": None, "spi_out": None, "in_bytes": None, "out_bytes": None, "bytes_exact": False,
                "_detail_only": True,
            }
            self._conn(key)["child_sas"].append(record)
            self.states[serial] = record
        head, _, counters = text.partition("Traffic:")
        spis = [token for token in head.split() if token[:3] in ("esp", "ah.", "ah:", "com")]
        spis = [match.groups() for match in map(_SPI_RE.match, spis) if match]
        if spis:
            # Pluto prints the SPI the peer chose (ours to send with) first,
            # then the one we chose (inbound).
            record["protocol"] = spis[0][0]
            record["spi_out"] = spis[0][1].lower()
            if len(spis) > 1:
                record["spi_in"] = spis[1][1].lower()
        if record["bytes_exact"]:
            return
        for _, direction, number, unit in _TRAFFIC_RE.findall(counters):
            value = int(number) * _UNITS[unit]
            field = "in_bytes" if direction == "in" else "out_bytes"
            record[field] = (record[field] or 0) + value

    def traffic_line(self, serial, key, peer, tail):
        fields = {}
        for name, value in _KEYVAL_RE.findall(tail):
            fields[name] = value[1:-1] if value.startswith("'") and value.endswith("'") else value.strip()
        if "inBytes" not in fields and "outBytes" not in fields and "type" not in fields:
            return
        entry = {
            "serial": serial,
            "name": key,
            "peer": peer,
            "type": fields.get("type"),
            "add_time": _int(fields.get("add_time")),
            "in_bytes": _int(fields.get("inBytes")),
            "out_bytes": _int(fields.get("outBytes")),
            "max_bytes": fields.get("maxBytes"),
            "id": fields.get("id"),
        }
        self.traffic.append(entry)

    # --- the other sections -------------------------------------------------

    def interface_line(self, line):
        parts = line.split()
        if len(parts) < 3:
            return False
        device = parts[1].split("/", 1)[0]
        protocol = None
        endpoint = parts[2]
        if parts[2] in ("UDP", "TCP") and len(parts) > 3:
            protocol, endpoint = parts[2], parts[3]
        port = None
        if endpoint.startswith("["):
            address, _, rest = endpoint[1:].partition("]")
            if rest.startswith(":") and rest[1:].isdigit():
                port = int(rest[1:])
        elif "@" in endpoint:
            # 3.x: 'interface eth0/eth0 192.0.2.1@500'
            self.markers.add("3")
            address, _, number = endpoint.partition("@")
            port = int(number) if number.isdigit() else None
        elif endpoint.count(":") == 1:
            address, _, number = endpoint.partition(":")
            port = int(number) if number.isdigit() else None
        else:
            address = endpoint
        if not address or not (":" in address or "." in address):
            return False
        self.interfaces.append({"device": device, "protocol": protocol, "address": address, "port": port})
        return True

    def total_line(self, line):
        values = dict(_TOTAL_RE.findall(line.split(":", 1)[1]))
        if not values:
            return False
        target = self.summary["connections"]
        for field, value in values.items():
            target[field.replace("-", "_")] = int(value)
        return True

    def counter_line(self, section, line):
        values = _COUNTER_RE.findall(line.split(":", 1)[1])
        if not values:
            return False
        target = self.summary[section]
        for field, value in values:
            target[field.replace("-", "_").lower()] = int(value)
        return True

    # --- driver -------------------------------------------------------------

    def feed(self, text):
        lines = prefixed = recognised = ignored = 0
        dispatch = self._dispatch
        for raw in text.splitlines():
            lines += 1
            # Fast path: ~20 detail lines per connection ('000 "c":   policy:
            # ...') of which only the orientation and 'newest' ones matter.
            if (('":  ' in raw or ']:  ' in raw) and "oriented" not in raw and "SA: #" not in raw
                    and (raw[:1] == '"' or raw[4:5] == '"')):
                recognised += 1
                continue
            # "000 text", "006 text", and 3.x's bare "000" separators.
            if raw[:3].isdigit() and len(raw) >= 3 and raw[3:4] in ("", " "):
                prefixed += 1
                line = raw[4:]
            else:
                line = raw
            if not line or line.isspace():
                continue
            try:
                known = dispatch(line)
            except Exception:  # pylint: disable=broad-except
                # A line this parser misreads must never cost the rest.
                known = False
            if known:
                recognised += 1
            else:
                ignored += 1
        self.lines += lines
        self.prefixed += prefixed
        self.recognised += recognised
        self.ignored += ignored

    def _dispatch(self, line):
        first = line[0]
        if first == '"':
            return self.connection_line(line)
        if first == "#":
            return self.hash_line(line)
        if line.startswith("interface "):
            return self.interface_line(line)
        if line.startswith("Total IPsec connections:"):
            return self.total_line(line)
        if line.startswith("IKE SAs:"):
            return self.counter_line("ike_sas", line)
        if line.startswith("IPsec SAs:"):
            return self.counter_line("ipsec_sas", line)
        if "pluto_version=" in line:
            match = _VERSION_RE.search(line)
            if match:
                self.pluto_version = "{}.{}".format(match.group(1), match.group(2))
            return match is not None
        return False

    def merge_traffic(self):
        for entry in self.traffic:
            record = self.states.get(entry["serial"])
            if record is None or "spi_in" not in record:
                record = {
                    "serial": entry["serial"], "established": True, "state": None, "text": None,
                    "peer": entry["peer"], "port": None, "newest": False, "ike_sa": None,
                    "eroute_owner": False, "protocol": None, "spi_in": None, "spi_out": None,
                    "in_bytes": None, "out_bytes": None, "bytes_exact": False,
                }
                self._conn(entry["name"])["child_sas"].append(record)
                self.states[entry["serial"]] = record
            if entry["in_bytes"] is not None:
                record["in_bytes"] = entry["in_bytes"]
            if entry["out_bytes"] is not None:
                record["out_bytes"] = entry["out_bytes"]
            record["bytes_exact"] = True
            record["traffic_id"] = entry["id"]

    def generation(self):
        """("3"|"4"|"5", how it was decided)."""
        if self.pluto_version:
            major = self.pluto_version.split(".", 1)[0]
            if major in GENERATIONS:
                return major, "pluto_version " + self.pluto_version
        if self.prefixed == 0:
            return "5", "no numeric line prefixes"
        if "3" in self.markers:
            return "3", "3.x line formats"
        return "4", "numeric line prefixes"

    def result(self):
        version, source = self.generation()
        for conn in self.connections.values():
            for records in (conn["ike_sas"], conn["child_sas"]):
                records.sort(key=lambda record: record["serial"])
                for record in records:
                    record.pop("_detail_only", None)
        addresses = []
        for interface in self.interfaces:
            if interface["address"] not in addresses:
                addresses.append(interface["address"])
        return {
            "version": version,
            "version_source": source,
            "pluto_version": self.pluto_version,
            "summary": self.summary,
            "interfaces": self.interfaces,
            "addresses": addresses,
            "connections": self.connections,
            "traffic": self.traffic,
            "lines": {"total": self.lines, "recognised": self.recognised, "ignored": self.ignored},
        }


def _classify(enum, human, has_parent):
    """(established, is_child) of one state, from its human text first.

    The internal name is only the last resort: 'CHILD', 'IPSEC' or 'QUICK'
    in it means a Child SA.
    """
    match = _ESTABLISHED_RE.search(human)
    if match:
        return True, _CHILD_WORD_RE.search(match.group(0)) is not None
    if _IKE_REKEY_RE.search(human):
        return False, False
    if has_parent or _CHILD_WORD_RE.search(human):
        return False, True
    return False, enum is not None and _CHILD_ENUM_RE.search(enum) is not None


def _int(value):
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _clean_peer(token):
    token = token[3:] if token.startswith("...") else token
    if token.startswith("[") and token.endswith("]"):
        token = token[1:-1]
    return token or None


def _split_key(key):
    """'road[1]' -> ('road', '[1]'); names never contain '[' in practice."""
    index = key.find("[")
    if index > 0 and key.endswith("]"):
        return key[:index], key[index:]
    return key, None


def _host_and_id(text):
    """'198.51.100.1[@vip]' / '172.16.0.9<172.16.0.9>[id]' -> (host, id)."""
    identity = None
    bracket = text.find("[")
    if bracket >= 0:
        close = text.find("]", bracket)
        identity = text[bracket + 1:close if close > 0 else None] or None
        text = text[:bracket]
    angle = text.find("<")
    if angle >= 0:
        text = text[:angle]
    brace = text.find("{")
    if brace >= 0:
        text = text[:brace]
    return text.strip() or None, identity


def _endpoints(conn, spec):
    """Fill local/remote from 'lsub===lhost[id]---hop...hop---rhost[id]===rsub'.

    Pluto prints its own end first once a conn is oriented.
    """
    left, _, right = spec.partition("...")
    left_subnet = None
    if "===" in left:
        left_subnet, left = left.rsplit("===", 1)
    left = left.split("---", 1)[0]
    right_subnet = None
    if "===" in right:
        right, right_subnet = right.split("===", 1)
    if "---" in right:
        right = right.rsplit("---", 1)[1]
    conn["local"], conn["local_id"] = _host_and_id(left)
    conn["remote"], conn["remote_id"] = _host_and_id(right)
    conn["local_subnet"] = left_subnet.strip() if left_subnet else None
    conn["remote_subnet"] = right_subnet.split(";", 1)[0].strip() if right_subnet else None


def parse_traffic(text):
    """The records of ``ipsec whack --trafficstatus`` (any version).

    An empty text is valid (no IPsec SA is up).
    """
    if not isinstance(text, str):
        _fail("trafficstatus text must be a string, got {}".format(type(text).__name__))
    parser = _Parser()
    parser.feed(text)
    return parser.traffic


def parse_status(text, traffic=None):
    """Parse ``ipsec whack --status`` text (optionally with the
    ``--trafficstatus`` text, or both concatenated) of Libreswan 3.x, 4.x
    or 5.x.

    Returns a dict with (at least):

    - ``version``: output generation guessed, "3", "4" or "5" (from the
      ``pluto_version=`` line when shown, else from the line formats);
    - ``summary``: ``connections`` {loaded, active, routed}, ``ike_sas``
      {total, half_open, open, authenticated, anonymous}, ``ipsec_sas``
      {total, authenticated, anonymous}; ``None`` for what the text does
      not show (``routed`` before 5.3);
    - ``connections``: name as printed without quotes, instance suffix
      kept (``road[1]``) -> endpoints, routing, orientation and its
      ``ike_sas`` / ``child_sas`` (``serial``, ``established``, ``state``,
      ``text``; Child SAs also ``ike_sa``, SPIs, ``in_bytes``/``out_bytes``);
    - ``interfaces`` / ``addresses``: what pluto listens on;
    - ``traffic``: the ``--trafficstatus`` records, exact byte counts that
      also replace the rounded ones of the status text.

    Raises ``SaltInvocationError`` for a non-string, empty or
    unrecognisable text.
    """
    if not isinstance(text, str):
        _fail("status text must be a string, got {}".format(type(text).__name__))
    if not text.strip():
        _fail("the status text is empty (is this the output of `ipsec whack --status`?)")
    parser = _Parser()
    parser.feed(text)
    if traffic is not None:
        if not isinstance(traffic, str):
            _fail("trafficstatus text must be a string, got {}".format(type(traffic).__name__))
        parser.feed(traffic)
    if not parser.recognised:
        first = next((line.strip() for line in text.splitlines() if line.strip()), "")
        _fail("no Libreswan status line found in {} lines (first: {!r}); expected the output of "
              "`ipsec whack --status`".format(parser.lines, first[:80]))
    parser.merge_traffic()
    return parser.result()


# --- Libreswan's other output: version, whack and addconn replies ----------
# (all of Libreswan's text is parsed in this module)

# 3.x/4.x prefix whack replies with a 3-digit code (000-009 information,
# 010-099 errors, 1xx/2xx state progress); 5.x prints none.
_CODE = re.compile(r"^(\d{3}) (.*)$")
_NAMED = re.compile(r'^"([^"]+)"(?:\[\d+\])?(?: #\d+)?:\s*(.*)$')
_NOT_FOUND = re.compile(r"^conn '([^']+)': not found")


def split_code(line):
    """(code or None, text) of one whack reply line."""
    match = _CODE.match(line)
    return (int(match.group(1)), match.group(2)) if match else (None, line)


def parse_loaded(status_text):
    """Sorted names of the conns in ``ipsec whack --status`` output
    (template instances ``"name"[N]`` count as ``name``)."""
    names = set()
    for line in (status_text or "").splitlines():
        text = line[4:] if line[:3].isdigit() and line[3:4] == " " else line
        if not text.startswith('"'):
            continue
        end = text.find('"', 1)
        if end > 1 and text[end + 1:end + 2] in (":", "["):
            names.add(text[1:end])
    return sorted(names)


def total_loaded(status_text):
    """``loaded N`` of the status line ``Total IPsec connections: ...``."""
    match = re.search(r"Total IPsec connections: loaded (\d+)", status_text or "")
    return int(match.group(1)) if match else None


def parse_addconn(stdout, stderr, names):
    """What ``ipsec addconn NAME...`` did to each name.

    ``stdout`` holds pluto's replies (addconn 4.10 prints them only when its
    stdout is a terminal), ``stderr`` addconn's own complaints. Returns
    ``{"added": [...], "rejected": {name: message}, "unknown": [...],
    "warnings": [...], "error": message or None}``: ``unknown`` are names
    no line spoke about, ``error`` a problem of the whole call (config
    not loadable).
    """
    wanted = list(dict.fromkeys(names))
    added, rejected, warnings = [], {}, []
    for line in (stdout or "").replace("\r", "").splitlines():
        code, text = split_code(line.rstrip())
        match = _NAMED.match(text)
        if not match:
            if code is not None and 10 <= code < 100:
                warnings.append(text)
            continue
        name, message = match.group(1), match.group(2)
        if "failed to add connection" in message or (code is not None and 10 <= code < 100):
            rejected.setdefault(name, text)
        elif re.match(r"added IKEv\d connection", message) or message.startswith("added"):
            added.append(name)
    error = None
    for line in (stderr or "").splitlines():
        line = line.strip()
        if not line:
            continue
        match = _NOT_FOUND.match(line)
        if match:
            rejected.setdefault(match.group(1), line)
        elif line.startswith("cannot load config") or "syntax error" in line:
            error = line if error is None else error
        else:
            warnings.append(line)
    added = [name for name in dict.fromkeys(added) if name not in rejected]
    seen = set(added) | set(rejected)
    return {
        "added": added,
        "rejected": rejected,
        "unknown": [name for name in wanted if name not in seen],
        "warnings": warnings,
        "error": error,
    }


# Whack reply codes of a negotiation that is not answered (yet):
# RC_RETRANSMISSION (010) and RC_NORETRANSMISSION (031, "timeout exceeded").
# They say nothing against the conn: pluto keeps it and retries.
NEGOTIATION_CODES = (10, 31)


def whack_errors(stdout, unanswered_ok=False):
    """Error replies (codes 10-99) of a whack call, e.g.
    ``021 no connection named "x"``; ``unanswered_ok``: not those of a
    negotiation the peer has not answered (NEGOTIATION_CODES)."""
    skip = NEGOTIATION_CODES if unanswered_ok else ()
    errors = []
    for line in (stdout or "").replace("\r", "").splitlines():
        code, text = split_code(line.rstrip())
        if code is not None and 10 <= code < 100 and code not in skip:
            errors.append(text)
    return errors


_SECRETS_LINE = re.compile(r'^"([^"]+)" line (\d+): (.*)$')


def secrets_report(stdout):
    """(files loaded, problems) of ``whack --rereadsecrets`` output.

    Pluto quotes the offending token of a malformed secrets line (that is,
    the secret) in its message; problems keep only the file, the line and
    the reason up to the first ``:`` or quote.
    """
    files, problems = [], []
    for line in (stdout or "").replace("\r", "").splitlines():
        code, text = split_code(line.rstrip())
        text = text.strip()
        match = re.match(r'^loading secrets from "([^"]+)"', text)
        if match:
            files.append(match.group(1))
            continue
        if code is not None and code in (0, 2) or not text:
            continue
        if text.startswith("no secrets filename matched") or text == "forgetting secrets":
            continue
        located = _SECRETS_LINE.match(text)
        prefix = ""
        if located:
            prefix = "{} line {}: ".format(located.group(1), located.group(2))
            text = located.group(3)
        reason = re.split(r'[:"]', text, maxsplit=1)[0].strip() or "rejected"
        problems.append(prefix + reason)
    return files, problems


_VERSION = re.compile(r"Libreswan\s+U?(\d+)\.(\d+)")


def parse_version(text):
    """``(major, minor)`` of ``ipsec --version`` output, or None."""
    match = _VERSION.search(text or "")
    return (int(match.group(1)), int(match.group(2))) if match else None
