"""
Firewall rules for the tunneled networks of ipsec-formula.

IKE (udp 500), NAT-T (udp 4500), ESP and AH are accepted inbound from and
outbound to every tunneled network of this node's plan (``ipsec.plan``),
IPv4 and IPv6. Backend ``nftables`` (default): a table the formula owns,
``inet ipsec_formula``; backend ``iptables``: rules at the top of INPUT and
OUTPUT of iptables/ip6tables, marked with the comment ``ipsec-formula``.
Pillar: ``ipsec:firewall:manage|backend|table|persist``.

Persistence (``persist``, default true): the same rules are written where
the distribution loads them at boot. nftables: the formula's table file
(``lookup:firewall:nft_file``) and one marked ``include`` of it in the
nftables service's config (``nft_conf``); iptables: a marked block of the
formula's rules at the top of the filter table of the saved-rules files
(``iptables_rules_v4``/``_v6``, restored by iptables-persistent or
iptables-services). Only those lines and that file are the formula's.
"""

import logging
import os

import salt.utils.path
from salt.exceptions import CommandExecutionError

log = logging.getLogger(__name__)

__virtualname__ = "ipsec_firewall"

IPTABLES = {4: "iptables", 6: "ip6tables"}


def __virtual__():
    return __virtualname__


def _run(cmd, stdin=None, ok_codes=(0,)):
    result = __salt__["cmd.run_all"](cmd, python_shell=False, stdin=stdin, ignore_retcode=True)
    if result["retcode"] not in ok_codes:
        raise CommandExecutionError("{} failed ({}): {}".format(
            " ".join(cmd[:3]), result["retcode"], (result.get("stderr") or result.get("stdout") or "").strip()))
    return result


def rules(backend=None):
    """
    The rules this node should have, from its plan: a list of
    ``{"chain", "family", "cidr", "proto", "port", "text"}``.

    CLI Example:

    .. code-block:: bash

        salt '*' ipsec_firewall.rules
    """
    firewall = __salt__["ipsec.build"]()["firewall"]
    return [
        {"chain": r[0], "family": r[1], "cidr": r[2], "proto": r[3], "port": r[4],
         "text": __utils__["ipsec_fwrules.describe"](r)}
        for r in __utils__["ipsec_fwrules.desired_rules"](firewall)
    ]


def _nft_live(table):
    """Parsed live table, or None when it does not exist."""
    result = _run(["nft", "-j", "list", "table", "inet", table], ok_codes=(0, 1))
    if result["retcode"] != 0:
        if "No such file" in result.get("stderr", "") or "does not exist" in result.get("stderr", ""):
            return None
        raise CommandExecutionError("nft list table inet {} failed: {}".format(table, result.get("stderr", "").strip()))
    return __utils__["ipsec_fwrules.parse_nft_table"](result["stdout"])


def _iptables_live(family):
    return __utils__["ipsec_fwrules.iptables_ours"](_run([IPTABLES[family], "-S"])["stdout"])


def diff(firewall=None):
    """
    What differs between the plan's rules and the live firewall:
    ``{"backend", "in_place": bool, "add": [...], "remove": [...]}`` (rule
    descriptions). Changes nothing.

    CLI Example:

    .. code-block:: bash

        salt '*' ipsec_firewall.diff
    """
    firewall = firewall or __salt__["ipsec.build"]()["firewall"]
    desired = __utils__["ipsec_fwrules.desired_rules"](firewall)
    describe = __utils__["ipsec_fwrules.describe"]
    if firewall["backend"] == "nftables":
        live = _nft_live(firewall["table"])
        if live is None:
            return {"backend": "nftables", "in_place": False, "exists": False,
                    "add": [describe(r) for r in desired], "remove": []}
        in_place = __utils__["ipsec_fwrules.nft_matches"](live, desired)
        current = [r for r in live["rules"] if r[0] != "foreign"]
        foreign = [r for r in live["rules"] if r[0] == "foreign"]
        return {
            "backend": "nftables", "in_place": in_place, "exists": True,
            "add": [describe(r) for r in desired if r not in current],
            "remove": [describe(r) for r in current if r not in desired]
                      + ["foreign rule in chain {}".format(r[1]) for r in foreign],
        }
    add, remove = [], []
    line = __utils__["ipsec_fwrules.iptables_line"]
    for family, wanted in __utils__["ipsec_fwrules.rules_by_family"](desired).items():
        live = _iptables_live(family)
        wanted_lines = [line(r) for r in wanted]
        add += [describe(r) for r, l in zip(wanted, wanted_lines) if l not in live]
        remove += [" ".join(l) for l in live if l not in wanted_lines]
    return {"backend": "iptables", "in_place": not add and not remove, "add": add, "remove": remove}


