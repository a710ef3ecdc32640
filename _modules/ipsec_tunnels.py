"""
This node's tunnel configuration reconciled with its plan, in one
transaction: the formula's tunnel files (``<prefix>-*.conf|.secrets``), its
part of ``ipsec.conf`` (its ``config setup`` keys and include) and of
``ipsec.secrets`` (its include), its manifest, and the running pluto.

``reconcile`` first computes every new text and checks the complete new
configuration (``addconn --checkconfig`` on the whole set, algparse, the
firewall rules with ``nft -c``), under ``test=True`` too, so a dry run
predicts failures as well as changes. Only then does it write: every file
to a hidden temporary name first, all renamed once all are written, and
everything put back if a later step (a rename, pluto refusing a conn)
fails. Pluto is changed conn by conn, never restarted (see
``_modules/ipsec_pluto.py`` for how Libreswan behaves).

The formula deletes only what its manifest says it wrote (files and
conns), never by name pattern: an operator's own ``overcloud-backup`` conn
or ``site-a.conf`` file is never touched, across prefix changes too.

The states in ``_states/ipsec.py`` only call these functions and report.

Sync before first use: ``salt '*' saltutil.sync_all``.
"""

import difflib
import ipaddress
import logging
import os

from salt.exceptions import CommandExecutionError, SaltInvocationError

log = logging.getLogger(__name__)

__virtualname__ = "ipsec_tunnels"

HIDDEN = "<content hidden>"


def __virtual__():
    # The plan comes from the ipsec module (its __virtual__ says what is
    # missing, netaddr for one): without it there is nothing to reconcile.
    if "ipsec.build" not in __salt__:
        return (False, "ipsec_tunnels: the ipsec execution module is not loaded (see its error; "
                       "run saltutil.sync_all)")
    return __virtualname__


def _owned_files(manifest, config_dir):
    """The manifest's files, only where the formula writes them (its
    config_dir, .conf/.secrets): never a path built from anything else."""
    return [path for path in manifest["files"]
            if os.path.dirname(path) == config_dir.rstrip("/") and path.endswith((".conf", ".secrets"))]


def _read(path):
    """(text, mode, problem): problem names a path that is not a regular file."""
    try:
        text, mode = __utils__["ipsec_files.read"](path)
        return text, mode, None
    except OSError as exc:
        return None, None, "{}: {}".format(path, exc.strerror)
    except Exception as exc:  # ipsec_files.NotRegular (loaded by Salt: no import)
        return None, None, str(exc)


def _own_text(text):
    """Whether ``text`` is the formula's own rendered conf text, the only
    content a diff may show: its header, and no secrets line."""
    return __utils__["ipsec_files.formula_text"](text) and " PSK " not in text


def _tunnel_change(path, kind, text, mode):
    """The change one tunnel file needs, or None when it is as planned."""
    current, current_mode, problem = _read(path)
    if problem:
        return {"replaced": "{} (its content is not shown)".format(problem)}
    if current is None:
        return dict({"new": "created, mode {}".format(mode)}, **({"diff": "New file"} if kind == "conf" else {}))
    change = {}
    if current != text:
        if kind == "conf" and _own_text(current):
            change["diff"] = "".join(difflib.unified_diff(
                current.splitlines(True), text.splitlines(True), "old", "new"))
        else:
            change["diff"] = HIDDEN
    if current_mode != mode:
        change["mode"] = {"old": current_mode, "new": mode}
    return change or None


def _shared_files(plan, manifest):
    """{target: {"old", "new", "mode", "report"}} for ipsec.conf and
    ipsec.secrets (through the operator's symlinks, which stay links)."""
    utils = __utils__
    lookup = plan["lookup"]
    shared = {}
    conf_target = utils["ipsec_files.shared_target"](lookup["config_file"])
    old, mode, problem = _read(conf_target)
    if problem:
        raise CommandExecutionError("ipsec:lookup:config_file: " + problem)
    base = utils["ipsec_files.unedit"](old)
    legacy_orig = lookup["config_file"] + ".ipsec-formula-orig"
    if utils["ipsec_files.legacy_conf"](old):
        # Written whole by a release before 0.2: the operator's original is
        # the saved copy (if any).
        saved, _, _ = _read(legacy_orig)
        base = saved
        manifest["legacy"] = [legacy_orig] if saved is not None else []
    new = utils["ipsec_files.edit_conf"](base, plan["config_setup"], lookup["config_dir"])
    shared[conf_target] = {"old": old, "new": new, "mode": mode or "0644"}
    secrets_target = utils["ipsec_files.shared_target"](lookup["secrets_file"])
    old, mode, problem = _read(secrets_target)
    if problem:
        raise CommandExecutionError("ipsec:lookup:secrets_file: " + problem)
    base = utils["ipsec_files.unedit"](old, legacy=[utils["ipsec_files.legacy_secrets_line"](lookup["config_dir"])])
    shared[secrets_target] = {
        "old": old, "new": utils["ipsec_files.edit_secrets"](base, lookup["config_dir"]), "mode": mode or "0600"}
    return shared


