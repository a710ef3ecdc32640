"""
The formula's files on disk, without Salt: reading them without following
symlinks, the formula's marked edits of the two files it shares with the
operator (``ipsec.conf``, ``ipsec.secrets``), its manifest, and writing a
whole set of files as one transaction.

Ownership is by what the formula wrote, never by a name pattern: its tunnel
files are listed in a manifest (``<config_dir>/.ipsec-formula.json``), and in
the shared files it owns exactly the lines between its marker lines (plus
the operator lines it disabled, kept in a marked comment so ``unedit`` can
put them back byte for byte).

A transaction (``Transaction``) writes every new text to a hidden temporary
file next to its target first (hidden: pluto's ``include dir/*.conf`` never
sees it), then renames them all, keeping a hard link to each replaced file;
``rollback`` puts every old file back, ``commit`` drops the links. A full
disk or any other failure while staging leaves every target untouched.
"""

import errno
import json
import os
import stat
import tempfile

MARK = "ipsec-formula"
BEGIN = "# BEGIN ipsec-formula: managed by Salt, local changes are overwritten"
END = "# END ipsec-formula"
# Opens a block appended to a file whose last line had no newline: the
# newline added before it goes when the block goes.
BEGIN_AFTER_NOEOL = BEGIN + " (newline added before)"
DISABLED = "#ipsec-formula-disabled: "
MANIFEST_NAME = ".ipsec-formula.json"
# The services the formula enabled at boot (they were disabled before it):
# ipsec.clean disables exactly these again (_states/ipsec_units.py).
UNITS_RECORD_NAME = ".ipsec-formula-units.json"
HEADER_MARK = "# Managed by Salt (ipsec-formula)."
TEMP_PREFIX = ".ipsec-formula-"


class NotRegular(Exception):
    """The path exists but is a symlink or not a regular file."""