def apply(firewall=None):
    """
    Make the live firewall match the plan (a no-op when it does).

    CLI Example:

    .. code-block:: bash

        salt '*' ipsec_firewall.apply
    """
    firewall = firewall or __salt__["ipsec.build"]()["firewall"]
    found = diff(firewall)
    if found["in_place"]:
        return found
    desired = __utils__["ipsec_fwrules.desired_rules"](firewall)
    if firewall["backend"] == "nftables":
        script = __utils__["ipsec_fwrules.nft_script"](firewall["table"], desired, replace=found["exists"])
        _run(["nft", "-f", "-"], stdin=script)
        return found
    line = __utils__["ipsec_fwrules.iptables_line"]
    for family, wanted in __utils__["ipsec_fwrules.rules_by_family"](desired).items():
        _remove_iptables(family)
        # Insert at the top of each chain, in order, so the rules come
        # before the host's own.
        positions = {}
        for rule in wanted:
            spec = line(rule, action="-I")
            positions[spec[1]] = positions.get(spec[1], 0) + 1
            _run([IPTABLES[family], spec[0], spec[1], str(positions[spec[1]])] + spec[2:])
    return found


def check(firewall=None):
    """
    Check the plan's rules without changing anything (before the formula
    writes its first file): ``nft -c`` on the script that would be loaded;
    for iptables, that ``iptables``/``ip6tables`` are there. Returns the
    list of problems, empty when all is well.

    CLI Example:

    .. code-block:: bash

        salt '*' ipsec_firewall.check
    """
    firewall = firewall or __salt__["ipsec.build"]()["firewall"]
    desired = __utils__["ipsec_fwrules.desired_rules"](firewall)
    if firewall["backend"] == "nftables":
        if not salt.utils.path.which("nft"):
            return ["nft not found: install nftables or set ipsec:firewall:backend"]
        script = __utils__["ipsec_fwrules.nft_script"](firewall["table"], desired, replace=False)
        result = _run(["nft", "-c", "-f", "-"], stdin=script, ok_codes=(0, 1))
        if result["retcode"] != 0:
            return ["nft -c refused the rules: {}".format((result.get("stderr") or "").strip())]
        return []
    families = __utils__["ipsec_fwrules.rules_by_family"](desired)
    return ["{} not found".format(IPTABLES[family]) for family in families
            if not salt.utils.path.which(IPTABLES[family])]


def _remove_iptables(family):
    removed = []
    for spec in _iptables_live(family):
        _run([IPTABLES[family], "-D"] + spec[1:])
        removed.append(" ".join(spec))
    return removed


def remove(backend="nftables", table="ipsec_formula"):
    """
    Remove the formula's firewall rules (its nftables table, or its
    commented iptables rules); other rules are left alone. Returns what was
    removed.

    CLI Example:

    .. code-block:: bash

        salt '*' ipsec_firewall.remove
        salt '*' ipsec_firewall.remove backend=iptables
    """
    if backend == "nftables":
        if _nft_live(table) is None:
            return []
        _run(["nft", "delete", "table", "inet", table])
        return ["table inet " + table]
    return _remove_iptables(4) + _remove_iptables(6)


def present(backend="nftables", table="ipsec_formula"):
    """
    What of the formula's firewall exists (for clean and test=True):
    a list of descriptions.

    CLI Example:

    .. code-block:: bash

        salt '*' ipsec_firewall.present
    """
    if backend == "nftables":
        return [] if _nft_live(table) is None else ["table inet " + table]
    return [" ".join(spec) for family in (4, 6) for spec in _iptables_live(family)]


# --- persistence ------------------------------------------------------------

# Modes of files the formula creates (an existing file keeps its own).
NEW_MODES = {"nft_file": "0644", "nft_conf": "0644", "iptables_rules_v4": "0640", "iptables_rules_v6": "0640"}


def _read_persisted(path):
    try:
        return __utils__["ipsec_files.read"](path)
    except Exception as exc:  # NotRegular or OSError: never followed, never guessed
        raise CommandExecutionError("ipsec:firewall:persist: {}".format(exc)) from None


