"""Synthetic ``ipsec whack --status`` / ``--trafficstatus`` text.

DERIVED TEXT, not captured from a running pluto: what each generation
prints is derived from the facts in ../shared/reference/libreswan.md (line
prefixes, summary lines, state names and texts per version, SA detail and
trafficstatus lines) plus a few details confirmed in published ``ipsec
status`` output of Libreswan 3.18-3.25 and 5.3 (marked "public capture"
below). Real 4.10 output is what the integration tests parse; this module
lets unit tests describe one scenario and render it as 3.x, 4.x or 5.x.

    text, traffic = render([Conn("c", "198.51.100.10", "198.51.100.11",
                                 ike="established", child="established")],
                           generation="5.4")
"""

GENERATIONS = ("3", "4.4", "4.10", "5.0", "5.2", "5.3", "5.4")


class Conn:
    """One connection line block and its SAs.

    ike / child: "established", "half-open" (ike only) or None.
    instance: N for a template instance ("name"[N]); template: True for
    the %any template itself.
    """

    def __init__(self, name, local, remote, local_id=None, remote_id=None, ike=None, child=None,
                 instance=None, oriented=True, in_bytes=0, out_bytes=0, routing=None):
        self.name = name
        self.local = local
        self.remote = remote
        self.local_id = local_id
        self.remote_id = remote_id
        self.ike = ike
        self.child = child
        self.instance = instance
        self.oriented = oriented
        self.in_bytes = in_bytes
        self.out_bytes = out_bytes
        self.routing = routing

    @property
    def key(self):
        return self.name + ("[{}]".format(self.instance) if self.instance else "")


def _major(generation):
    return generation.split(".", 1)[0]


def _minor(generation):
    return int(generation.split(".", 1)[1]) if "." in generation else 0


def _human(number):
    """Libreswan's rounded sizes: B, then KB/MB by 1024 (exact multiples here)."""
    for unit in ("", "K", "M", "G"):
        if number < 1024 or number % 1024:
            return "{}{}B".format(number, unit)
        number //= 1024
    return "{}TB".format(number)


def _endpoint(host, identity):
    return host + ("[{}]".format(identity) if identity else "")


def _state_names(generation):
    """(IKE established, IKE half-open, Child established) as printed."""
    major, minor = _major(generation), _minor(generation)
    if major == "3":
        return ("STATE_PARENT_I3 (PARENT SA established)", "STATE_PARENT_I1 (sent v2I1, expected v2R1)",
                "STATE_V2_IPSEC_I (IPsec SA established)")
    if major == "4" and minor <= 4:
        # libreswan.md: 4.0-4.4 said "(IPsec SA established)" for the Child SA.
        return ("STATE_V2_ESTABLISHED_IKE_SA (established IKE SA)",
                "STATE_V2_PARENT_I1 (sent IKE_SA_INIT request)",
                "STATE_V2_ESTABLISHED_CHILD_SA (IPsec SA established)")
    if major == "4" or (major == "5" and minor == 0):
        return ("STATE_V2_ESTABLISHED_IKE_SA (established IKE SA)",
                "STATE_V2_PARENT_I1 (sent IKE_SA_INIT request)",
                "STATE_V2_ESTABLISHED_CHILD_SA (established Child SA)")
    if minor <= 3:
        # 5.1: the STATE_ prefix is gone (public capture of 5.3:
        # "ESTABLISHED_CHILD_SA (established Child SA)").
        return ("ESTABLISHED_IKE_SA (established IKE SA)", "IKE_SA_INIT_I (sent IKE_SA_INIT request)",
                "ESTABLISHED_CHILD_SA (established Child SA)")
    # 5.4: internal names gone, the human text alone.
    return ("established IKE SA", "sent IKE_SA_INIT request", "established Child SA")


