"""
States of ipsec-formula: reconcile this node with its plan (``ipsec.plan``).

``ipsec.files_managed`` owns the formula's ``<prefix>-*.conf`` and
``<prefix>-*.secrets`` files in the lookup's ``config_dir``: it writes what
the plan says, with the plan's modes, removes the formula's files the plan no
longer has, and never shows the content of a secrets file.
"""

import difflib
import fnmatch
import ipaddress
import logging
import os
import stat
import tempfile
import time

from salt.exceptions import CommandExecutionError, SaltInvocationError

log = logging.getLogger(__name__)

__virtualname__ = "ipsec"

HIDDEN = "<secrets content hidden>"


def __virtual__():
    if "ipsec.build" in __salt__:
        return __virtualname__
    return (False, "the ipsec execution module is not loaded (run saltutil.sync_all)")


def _read(path):
    """(text, mode string) of an existing file, or (None, None)."""
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as handle:
            text = handle.read()
        return text, "{:04o}".format(stat.S_IMODE(os.stat(path).st_mode))
    except FileNotFoundError:
        return None, None


def _formula_files(config_dir, prefix):
    """The formula's files present in config_dir (by name pattern)."""
    try:
        names = os.listdir(config_dir)
    except FileNotFoundError:
        return []
    patterns = ("{}-*.conf".format(prefix), "{}-*.secrets".format(prefix))
    return sorted(
        os.path.join(config_dir, name)
        for name in names
        if any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)
        and os.path.isfile(os.path.join(config_dir, name))
    )


def _file_change(path, kind, text, mode):
    """The change one file needs (dict), or None when it is as planned."""
    current, current_mode = _read(path)
    if current is None:
        change = {"new": "created, mode {}".format(mode)}
        if kind == "conf":
            change["diff"] = "New file"
        return change
    change = {}
    if current != text:
        if kind == "conf":
            change["diff"] = "".join(
                difflib.unified_diff(current.splitlines(True), text.splitlines(True), "old", "new")
            )
        else:
            change["diff"] = HIDDEN
    if current_mode != mode:
        change["mode"] = {"old": current_mode, "new": mode}
    return change or None


def _write(path, text, mode):
    """Atomic replace: a hidden temp file in the same dir, then rename.

    The temp name starts with '.', so pluto's `include dir/*.conf` never
    sees a half-written file.
    """
    directory = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".ipsec-formula-")
    try:
        os.fchmod(fd, int(mode, 8))
        with os.fdopen(fd, "w", encoding="utf-8", errors="surrogateescape") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _desired_files():
    """plan, {path: (kind, text, mode)} - everything checked, nothing written."""
    plan = __salt__["ipsec.build"]()
    psk = __utils__["ipsec_keys.secret_source"](__pillar__["ipsec"])
    texts = __utils__["ipsec_render.render_files"](plan, psk)
    desired = {
        path: (meta["kind"], texts[path], meta["mode"])
        for path, meta in plan["files"].items()
    }
    return plan, desired


def _file_changes(desired, stale):
    changes = {}
    for path, (kind, text, mode) in desired.items():
        change = _file_change(path, kind, text, mode)
        if change:
            changes[path] = change
    for path in stale:
        changes[path] = {"removed": "not in the plan any more"}
    return changes


def _write_files(config_dir, desired, stale, changes):
    os.makedirs(config_dir, mode=0o755, exist_ok=True)
    for path, (kind, text, mode) in desired.items():
        change = changes.get(path)
        if not change:
            continue
        if "diff" in change or "new" in change:
            _write(path, text, mode)
        else:
            os.chmod(path, int(mode, 8))
    for path in stale:
        os.unlink(path)