def _persisted_wanted(firewall, key, old):
    """The text ``firewall["persist_files"][key]`` should have (None: no
    file), from its current text ``old``."""
    utils = __utils__
    keep = firewall["manage"] and firewall["persist"]
    if key == "nft_file":
        if old is not None and not utils["ipsec_fwrules.is_persisted_file"](old):
            raise CommandExecutionError(
                "ipsec:lookup:firewall:nft_file: {} exists and is not the formula's (no header of "
                "ipsec-formula): move it away or point nft_file elsewhere".format(firewall["persist_files"][key]))
        if not keep:
            return None
        return utils["ipsec_fwrules.nft_persisted"](firewall["table"],
                                                    utils["ipsec_fwrules.desired_rules"](firewall))
    base = utils["ipsec_files.unedit"](old)
    if keep and key == "nft_conf":
        new = utils["ipsec_files.edit_nft_conf"](base, firewall["persist_files"]["nft_file"])
    elif keep:
        family = 4 if key == "iptables_rules_v4" else 6
        rules = utils["ipsec_fwrules.rules_by_family"](utils["ipsec_fwrules.desired_rules"](firewall))[family]
        new = utils["ipsec_files.edit_saved_rules"](base, utils["ipsec_fwrules.iptables_saved_lines"](rules))
    else:
        new = base
    if old and old.strip() and not (new or "").strip():
        return None  # a file only the formula's lines made goes with them
    return new


def unpersist(backend="nftables", table="ipsec_formula", persist_files=None, test=False):
    """
    Remove the persisted copy of the formula's rules (its table file, its
    include line, its block of saved rules); the rest of each file stays
    byte for byte. Returns what changed (with ``test``: what would), as
    ``persist_diff``.

    CLI Example:

    .. code-block:: bash

        salt '*' ipsec_firewall.unpersist test=True
    """
    firewall = {"manage": False, "persist": False, "backend": backend, "table": table,
                "persist_files": persist_files or __salt__["ipsec.settings"]()["firewall"]["persist_files"]}
    return persist_diff(firewall) if test else persist(firewall)


def persist_diff(firewall=None):
    """
    What the persisted copy of the rules needs: ``{path: "write" | "update"
    | "remove"}``, empty when it is as the plan wants. With
    ``ipsec:firewall:persist`` (or ``manage``) false, the formula's
    persisted file and lines are what is removed. Changes nothing.

    CLI Example:

    .. code-block:: bash

        salt '*' ipsec_firewall.persist_diff
    """
    return {path: action for path, (action, _, _) in _persist_work(firewall).items()}


def _persist_work(firewall):
    """{path: (action, new text, mode)} of every persisted file to change."""
    firewall = firewall or __salt__["ipsec.build"]()["firewall"]
    work = {}
    for key, path in sorted(firewall["persist_files"].items()):
        old, mode = _read_persisted(path)
        new = _persisted_wanted(firewall, key, old)
        if new == old or (old is None and not new):
            continue
        action = "remove" if new is None else ("write" if old is None else "update")
        work[path] = (action, new, mode or NEW_MODES[key])
    return work


def persist(firewall=None):
    """
    Make the persisted copy of the rules match the plan, all files in one
    transaction (on failure none changes). Returns what changed, as
    ``persist_diff``.

    CLI Example:

    .. code-block:: bash

        salt '*' ipsec_firewall.persist
    """
    work = _persist_work(firewall)
    if not work:
        return {}
    txn = __utils__["ipsec_files.transaction"]()
    for path, (action, text, mode) in work.items():
        if action == "remove":
            txn.remove(path)
        else:
            txn.stage(path, text, mode)
    try:
        txn.apply()
    except Exception as exc:  # rolled back: nothing changed
        txn.rollback()
        raise CommandExecutionError("writing the persisted firewall rules failed: {}".format(exc)) from None
    txn.commit()
    return {path: action for path, (action, _, _) in work.items()}


def check_persist(firewall=None):
    """
    Problems that would stop the rules from being persisted (before the
    formula writes its first file): a missing directory (the persistence
    package not installed), a symlink, a foreign file. Empty when all is
    well.

    CLI Example:

    .. code-block:: bash

        salt '*' ipsec_firewall.check_persist
    """
    firewall = firewall or __salt__["ipsec.build"]()["firewall"]
    if not (firewall["manage"] and firewall["persist"]):
        return []
    problems = []
    for key, path in sorted(firewall["persist_files"].items()):
        if not os.path.isdir(os.path.dirname(path)):
            problems.append("ipsec:firewall:persist: {} does not exist (lookup:firewall:{}): install {} or set "
                            "ipsec:firewall:persist to false".format(
                                os.path.dirname(path), key, "nftables" if key.startswith("nft") else
                                "iptables-persistent (Debian) or iptables-services (RedHat)"))
            continue
        try:
            _persisted_wanted(firewall, key, _read_persisted(path)[0])
        except CommandExecutionError as exc:
            problems.append(str(exc))
    return problems