def _setup_lines(text):
    """The effective lines of ``config setup`` (a change needs a restart)."""
    lines, inside = [], False
    for line in (text or "").splitlines():
        if line and not line[0].isspace() and not line.startswith("#"):
            inside = line.split() == ["config", "setup"]
            continue
        stripped = line.strip()
        if inside and stripped and not stripped.startswith("#"):
            lines.append(stripped)
    return lines


def _shared_change(path, entry, is_conf):
    if entry["old"] == entry["new"]:
        return None
    if entry["old"] is None:
        return {"new": "created, mode {}".format(entry["mode"])}
    if not is_conf:
        return {"include": "added"}
    # Zero context: only the formula's lines and the operator lines it
    # disables or gives back, never the rest of the operator's file.
    return {"diff": "".join(difflib.unified_diff(
        entry["old"].splitlines(True), entry["new"].splitlines(True), "old", "new", n=0))}


def _desired(plan):
    """{path: (kind, text, mode)} of the plan's tunnel files. The PSK is
    read here, straight from pillar into the secrets renderer (it never
    enters the plan or rendered SLS)."""
    psk = __utils__["ipsec_keys.secret_source"](__pillar__["ipsec"])
    texts = __utils__["ipsec_render.render_files"](plan, psk)
    return {path: (meta["kind"], texts[path], meta["mode"]) for path, meta in plan["files"].items()}


def _compute(plan):
    """Everything a run would do, nothing done: a dict of the new texts,
    the file changes, the stale files and the manifest."""
    lookup = plan["lookup"]
    config_dir = lookup["config_dir"]
    manifest = dict(__utils__["ipsec_files.load_manifest"](config_dir, plan["prefix"]))
    desired = _desired(plan)
    stale = [path for path in _owned_files(manifest, config_dir) if path not in desired]
    tripleo = __utils__["ipsec_files.tripleo_files"](config_dir, plan["prefix"], set(manifest["files"]))
    if plan["adopt_tripleo"]:
        # Adopted: TripleO's files go (or are overwritten) in this same
        # transaction, and the conns they defined are deleted from pluto.
        stale += [path for path in tripleo if path not in desired and path not in stale]
    shared = _shared_files(plan, manifest)
    changes = {}
    for path, (kind, text, mode) in desired.items():
        change = _tunnel_change(path, kind, text, mode)
        if change:
            changes[path] = change
    for path in stale:
        if os.path.lexists(path):
            changes[path] = {"removed": "not in the plan any more"}
    conf_target = next(iter(shared))
    for path, entry in shared.items():
        change = _shared_change(path, entry, path == conf_target)
        if change:
            changes[path] = change
    for path in manifest.get("legacy", []):
        changes[path] = {"removed": "merged back into {}".format(lookup["config_file"])}
    conns = sorted(plan["connections"])
    manifest_text = __utils__["ipsec_files.manifest_text"](list(desired), conns)
    manifest_file = __utils__["ipsec_files.manifest_path"](config_dir)
    old_manifest, _, _ = _read(manifest_file)
    if old_manifest != manifest_text:
        changes[manifest_file] = {"manifest": "the formula's record of its files and conns {}".format(
            "written" if old_manifest is None else "updated")}
    return {
        "desired": desired,
        "stale": stale,
        "shared": shared,
        "changes": changes,
        "manifest": manifest,
        "manifest_file": manifest_file,
        "manifest_text": None if old_manifest == manifest_text else manifest_text,
        "restart": _setup_lines(shared[conf_target]["old"]) != _setup_lines(shared[conf_target]["new"]),
        "tripleo": [] if plan["adopt_tripleo"] else tripleo,
    }