def render(conns, generation="4.10", addresses=("198.51.100.10",), extra_lines=(), pluto_version=True):
    """(status text, trafficstatus text) of ``conns`` as ``generation`` prints it."""
    major, minor = _major(generation), _minor(generation)
    prefix = "000 " if major in ("3", "4") else ""
    traffic_prefix = "006 " if major in ("3", "4") else ""
    # 3.x separator lines are a bare "000" (public capture); 4.x "000 " plus
    # a blank; 5.x a lone space.
    blank = {"3": "000", "4": "000  "}.get(major, " ")
    ike_ok, ike_half, child_ok = _state_names(generation)

    def line(text):
        return prefix + text

    out = [line("using kernel interface: {}".format("netkey" if major == "3" else "xfrm")), blank]
    for address in list(addresses) + ["127.0.0.1"]:
        for port in (4500, 500):
            if major == "3":
                # public capture: "interface eth0/eth0 172.16.1.8@500"
                out.append(line("interface eth1/eth1 {}@{}".format(address, port)))
            else:
                shown = "[{}]".format(address) if ":" in address else address
                out.append(line("interface eth1 UDP {}:{}".format(shown, port)))
    out += [blank, line("config setup options:"), blank]
    if pluto_version:
        number = {"3": "3.25", "4.4": "4.4", "4.10": "4.10"}.get(generation, generation)
        out.append(line("pluto_version={}, pluto_vendorid=OE-Libreswan-{}".format(number, number)))
    out += [blank, line("Connection list:"), blank]

    serial = 0
    states, traffic = [], []
    active = 0
    for conn in conns:
        ike_serial = child_serial = 0
        if conn.ike:
            serial += 1
            ike_serial = serial
        if conn.child:
            serial += 1
            child_serial = serial
            active += 1
        key = '"{}"'.format(conn.name) + ("[{}]".format(conn.instance) if conn.instance else "")
        routing = conn.routing or ("erouted" if conn.child else "unrouted")
        if major == "5":
            routing = conn.routing or ("routed-tunnel" if conn.child else "unrouted")
        out.append(line("{}: {}...{}; {}; eroute owner: #{}".format(
            key, _endpoint(conn.local, conn.local_id), _endpoint(conn.remote, conn.remote_id), routing,
            child_serial)))
        orientation = "oriented" if conn.oriented else "unoriented"
        if major == "5":
            # public capture (5.x): '"c":   host: oriented; local: ...; remote: ...;'
            out.append(line("{}:   host: {}; local: {}; remote: {};".format(key, orientation, conn.local, conn.remote)))
        else:
            out.append(line("{}:     {}; my_ip=unset; their_ip=unset;".format(key, orientation)))
        out.append(line("{}:   policy: IKEv2+PSK+ENCRYPT+TUNNEL+PFS+UP+IKE_FRAG_ALLOW+ESN_NO+ESN_YES;".format(key)))
        if major == "3":
            out.append(line("{}:   newest ISAKMP SA: #{}; newest IPsec SA: #{};".format(key, ike_serial, child_serial)))
        else:
            out.append(line("{}:   newest IKE SA: #{}; newest IPsec SA: #{}; conn serial: $1;".format(
                key, ike_serial, child_serial)))
        out.append(line("{}:   ESP algorithms: AES_GCM_16_128-NONE".format(key)))

        peer = ""
        if conn.instance:
            peer = " ..." + conn.remote if major == "3" else " " + conn.remote
        if conn.ike:
            text = ike_ok if conn.ike == "established" else ike_half
            if major == "3":
                tail = "EVENT_SA_REPLACE in 28505s; newest ISAKMP; idle; import:admin initiate"
            elif conn.ike == "established":
                tail = "REKEY in 28522s; REPLACE in 28792s; newest; idle;"
            else:
                tail = "RETRANSMIT in 1s; idle;"
            states.append(line("#{}: {}{}:500 {}; {}".format(ike_serial, key, peer, text, tail)))
            if conn.ike != "established" and conn.child:
                raise ValueError("a Child SA needs an established IKE SA")
        if conn.child:
            if major == "3":
                tail = "EVENT_SA_REPLACE in 28505s; newest IPSEC; eroute owner; isakmp#{}; idle; import:admin initiate"
            else:
                tail = "REKEY in 28522s; REPLACE in 28792s; newest; eroute owner; IKE SA #{}; idle;"
            states.append(line("#{}: {}{}:500 {}; {}".format(child_serial, key, peer, child_ok, tail.format(ike_serial))))
            sep = ":" if ":" in conn.remote else "."
            spi_out, spi_in = 0xc0ffee00 + child_serial, 0xbeef00 + child_serial
            detail = "#{}: {}{} esp{}{:x}@{} esp{}{:x}@{} tun{}0@{} tun{}0@{}".format(
                child_serial, key, (" ..." if major == "3" else " ") + conn.remote if conn.instance else "",
                sep, spi_out, conn.remote, sep, spi_in, conn.local, sep, conn.remote, sep, conn.local)
            if major == "3":
                detail += " ref=0 refhim=0 Traffic: ESPin={} ESPout={}! ESPmax=4194303B".format(
                    _human(conn.in_bytes), _human(conn.out_bytes))
            else:
                detail += " Traffic: ESPin={} ESPout={} ESPmax=2^63B".format(
                    _human(conn.in_bytes), _human(conn.out_bytes))
            states.append(line(detail))
            fields = "type=ESP, add_time=1795708793, inBytes={}, outBytes={}".format(conn.in_bytes, conn.out_bytes)
            if major != "3":
                fields += ", maxBytes=2^63B"
            traffic.append("{}#{}: {}{}, {}, id='{}'".format(
                traffic_prefix, child_serial, key, " " + conn.remote if conn.instance else "", fields,
                conn.remote_id or conn.remote))

    ike_total = sum(1 for conn in conns if conn.ike)
    ike_auth = sum(1 for conn in conns if conn.ike == "established")
    children = sum(1 for conn in conns if conn.child)
    routed = "routed {}, ".format(active) if major == "5" and minor >= 3 else ""
    out += [blank, line("Total IPsec connections: loaded {}, {}active {}".format(len(conns), routed, active)), blank]
    out.append(line("State Information: DDoS cookies not required, Accepting new IKE connections"))
    out.append(line("IKE SAs: total({}), half-open({}), open(0), authenticated({}), anonymous(0)".format(
        ike_total, ike_total - ike_auth, ike_auth)))
    out.append(line("IPsec SAs: total({0}), authenticated({0}), anonymous(0)".format(children)))
    out.append(blank)
    out += states
    out += [line(text) for text in extra_lines]
    out += [blank, line("Bare Shunt list:"), blank]
    return "\n".join(out) + "\n", "".join(text + "\n" for text in traffic)
