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