def _checks(plan, work, firewall):
    """Read-only checks of the complete new configuration: problems, or []."""
    problems = []
    if work["tripleo"]:
        problems.append("tripleo-ipsec's configuration is here ({}): set ipsec:adopt_tripleo: true to replace "
                        "it (its files, conns and pacemaker resources) in one run, or remove it first "
                        "(docs/migration.md)".format(", ".join(os.path.basename(p) for p in work["tripleo"])))
    installed = __salt__["ipsec_pluto.version"]()["major"] is not None
    if installed:
        conf_texts = {path: text for path, (kind, text, mode) in work["desired"].items() if kind == "conf"}
        try:
            problems += __salt__["ipsec_pluto.checkconfig"](conf_texts, config_setup=plan["config_setup"])
        except CommandExecutionError as exc:
            problems.append(str(exc))
    if firewall and plan["firewall"]["manage"]:
        try:
            problems += __salt__["ipsec_firewall.check"]()
            problems += __salt__["ipsec_firewall.check_persist"]()
        except CommandExecutionError as exc:
            problems.append(str(exc))
    return problems


def _live_diff(plan, work):
    """The running pluto's side (None: pluto not running)."""
    if not __salt__["ipsec_pluto.running"]():
        return None
    old = {path: _read(path)[0] for path in list(work["desired"]) + work["stale"]}
    new = {path: text for path, (kind, text, mode) in work["desired"].items()}
    loaded = __salt__["ipsec_pluto.loaded"]()
    return __utils__["ipsec_reconcile.diff"](old, new, loaded, owned=work["manifest"]["conns"])


def _held_vip_clients(plan):
    """The plan's VIP client conns whose VIP this node holds now (a live
    look at its addresses, not the grains cached at minion start). Pluto
    cannot initiate them: both ends are local ("cannot identify ourselves
    with either end"). The VIP's server conn serves it here, and the OCF
    agent brings the client conn up when the VIP leaves."""
    clients = {name: conn["peer"] for name, conn in plan["connections"].items() if conn["role"] == "vip-client"}
    if not clients:
        return set()
    local = set()
    for address in __salt__["network.ip_addrs"]() + __salt__["network.ip_addrs6"]():
        local.add(ipaddress.ip_address(address.split("%", 1)[0]))
    return {name for name, vip in clients.items() if ipaddress.ip_address(vip) in local}


def _bring_up(start, route, held=()):
    """Initiate the auto=start conns, route the auto=route|ondemand ones:
    addconn does neither (pluto does it only for what it loads at start-up)."""
    start = [name for name in start if name not in held]
    if start:
        __salt__["ipsec_pluto.initiate"](start)
    if route:
        __salt__["ipsec_pluto.route"](route)


def _stage(work):
    """A transaction holding every file write of this run (nothing renamed)."""
    txn = __utils__["ipsec_files.transaction"]()
    for path, (kind, text, mode) in work["desired"].items():
        change = work["changes"].get(path)
        if not change:
            continue
        if set(change) == {"mode"}:
            txn.chmod(path, mode)
        else:
            txn.stage(path, text, mode)
    for path, entry in work["shared"].items():
        if entry["old"] != entry["new"]:
            txn.stage(path, entry["new"], entry["mode"])
    if work["manifest_text"] is not None:
        txn.stage(work["manifest_file"], work["manifest_text"], "0600")
    for path in work["stale"] + work["manifest"].get("legacy", []):
        txn.remove(path)
    return txn


def _apply_live(live, held):
    """Change pluto by the diff: secrets first (new conns find their PSK),
    one batched add of new and changed conns, then the deletes (after the
    adds: if pluto refuses one, nothing was deleted yet), then starts."""
    if live["secrets_changed"]:
        __salt__["ipsec_pluto.rereadsecrets"]()
    to_add = live["add"] + live["replace"]
    if to_add:
        __salt__["ipsec_pluto.add"](to_add)
    if live["delete"] or live["ignore"]:
        __salt__["ipsec_pluto.delete"](live["delete"] + live["ignore"])
    _bring_up(live["start"], live["route"], held)


