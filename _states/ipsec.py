"""
States of ipsec-formula: reconcile this node with its plan (``ipsec.plan``).

``ipsec.files_managed`` owns the formula's ``<prefix>-*.conf`` and
``<prefix>-*.secrets`` files in the lookup's ``config_dir``: it writes what
the plan says, with the plan's modes, removes the formula's files the plan no
longer has, and never shows the content of a secrets file.
"""

import difflib
import fnmatch
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
    psk = __pillar__["ipsec"]["psk"]
    texts = __utils__["ipsec_render.render_files"](plan, psk)
    desired = {
        path: (meta["kind"], texts[path], meta["mode"])
        for path, meta in plan["files"].items()
    }
    return plan, desired


def files_managed(name, **kwargs):
    """
    Write the formula's connection and secrets files from the plan.

    name
        Any ID; the files come from the plan, not from arguments.

    Bad pillar fails the state before any file is touched. Secrets files are
    reported as changed without their content. Files matching
    ``<prefix>-*.conf|.secrets`` that the plan no longer has are removed.

    .. code-block:: yaml

        ipsec-tunnel-files-managed:
          ipsec.files_managed
    """
    ret = {"name": name, "changes": {}, "result": True, "comment": ""}
    try:
        plan, desired = _desired_files()
    except (SaltInvocationError, CommandExecutionError) as exc:
        ret["result"] = False
        ret["comment"] = str(exc)
        return ret

    config_dir = __salt__["ipsec.lookup"]()["config_dir"]
    changes = {}
    for path, (kind, text, mode) in desired.items():
        change = _file_change(path, kind, text, mode)
        if change:
            changes[path] = change
    stale = [p for p in _formula_files(config_dir, plan["prefix"]) if p not in desired]
    for path in stale:
        changes[path] = {"removed": "not in the plan any more"}

    if not changes:
        ret["comment"] = "{} files of the plan are in place".format(len(desired))
        return ret
    if __opts__["test"]:
        ret["result"] = None
        ret["changes"] = changes
        ret["comment"] = "{} files would change".format(len(changes))
        return ret

    try:
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
    except OSError as exc:
        # The message names the file, never its content.
        ret["result"] = False
        ret["comment"] = "writing {} failed: {}".format(exc.filename or config_dir, exc.strerror)
        return ret
    ret["changes"] = changes
    ret["comment"] = "{} files changed".format(len(changes))
    return ret


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