def _live_changes(plan, desired, stale):
    """The running pluto's side of the reconcile (None: pluto not running)."""
    if not __salt__["ipsec_pluto.running"]():
        return None
    old = {path: _read(path)[0] for path in list(desired) + stale}
    new = {path: text for path, (kind, text, mode) in desired.items()}
    loaded = __salt__["ipsec_pluto.loaded"]()
    return __utils__["ipsec_reconcile.diff"](old, new, loaded, plan["prefix"])


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
    addconn does neither (pluto does it only for what it loads at start-up).
    ``held``: VIP client conns not to initiate (see _held_vip_clients)."""
    start = [name for name in start if name not in held]
    if start:
        __salt__["ipsec_pluto.initiate"](start)
    if route:
        __salt__["ipsec_pluto.route"](route)


def _apply_live(live, old_texts, desired, held=()):
    """Change pluto by the diff: secrets first (new conns find their PSK),
    then deletes, one batched add for new and changed conns, then starts.

    A conn pluto rejects fails the state naming it and pluto's message. If
    it replaced an older definition, addconn has already purged that one
    with its SAs: the file's old text is put back, re-added and brought up
    again, so what ran before keeps running. The conns pluto took are
    brought up all the same (the next run finds them unchanged)."""
    if live["secrets_changed"]:
        __salt__["ipsec_pluto.rereadsecrets"]()
    if live["delete"] or live["ignore"]:
        __salt__["ipsec_pluto.delete"](live["delete"] + live["ignore"])
    to_add = live["add"] + live["replace"]
    if to_add:
        try:
            __salt__["ipsec_pluto.add"](to_add)
        except CommandExecutionError as exc:
            info = getattr(exc, "info", None) or {}
            restored = _restore_rejected(info.get("rejected") or {}, live, old_texts, desired)
            message = exc.error
            if restored:
                message += "; previous definition restored: " + ", ".join(sorted(restored))
            # Bring up what pluto has now, as on success. The restored conns
            # too: addconn initiates nothing, and while an auto=start peer
            # revives a node-to-node tunnel when told of the purge, the far
            # end of a VIP client conn (auto=add) never initiates.
            took = set(info.get("added") or [])
            start = [n for n in live["start"] if n in took] + [n for n, a in restored.items() if a == "start"]
            route = [n for n in live["route"] if n in took] + [
                n for n, a in restored.items() if a in ("route", "ondemand")]
            try:
                _bring_up(start, route, held)
            except CommandExecutionError as more:
                message += "; " + more.error
            raise CommandExecutionError(message) from exc
    _bring_up(live["start"], live["route"], held)


def _restore_rejected(rejected, live, old_texts, desired):
    """Put back the old file text of the rejected conns that replaced a
    loaded one and re-add them; ``{name: auto}`` of those pluto took back."""
    replaced = [name for name in rejected if name in live["replace"]]
    if not replaced:
        return {}
    autos = {}
    for path, (kind, text, mode) in desired.items():
        old = old_texts.get(path)
        if kind == "conf" and old is not None and any("conn {}\n".format(n) in text for n in replaced):
            _write(path, old, mode)
            for name, keywords in __utils__["ipsec_reconcile.parse_conf"](old).items():
                autos[name] = keywords.get("auto")
    try:
        back = __salt__["ipsec_pluto.add"](replaced)["added"]
    except CommandExecutionError as exc:
        log.error("could not bring back the previous definition of %s: %s", ", ".join(replaced), exc)
        back = (getattr(exc, "info", None) or {}).get("added") or []
    return {name: autos.get(name) for name in back}


def tunnels_managed(name, live=True, **kwargs):
    """
    Own the formula's connection and secrets files and reconcile the running
    pluto with the plan, without restarting it: add new conns, replace
    changed ones, delete removed ones (one batched ``addconn`` for all
    additions), re-read secrets when they changed, and initiate the
    ``auto=start`` conns it added. Unchanged conns are not touched (pluto
    renegotiates a conn that is added again, even unchanged).

    name
        Any ID; the files come from the plan, not from arguments.
    live
        ``False``: files only (pluto is not asked nor changed).

    Bad pillar fails before any file is touched; the rendered config is
    checked with ``addconn --checkconfig`` and algparse before it replaces
    the live files; when pluto rejects a conn the state fails naming it and
    pluto's message, and a conn it replaced (pluto has already purged the
    old definition and its SAs) gets its previous definition back, in its
    file and in pluto, and is initiated (or routed) again; the comment
    names the restored conns (and the changes no longer list that file).
    On the VIP holder, added or replaced VIP client conns are not initiated
    (both ends are local there). When pluto is not running only the files
    change (the service state starts it). Secrets files are reported
    without their content. ``test=True`` lists the files and the conns it
    would add, replace and delete.

    .. code-block:: yaml

        ipsec-tunnel-files-managed:
          ipsec.tunnels_managed
    """
    ret = {"name": name, "changes": {}, "result": True, "comment": ""}
    try:
        plan, desired = _desired_files()
        config_dir = __salt__["ipsec.lookup"]()["config_dir"]
        stale = [p for p in _formula_files(config_dir, plan["prefix"]) if p not in desired]
        changes = _file_changes(desired, stale)
        livediff = _live_changes(plan, desired, stale) if live else None
    except (SaltInvocationError, CommandExecutionError) as exc:
        ret.update(result=False, comment=str(exc))
        return ret

    conns = {}
    if livediff:
        conns = {k: livediff[k] for k in ("add", "replace", "delete", "ignore") if livediff[k]}
        if livediff["secrets_changed"]:
            conns["secrets"] = "re-read"
    if not changes and not conns:
        ret["comment"] = "{} files of the plan are in place{}".format(
            len(desired), ", pluto has every planned conn" if livediff else "")
        return ret
    summary = dict(changes)
    if conns:
        summary["pluto"] = conns
    if __opts__["test"]:
        ret.update(result=None, changes=summary, comment="{} files and {} conns would change".format(
            len(changes), sum(len(v) for k, v in conns.items() if k != "secrets")))
        return ret

    conf_texts = {path: desired[path][1] for path in changes if path in desired and desired[path][0] == "conf"}
    try:
        problems = __salt__["ipsec_pluto.checkconfig"](conf_texts) if conf_texts else []
    except CommandExecutionError as exc:
        problems = [str(exc)]
    if problems:
        ret.update(result=False, comment="the rendered config is refused, nothing written: " + "; ".join(problems))
        return ret

    old_texts = {path: _read(path)[0] for path in desired}
    try:
        _write_files(config_dir, desired, stale, changes)
    except OSError as exc:
        # The message names the file, never its content.
        ret.update(result=False, comment="writing {} failed: {}".format(exc.filename or config_dir, exc.strerror))
        return ret
    ret["changes"] = summary
    held = set()
    if livediff:
        try:
            held = _held_vip_clients(plan) & set(livediff["start"])
            _apply_live(livediff, old_texts, desired, held)
        except CommandExecutionError as exc:
            # A file whose previous text was put back did not change.
            for path in [p for p in changes if "diff" in changes[p] and _read(p)[0] == old_texts.get(p)]:
                del ret["changes"][path]
            ret.update(result=False, comment="files written, but pluto refused: {}".format(exc))
            return ret
    ret["comment"] = "{} files and {} conns changed".format(
        len(changes), sum(len(v) for k, v in conns.items() if k != "secrets"))
    if held:
        ret["comment"] += "; not initiated while this node holds their VIP: " + ", ".join(sorted(held))
    return ret


def files_managed(name, **kwargs):
    """
    Write the formula's connection and secrets files from the plan, without
    touching pluto (``ipsec.tunnels_managed`` with ``live: false``).

    .. code-block:: yaml

        ipsec-tunnel-files:
          ipsec.files_managed
    """
    return tunnels_managed(name, live=False)


_NO_RETCODE = object()


def _seconds(value, name, minimum):
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise SaltInvocationError("{} must be a number of seconds, got {!r}".format(name, value))
    if seconds < minimum or seconds != seconds:
        raise SaltInvocationError("{} must be at least {}, got {!r}".format(name, minimum, value))
    return seconds


def established(name, timeout=300, interval=5, level="child"):
    """
    Wait until ``ipsec.verify`` passes on this node: every tunnel that
    should be up here is up at ``level``. Nothing is changed; the
    state fails when ``timeout`` passes first, naming every tunnel still
    down and why. An orchestration can apply the formula and then block
    here until the cluster's tunnels are up.

    name
        Any ID.
    timeout
        Seconds to wait in total (default 300; 0: check once).
    interval
        Seconds between checks (default 5).
    level
        ``child`` (default: IKE SA and Child SA established) or ``ike``
        (an established IKE SA is enough: kernels without ESP). Named
        ``level`` because ``require`` is a Salt requisite.

    In test mode it checks once: ``True`` when already up, else ``None``
    ("would wait").

    .. code-block:: yaml

        ipsec-tunnels-established:
          ipsec.established:
            - timeout: 120
            - interval: 5
            - require:
              - ipsec-tunnel-files-managed
    """
    ret = {"name": name, "changes": {}, "result": False, "comment": ""}
    try:
        timeout = _seconds(timeout, "timeout", 0)
        interval = _seconds(interval, "interval", 0.1)
        if level not in ("ike", "child"):
            raise SaltInvocationError("level must be 'ike' or 'child', got {!r}".format(level))
    except SaltInvocationError as exc:
        ret["comment"] = str(exc)
        return ret

    # ipsec.verify sets retcode 1 on every failed check; that is ours to
    # report, not a leftover for the states (and onlyif/unless) after us.
    saved_retcode = __context__.get("retcode", _NO_RETCODE)
    start = time.monotonic()
    checks = 0
    try:
        while True:
            checks += 1
            try:
                verdict = __salt__["ipsec.verify"](level=level)
                now = verdict["comment"]
            except SaltInvocationError as exc:
                # Bad pillar or arguments: waiting will not fix it.
                ret["comment"] = str(exc)
                return ret
            except CommandExecutionError as exc:
                # pluto (re)starting: keep waiting.
                verdict, now = None, str(exc)
            elapsed = time.monotonic() - start
            if verdict is not None and verdict["result"]:
                ret["result"] = True
                ret["comment"] = "{} (after {:.1f}s, {} check{})".format(
                    now, elapsed, checks, "" if checks == 1 else "s")
                return ret
            if __opts__["test"]:
                ret["result"] = None
                ret["comment"] = "would wait up to {:g}s for the tunnels; now {}".format(timeout, now)
                return ret
            remaining = timeout - elapsed
            if remaining <= 0:
                ret["comment"] = "timed out after {:.1f}s ({} checks): {}".format(elapsed, checks, now)
                return ret
            log.info("ipsec.established: waiting (check %d, %.1fs left): %s", checks, remaining, now)
            time.sleep(min(interval, remaining))
    finally:
        if saved_retcode is _NO_RETCODE:
            __context__.pop("retcode", None)
        else:
            __context__["retcode"] = saved_retcode


# --- /etc/ipsec.conf and /etc/ipsec.secrets: taken over, and given back ----

ORIGINAL_SUFFIX = ".ipsec-formula-orig"
FORMULA_MARK = "Managed by Salt (ipsec-formula)"
INCLUDE_MARK = "# ipsec-formula"


def _mode_of(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def config_original_saved(name):
    """
    Keep the operator's own ``name`` (``/etc/ipsec.conf``) once, as
    ``<name>.ipsec-formula-orig``, before the formula manages the file, so
    ``ipsec.clean`` can give it back. Nothing happens when the file is
    missing, already the formula's, or already saved.

    .. code-block:: yaml

        ipsec-config-file-original-saved:
          ipsec.config_original_saved:
            - name: /etc/ipsec.conf
    """
    ret = {"name": name, "changes": {}, "result": True, "comment": ""}
    saved = name + ORIGINAL_SUFFIX
    current, _ = _read(name)
    if current is None or FORMULA_MARK in current or os.path.exists(saved):
        ret["comment"] = "nothing to save"
        return ret
    ret["changes"] = {"saved": saved}
    if __opts__["test"]:
        ret.update(result=None, comment="{} would be saved as {}".format(name, saved))
        return ret
    _write(saved, current, "{:04o}".format(_mode_of(name)))
    ret["comment"] = "{} saved as {}".format(name, saved)
    return ret


def config_restored(name):
    """
    Give ``name`` (``/etc/ipsec.conf``) back: the saved original when there
    is one, else remove the formula's file. A file that is not the
    formula's is left alone.

    .. code-block:: yaml

        ipsec-clean-config-file-restored:
          ipsec.config_restored:
            - name: /etc/ipsec.conf
    """
    ret = {"name": name, "changes": {}, "result": True, "comment": ""}
    saved = name + ORIGINAL_SUFFIX
    current, _ = _read(name)
    if os.path.exists(saved):
        ret["changes"] = {"restored": saved}
    elif current is not None and FORMULA_MARK in current:
        ret["changes"] = {"removed": name}
    else:
        ret["comment"] = "{} is not the formula's".format(name)
        return ret
    if __opts__["test"]:
        ret.update(result=None, comment="{} would be given back".format(name))
        return ret
    if os.path.exists(saved):
        os.replace(saved, name)
    else:
        os.unlink(name)
    ret["comment"] = "{} given back".format(name)
    return ret


def _include_line(config_dir):
    return "include {}/*.secrets".format(config_dir.rstrip("/"))


def secrets_include_present(name, config_dir):
    """
    Make ``name`` (``/etc/ipsec.secrets``) include the formula's secrets
    files. An existing include of ``<config_dir>/*.secrets`` (Debian's and
    RHEL's default) is enough; otherwise a line marked ``# ipsec-formula``
    is added (the file is created 0600 if missing), which ``ipsec.clean``
    removes again. The operator's other lines are never touched.

    .. code-block:: yaml

        ipsec-secrets-file-includes-formula-secrets:
          ipsec.secrets_include_present:
            - name: /etc/ipsec.secrets
            - config_dir: /etc/ipsec.d
    """
    ret = {"name": name, "changes": {}, "result": True, "comment": ""}
    include = _include_line(config_dir)
    current, _ = _read(name)
    lines = (current or "").splitlines()
    if any(line.split("#")[0].strip() == include for line in lines):
        ret["comment"] = "{} includes {}".format(name, include.split(" ", 1)[1])
        return ret
    ret["changes"] = {"added": include}
    if __opts__["test"]:
        ret.update(result=None, comment="the include would be added")
        return ret
    text = (current or "")
    if text and not text.endswith("\n"):
        text += "\n"
    text += "{}  {}\n".format(include, INCLUDE_MARK)
    os.makedirs(os.path.dirname(name) or ".", exist_ok=True)
    _write(name, text, "{:04o}".format(_mode_of(name)) if current is not None else "0600")
    ret["comment"] = "include added"
    return ret


def secrets_include_absent(name):
    """
    Remove from ``name`` (``/etc/ipsec.secrets``) the lines the formula
    added (marked ``# ipsec-formula``); everything else stays.

    .. code-block:: yaml

        ipsec-clean-secrets-include-absent:
          ipsec.secrets_include_absent:
            - name: /etc/ipsec.secrets
    """
    ret = {"name": name, "changes": {}, "result": True, "comment": ""}
    current, mode = _read(name)
    if current is None:
        ret["comment"] = "{} does not exist".format(name)
        return ret
    lines = current.splitlines(True)
    ours = [line.rstrip("\n") for line in lines if line.rstrip().endswith(INCLUDE_MARK)]
    if not ours:
        ret["comment"] = "no line of the formula in {}".format(name)
        return ret
    ret["changes"] = {"removed": ours}
    if __opts__["test"]:
        ret.update(result=None, comment="the formula's lines would be removed")
        return ret
    _write(name, "".join(line for line in lines if not line.rstrip().endswith(INCLUDE_MARK)), mode)
    ret["comment"] = "the formula's lines removed"
    return ret


def _clean_prefix():
    # Clean must work with a broken pillar: no plan, only the prefix.
    prefix = (__pillar__.get("ipsec") or {}).get("prefix", "overcloud")
    return prefix if isinstance(prefix, str) and prefix else "overcloud"


def files_absent(name):
    """
    Remove the formula's ``<prefix>-*.conf`` and ``<prefix>-*.secrets``
    files from the lookup's ``config_dir``; other files stay. Works with an
    invalid pillar (only ``ipsec:prefix`` and ``ipsec:lookup`` are read).

    .. code-block:: yaml

        ipsec-clean-tunnel-files-absent:
          ipsec.files_absent
    """
    ret = {"name": name, "changes": {}, "result": True, "comment": ""}
    config_dir = __salt__["ipsec.lookup"]()["config_dir"]
    found = _formula_files(config_dir, _clean_prefix())
    if not found:
        ret["comment"] = "no file of the formula in {}".format(config_dir)
        return ret
    ret["changes"] = {path: {"removed": True} for path in found}
    if __opts__["test"]:
        ret.update(result=None, comment="{} files would be removed".format(len(found)))
        return ret
    for path in found:
        os.unlink(path)
    ret["comment"] = "{} files removed".format(len(found))
    return ret


def conns_absent(name):
    """
    Delete the formula's connections (``<prefix>-...``) from the running
    pluto, so no tunnel of the formula outlives its files. Nothing to do
    when pluto is not running. Other connections stay.

    .. code-block:: yaml

        ipsec-clean-conns-deleted:
          ipsec.conns_absent
    """
    ret = {"name": name, "changes": {}, "result": True, "comment": ""}
    try:
        if not __salt__["ipsec_pluto.running"]():
            ret["comment"] = "pluto is not running"
            return ret
        prefix = _clean_prefix() + "-"
        ours = sorted(n for n in __salt__["ipsec_pluto.loaded"]() if n.startswith(prefix))
        if not ours:
            ret["comment"] = "no connection of the formula is loaded"
            return ret
        ret["changes"] = {"deleted": ours}
        if __opts__["test"]:
            ret.update(result=None, comment="{} connections would be deleted".format(len(ours)))
            return ret
        __salt__["ipsec_pluto.delete"](ours)
        ret["comment"] = "{} connections deleted".format(len(ours))
    except (SaltInvocationError, CommandExecutionError) as exc:
        ret.update(result=False, changes={}, comment=str(exc))
    return ret