def _undo_live(plan, live, exc, held):
    """After pluto refused a conn and the files were put back: give pluto
    back the set of conns it had. addconn purged the definitions that the
    rejected names replaced (SAs and all) and loaded the accepted ones;
    the new ones it took are deleted, the replaced ones re-added from the
    restored files and brought up again. Returns the names restored."""
    info = getattr(exc, "info", None) or {}
    took = set(info.get("added") or [])
    new_ones = [name for name in live["add"] if name in took]
    restored = [name for name in live["replace"]]
    try:
        if new_ones:
            __salt__["ipsec_pluto.delete"](new_ones)
        if live["secrets_changed"]:
            __salt__["ipsec_pluto.rereadsecrets"]()
        back = __salt__["ipsec_pluto.add"](restored)["added"] if restored else []
    except CommandExecutionError as more:
        log.error("ipsec_tunnels: could not give pluto back its conns: %s", more)
        back = (getattr(more, "info", None) or {}).get("added") or []
    autos = {}
    for path in {conn["file"] for conn in plan["connections"].values()}:
        text, _, _ = _read(path)
        for name, keywords in __utils__["ipsec_reconcile.parse_conf"](text).items():
            autos[name] = keywords.get("auto")
    start = [name for name in back if autos.get(name) == "start"]
    route = [name for name in back if autos.get(name) in ("route", "ondemand")]
    try:
        _bring_up(start, route, held)
    except CommandExecutionError as more:
        log.error("ipsec_tunnels: could not bring the restored conns up: %s", more)
    return back


def _summary(work, live):
    changes = dict(work["changes"])
    conns = {}
    if live:
        conns = {key: live[key] for key in ("add", "replace", "delete", "ignore") if live[key]}
        if live["secrets_changed"]:
            conns["secrets"] = "re-read"
    if conns:
        changes["pluto"] = conns
    return changes, sum(len(value) for key, value in conns.items() if key != "secrets")


def reconcile(test=False, live=True, firewall=True):
    """
    Make this node's tunnel configuration what its plan says, in one
    transaction, without restarting pluto: the formula's tunnel files, its
    part of ipsec.conf and ipsec.secrets, its manifest; then the running
    pluto (new conns added in one batched ``addconn``, changed ones
    replaced, the formula's removed ones deleted, secrets re-read when
    they changed, added ``auto=start`` conns initiated). Unchanged conns
    are not touched.

    test
        Change nothing; still run every check (checkconfig, algparse,
        firewall), so a dry run predicts failures as well as changes.
    live
        ``False``: files only (pluto is not asked nor changed).
    firewall
        Also check the firewall rules (``nft -c``) before the first write
        (when ``ipsec:firewall:manage``).

    Returns ``{"result": True|False|None, "changes": {...}, "comment": ...,
    "restart": bool}``: ``changes`` lists files (secrets content never
    shown) and, under ``pluto``, the conns added, replaced and deleted;
    ``restart`` says whether ``config setup`` changed (the service must
    restart for that). A failure at any step leaves every file as it was
    and pluto with the conns it had.

    CLI Example:

    .. code-block:: bash

        salt '*' ipsec_tunnels.reconcile test=True
        salt '*' ipsec_tunnels.reconcile
    """
    for name, value in (("test", test), ("live", live), ("firewall", firewall)):
        if not isinstance(value, bool):
            raise SaltInvocationError("{} must be true or false, got {!r}".format(name, value))
    plan = __salt__["ipsec.build"]()
    work = _compute(plan)
    livediff = _live_diff(plan, work) if live else None
    changes, count = _summary(work, livediff)
    ret = {"result": True, "changes": {}, "comment": "", "restart": False}
    problems = _checks(plan, work, firewall)
    if problems:
        ret.update(result=False, comment="the new configuration is refused, nothing written: " + "; ".join(problems))
        return ret
    if not changes:
        ret["comment"] = "{} files of the plan are in place{}".format(
            len(work["desired"]), ", pluto has every planned conn" if livediff else "")
        return ret
    ret["restart"] = work["restart"]
    if test:
        ret.update(result=None, changes=changes,
                   comment="{} files and {} conns would change".format(len(work["changes"]), count))
        return ret
    txn = _stage_or_fail(work, ret)
    if txn is None:
        return ret
    held = set()
    if livediff:
        held = _held_vip_clients(plan) & set(livediff["start"])
        try:
            _apply_live(livediff, held)
        except CommandExecutionError as exc:
            txn.rollback()
            back = _undo_live(plan, livediff, exc, held)
            # The files are as before and pluto has the conns it had; the
            # ones whose old definition came back did renegotiate: say so.
            ret.update(result=False, restart=False,
                       changes={"pluto": {"replace": sorted(back)}} if back else {},
                       comment="pluto refused, every file put back: {}{}".format(
                           getattr(exc, "error", None) or exc,
                           "; previous definition restored: " + ", ".join(sorted(back)) if back else ""))
            return ret
    txn.commit()
    ret["changes"] = changes
    ret["comment"] = "{} files and {} conns changed".format(len(work["changes"]), count)
    if held:
        ret["comment"] += "; not initiated while this node holds their VIP: " + ", ".join(sorted(held))
    return ret


