"""
Formatting of the formula's Libreswan files from a plan: no decisions here.

``render_files(plan, psk)`` returns ``{path: text}`` for every file of the
plan. The PSK is only ever joined into the text of ``.secrets`` files.
"""

import base64

HEADER = (
    "# Managed by Salt (ipsec-formula). Local changes are overwritten.\n"
    "# Source of truth: the ipsec pillar; see `salt-call ipsec.plan`.\n"
)


def format_value(value):
    """ipsec.conf value: quoted when it holds spaces (values never hold '"')."""
    return '"{}"'.format(value) if " " in value else value


def format_conn(name, keywords):
    lines = ["conn {}".format(name)]
    lines.extend("\t{}={}".format(key, format_value(value)) for key, value in keywords.items())
    return "\n".join(lines) + "\n"


def format_id(identity):
    # IPv6 IDs may end in ':' which the secrets parser would take for the
    # separator: quote every IPv6 address.
    return '"{}"'.format(identity) if ":" in identity else identity


def psk_token(psk):
    """The PSK as written after ``PSK``.

    Libreswan has no escapes inside quotes, so a PSK with '"', control or
    non-ASCII characters is written in its ``0s`` (base64) form instead.
    """
    if all(0x20 <= ord(char) <= 0x7E for char in psk) and '"' not in psk:
        return '"{}"'.format(psk)
    return "0s" + base64.b64encode(psk.encode("utf-8")).decode("ascii")


def render_conf(plan, path):
    conns = plan["files"][path]["connections"]
    blocks = [format_conn(name, plan["connections"][name]["keywords"]) for name in conns]
    return HEADER + "\n" + "\n".join(blocks)


def render_secrets(plan, path, psk):
    """``psk``: the shared PSK, or a function entry -> that entry's key
    (per-tunnel keys, _utils/ipsec_keys.py secret_source)."""
    lines = [
        "{} : PSK {}".format(" ".join(format_id(i) for i in entry["ids"]),
                             psk_token(psk(entry) if callable(psk) else psk))
        for entry in plan["secrets"]
        if entry["file"] == path
    ]
    return HEADER + "\n".join(lines) + "\n"


def render_files(plan, psk):
    """Every file of the plan, ``{path: text}``, in plan order."""
    rendered = {}
    for path, meta in plan["files"].items():
        if meta["kind"] == "conf":
            rendered[path] = render_conf(plan, path)
        else:
            rendered[path] = render_secrets(plan, path, psk)
    return rendered