def read(path):
    """``(text, mode)`` of the regular file at ``path``, ``(None, None)`` when
    it does not exist. Raises ``NotRegular`` for a symlink (never followed:
    a conf path replaced by a link to a secrets file must not be read into
    a diff) or anything but a regular file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise NotRegular("{} is a symbolic link".format(path)) from None
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise NotRegular("{} is not a regular file".format(path))
        with os.fdopen(fd, encoding="utf-8", errors="surrogateescape") as handle:
            fd = None
            return handle.read(), "{:04o}".format(stat.S_IMODE(info.st_mode))
    finally:
        if fd is not None:
            os.close(fd)


def formula_text(text):
    """Whether ``text`` was written by the formula (its header first)."""
    return text is not None and text.startswith(HEADER_MARK)


LEGACY_CONF_LINES = ("# Managed by Salt (ipsec-formula). Local changes are overwritten.",
                     "# Options: pillar ipsec:config_setup. Connections: ")


def legacy_conf(text):
    """Whether ``text`` is the whole ipsec.conf releases before 0.2 wrote
    (their two header lines, exactly): an operator's file that merely
    contains the formula's header text is the operator's."""
    lines = (text or "").splitlines()
    return len(lines) >= 2 and lines[0] == LEGACY_CONF_LINES[0] and lines[1].startswith(LEGACY_CONF_LINES[1])


def shared_target(path):
    """Where to write a file the formula shares with the operator: through
    a symlink to its target (the operator's link stays a link)."""
    return os.path.realpath(path) if os.path.islink(path) else path


def read_shared(path):
    """``(text, mode)`` of a shared file, following the operator's symlink."""
    return read(shared_target(path))


# --- ipsec.conf: the formula's config setup keys and include ---------------

def _is_section(line):
    return bool(line) and not line[0].isspace() and not line.startswith("#")


def _keyword(line):
    stripped = line.strip()
    if not stripped or stripped.startswith("#") or "=" not in stripped:
        return None
    return stripped.split("=", 1)[0].strip()


def _include_target(line):
    parts = line.split("#", 1)[0].split()
    return parts[1] if len(parts) == 2 and parts[0] == "include" else None


def legacy_secrets_line(config_dir):
    """The include line releases before 0.2 added to ipsec.secrets."""
    return "include {}/*.secrets  # ipsec-formula".format(config_dir.rstrip("/"))


def unedit(text, legacy=()):
    """The shared file without the formula's edits: its blocks removed, the
    operator lines it disabled put back, and ``legacy`` lines (exact) of
    older releases dropped. The inverse of ``edit_conf`` and
    ``edit_secrets`` (byte for byte)."""
    if text is None:
        return None
    out, inside = [], False
    for line in text.splitlines(True):
        body = line.strip()
        if body in (BEGIN, BEGIN_AFTER_NOEOL):
            if body == BEGIN_AFTER_NOEOL and out and out[-1].endswith("\n"):
                out[-1] = out[-1][:-1]
            inside = True
            continue
        if body == END and inside:
            inside = False
            continue
        if inside:
            continue
        if line.lstrip().startswith(DISABLED):
            indent = line[:len(line) - len(line.lstrip())]
            line = indent + line.lstrip()[len(DISABLED):]
        elif line.rstrip("\n") in legacy:
            continue
        out.append(line)
    return "".join(out)


def edit_conf(original, config_setup, config_dir):
    """``ipsec.conf`` with the formula's ``config setup`` keys and the include
    of its conf files, everything else as the operator (or the
    distribution: RHEL's crypto-policy include) has it.

    ``original`` is the text without the formula's edits (``unedit``), None
    when there is no file. Operator lines setting a key the formula sets are
    disabled (kept as a marked comment), not deleted."""
    include = "include {}/*.conf".format(config_dir.rstrip("/"))
    block = ["\t" + BEGIN + "\n"]
    block += ["\t{}={}\n".format(key, '"{}"'.format(value) if " " in value else value)
              for key, value in config_setup.items()]
    block.append("\t" + END + "\n")
    lines = (original or "").splitlines(True)
    out, in_setup, placed, has_include = [], False, False, False
    for line in lines:
        if _is_section(line):
            in_setup = line.split("#", 1)[0].split() == ["config", "setup"]
            if _include_target(line) == include.split()[1]:
                has_include = True
            out.append(line)
            if in_setup and not placed:
                if not line.endswith("\n"):
                    out[-1] += "\n"
                    block[0] = "\t" + BEGIN_AFTER_NOEOL + "\n"
                out.extend(block)
                placed = True
            continue
        if in_setup and _keyword(line) in config_setup:
            indent = line[:len(line) - len(line.lstrip())]
            out.append(indent + DISABLED + line.lstrip())
            continue
        out.append(line)
    added = []
    if not placed:
        # At the end: lines before any section stay where they are.
        added += ["config setup\n"] + block[1:-1]
    if not has_include:
        added += [include + "\n"]
    if added:
        opening = BEGIN
        if out and not out[-1].endswith("\n"):
            out[-1] += "\n"
            opening = BEGIN_AFTER_NOEOL
        out += [opening + "\n"] + added + [END + "\n"]
    return "".join(out)


def _append_block(text, lines):
    """``text`` with ``lines`` appended in one marked block."""
    opening = BEGIN
    if text and not text.endswith("\n"):
        text += "\n"
        opening = BEGIN_AFTER_NOEOL
    return text + opening + "\n" + "".join(lines) + END + "\n"


def edit_secrets(original, config_dir):
    """``ipsec.secrets`` including the formula's secrets files: an existing
    include of ``<config_dir>/*.secrets`` (Debian's and RHEL's default) is
    enough, else one marked line is added. The operator's lines stay."""
    include = "include {}/*.secrets".format(config_dir.rstrip("/"))
    text = original or ""
    if any(_include_target(line) == include.split()[1] for line in text.splitlines()):
        return text
    return _append_block(text, [include + "\n"])


# --- the persisted firewall (ipsec:firewall:persist) ------------------------

def edit_nft_conf(original, path):
    """The nftables service's config (``original`` without the formula's
    edits, None: no file) with one marked ``include`` of the formula's table
    file at the end, after the operator's ``flush ruleset`` and tables."""
    include = 'include "{}"'.format(path)
    text = original or ""
    if any(line.strip() == include for line in text.splitlines()):
        return text
    return _append_block(text, [include + "\n"])


def edit_saved_rules(original, lines):
    """An ``iptables-save`` file (what the distribution's iptables service
    restores at boot; ``original`` without the formula's edits) with the
    formula's rule ``lines`` first in its filter table, in one marked
    block, as ``-I`` puts them at run time. No file, or no filter table in
    it: the block brings its own ``*filter`` and ``COMMIT``."""
    text = original or ""
    if not lines:
        return text
    out = text.splitlines(True)
    for index, line in enumerate(out):
        if line.strip() == "*filter" and line.endswith("\n"):
            end = index + 1
            while end < len(out) and out[end].startswith(":") and out[end].endswith("\n"):
                end += 1
            return "".join(out[:end] + [BEGIN + "\n"] + [rule + "\n" for rule in lines] + [END + "\n"]
                           + out[end:])
    return _append_block(text, ["*filter\n"] + [rule + "\n" for rule in lines] + ["COMMIT\n"])


# --- the manifest of the formula's own tunnel files and conns --------------

def manifest_path(config_dir):
    return os.path.join(config_dir, MANIFEST_NAME)


def units_record_path(config_dir):
    return os.path.join(config_dir, UNITS_RECORD_NAME)


def load_units_record(config_dir):
    """The services the formula enabled (sorted names; [] when none)."""
    try:
        text, _ = read(units_record_path(config_dir))
    except NotRegular:
        text = None
    try:
        return sorted(str(name) for name in json.loads(text or "{}").get("enabled", []))
    except (ValueError, AttributeError):
        return []


def units_record_text(names):
    return json.dumps({"written_by": MARK, "enabled": sorted(set(names))}, indent=1, sort_keys=True) + "\n"


def load_manifest(config_dir, prefix):
    """``{"files": [...], "conns": [...]}`` the formula recorded; from a
    deployment made before the manifest: the ``<prefix>-*.conf|.secrets``
    files that carry the formula's header (its own text, never a name
    pattern alone)."""
    try:
        text, _ = read(manifest_path(config_dir))
    except NotRegular:
        text = None
    if text is not None:
        try:
            data = json.loads(text)
            return {"files": sorted(str(p) for p in data.get("files", [])),
                    "conns": sorted(str(c) for c in data.get("conns", []))}
        except (ValueError, AttributeError):
            pass
    found = []
    try:
        names = sorted(os.listdir(config_dir))
    except OSError:
        names = []
    for name in names:
        if name.startswith(prefix + "-") and name.endswith((".conf", ".secrets")):
            path = os.path.join(config_dir, name)
            try:
                content, _ = read(path)
            except NotRegular:
                continue
            if formula_text(content):
                found.append(path)
    return {"files": found, "conns": []}


def tripleo_files(config_dir, prefix, owned):
    """The files tripleo-ipsec left in ``config_dir``: its node-to-node conf
    files (``<prefix>-<net>-node-to-node-private-tunnels.conf``) and the
    files it shares names with the formula (VIP conf and secrets,
    node-to-node secrets) that the formula did not write."""
    found = []
    try:
        names = sorted(os.listdir(config_dir))
    except OSError:
        return found
    for name in names:
        path = os.path.join(config_dir, name)
        if path in owned or not name.startswith(prefix + "-"):
            continue
        if name.endswith("-node-to-node-private-tunnels.conf"):
            found.append(path)
        elif name.endswith(("-vip-tunnels.conf", "-vip-tunnels.secrets", "-node-to-node-tunnels.secrets")):
            try:
                text, _ = read(path)
            except NotRegular:
                continue
            if text is not None and not formula_text(text):
                found.append(path)
    return found


def manifest_text(files, conns):
    return json.dumps({"written_by": MARK, "files": sorted(files), "conns": sorted(conns)},
                      indent=1, sort_keys=True) + "\n"


# --- writing a set of files as one transaction ------------------------------

class Transaction:
    """Stage every file, then rename them all; ``rollback`` undoes it all.

    ``stage(path, text, mode)`` writes the temporary file (raises OSError,
    e.g. ENOSPC, with nothing renamed yet); ``chmod(path, mode)`` and
    ``remove(path)`` are recorded; ``apply()`` renames, chmods and removes,
    keeping a hard link to every file it replaces or removes;
    ``rollback()`` restores them; ``commit()`` drops the links."""

    def __init__(self):
        self._staged = []      # (path, temp)
        self._chmods = []      # (path, mode)
        self._removals = []    # path
        self._undo = []        # callables, most recent last

    def stage(self, path, text, mode):
        directory = os.path.dirname(path) or "."
        try:
            os.makedirs(directory, mode=0o755, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=directory, prefix=TEMP_PREFIX)
        except BaseException:
            self.abort()
            raise
        try:
            os.fchmod(fd, int(mode, 8))
            with os.fdopen(fd, "w", encoding="utf-8", errors="surrogateescape") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
        except BaseException:
            _unlink(tmp)
            self.abort()
            raise
        self._staged.append((path, tmp))

    def chmod(self, path, mode):
        self._chmods.append((path, mode))

    def remove(self, path):
        self._removals.append(path)

    def abort(self):
        """Drop what was staged (nothing was renamed yet)."""
        for _, tmp in self._staged:
            _unlink(tmp)
        self._staged = []

    def _keep(self, path):
        """A hard link to the current file at ``path`` (None: none there)."""
        if not os.path.lexists(path):
            return None
        backup = tempfile.mktemp(dir=os.path.dirname(path) or ".", prefix=TEMP_PREFIX + "old-")
        os.link(path, backup, follow_symlinks=False)
        return backup

    def apply(self):
        try:
            for path, tmp in self._staged:
                backup = self._keep(path)
                os.replace(tmp, path)
                self._undo.append(("replace", path, backup))
            self._staged = []
            for path, mode in self._chmods:
                old = stat.S_IMODE(os.lstat(path).st_mode)
                os.chmod(path, int(mode, 8))
                self._undo.append(("chmod", path, old))
            for path in self._removals:
                backup = self._keep(path)
                if backup is not None:
                    os.unlink(path)
                    self._undo.append(("remove", path, backup))
        except BaseException:
            self.rollback()
            raise

    def rollback(self):
        self.abort()
        while self._undo:
            kind, path, saved = self._undo.pop()
            try:
                if kind == "chmod":
                    os.chmod(path, saved)
                elif saved is None:
                    _unlink(path)
                else:
                    os.replace(saved, path)
            except OSError:
                pass

    def commit(self):
        for kind, _, saved in self._undo:
            if kind != "chmod" and saved is not None:
                _unlink(saved)
        self._undo = []


def _unlink(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def transaction():
    """A new ``Transaction`` (Salt's loader exposes functions, not classes)."""
    return Transaction()