def _stage_or_fail(work, ret):
    """Stage and rename every file; on failure everything is as before and
    ``ret`` says why (naming the file, never its content)."""
    txn = None
    try:
        txn = _stage(work)
        txn.apply()
    except OSError as exc:
        if txn is not None:
            txn.rollback()
        ret.update(result=False, restart=False, comment="writing {} failed, nothing changed: {}".format(
            exc.filename or "the configuration", exc.strerror))
        return None
    return txn


def remove(test=False):
    """
    Remove what the formula wrote, and nothing else: its conns from the
    running pluto, its tunnel files, its manifest, its lines in ipsec.conf
    and ipsec.secrets (the operator lines it disabled come back: an
    ipsec.conf the formula only edited is byte for byte what it was). Reads
    only the validated settings (``ipsec.settings``): works with an
    otherwise broken pillar. Other conns and files stay.

    CLI Example:

    .. code-block:: bash

        salt '*' ipsec_tunnels.remove test=True
    """
    if not isinstance(test, bool):
        raise SaltInvocationError("test must be true or false, got {!r}".format(test))
    utils = __utils__
    settings = __salt__["ipsec.settings"]()
    lookup = settings["lookup"]
    config_dir = lookup["config_dir"]
    manifest = utils["ipsec_files.load_manifest"](config_dir, settings["prefix"])
    files = [path for path in _owned_files(manifest, config_dir) if os.path.lexists(path)]
    conns = set(manifest["conns"])
    for path in files:
        conns.update(utils["ipsec_reconcile.parse_conf"](_read(path)[0]).keys())
    changes = {}
    txn = utils["ipsec_files.transaction"]()
    for path in files:
        changes[path] = {"removed": True}
        txn.remove(path)
    manifest_file = utils["ipsec_files.manifest_path"](config_dir)
    if os.path.lexists(manifest_file):
        changes[manifest_file] = {"removed": True}
        txn.remove(manifest_file)
    legacy_orig = lookup["config_file"] + ".ipsec-formula-orig"
    for target, legacy in ((lookup["config_file"], ()), (lookup["secrets_file"],
                                                         (utils["ipsec_files.legacy_secrets_line"](config_dir),))):
        path = utils["ipsec_files.shared_target"](target)
        old, mode, problem = _read(path)
        if problem or old is None:
            continue
        new = utils["ipsec_files.unedit"](old, legacy=legacy)
        if utils["ipsec_files.legacy_conf"](old):
            saved, _, _ = _read(legacy_orig)
            new = saved if saved is not None else ""
            if saved is not None:
                txn.remove(legacy_orig)
        if new == old:
            continue
        if new.strip() == "":
            changes[path] = {"removed": "only the formula's lines were left"}
            txn.remove(path)
        else:
            changes[path] = {"restored": "the formula's lines removed"}
            txn.stage(path, new, mode)
    loaded = []
    if __salt__["ipsec_pluto.running"]():
        loaded = sorted(conns & set(__salt__["ipsec_pluto.loaded"]()))
        if loaded:
            changes["pluto"] = {"delete": loaded}
    if test or not changes:
        txn.abort()
        return {"result": None if changes and test else True, "changes": changes,
                "comment": "{} objects of the formula {}".format(
                    len(changes), "would be removed" if test and changes else "removed" if changes else "found")}
    if loaded:
        __salt__["ipsec_pluto.delete"](loaded)
    try:
        txn.apply()
    except OSError as exc:
        txn.rollback()
        return {"result": False, "changes": {}, "comment": "removing {} failed: {}".format(exc.filename, exc.strerror)}
    txn.commit()
    return {"result": True, "changes": changes, "comment": "{} objects of the formula removed".format(len(changes))}
