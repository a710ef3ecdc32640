"""
Reconciling the running pluto with the plan: pure logic, no I/O.

``parse_conf`` reads the formula's own rendered conf files back;
``diff`` compares what is on disk (and what pluto has loaded) with what is
planned and says which conns to add, replace, delete, initiate and whether
secrets must be re-read. The text Libreswan's tools print is parsed in
``_utils/ipsec_status.py``.

What the diff relies on (measured with Libreswan 4.10, see
``_modules/ipsec_pluto.py``): ``ipsec addconn NAME`` of a conn pluto already
has purges it first (its IKE and Child SAs are deleted, the peer is told)
and then adds it again, even when nothing changed. So an unchanged conn
must never be handed to addconn, and a changed one needs no separate
delete: one ``addconn`` with every added and changed name replaces them all.
Deleting or adding one conn leaves the SAs of every other conn alone.

Secret text is never returned: secrets files are only compared.
"""

import re

_SECTION = re.compile(r"^(conn|config|ca)\s+(\S+)\s*$")
_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _value(raw):
    """ipsec.conf value: unquoted, trailing ``# comment`` dropped."""
    if raw.startswith('"'):
        end = raw.find('"', 1)
        return raw[1:end] if end > 0 else raw[1:]
    if "#" in raw:
        return re.split(r"\s+#", raw, maxsplit=1)[0].strip()
    return raw


def parse_conf(text):
    """``{conn name: {keyword: value}}`` of the ``conn`` sections in ``text``.

    Meant for the formula's own rendered files (``ipsec_render``): sections
    start in column 1 (``conn NAME``), keywords are indented ``key=value``
    lines, values may be double-quoted. Comment and blank lines, ``include``
    lines and ``config``/``ca`` sections are skipped. A conn defined twice
    keeps its last definition (``checkconfig`` reports duplicates).
    ``None`` or empty text gives ``{}``.
    """
    conns = {}
    current = None
    for line in (text or "").splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if not line[0].isspace():
            match = _SECTION.match(line)
            if match and match.group(1) == "conn" and match.group(2) != "%default":
                current = {}
                conns[match.group(2)] = current
            else:
                current = None
            continue
        if current is None:
            continue
        key, sep, raw = stripped.partition("=")
        key = key.rstrip()
        if sep and _KEY.match(key):
            current[key] = _value(raw.strip())
    return conns


def conf_names(text):
    """Conn names in ``text`` in order, duplicates kept (for checks)."""
    names = []
    for line in (text or "").splitlines():
        match = _SECTION.match(line)
        if match and match.group(1) == "conn" and match.group(2) != "%default":
            names.append(match.group(2))
    return names


def _is_secrets(path):
    return path.endswith(".secrets")


def _conns_of(files, cache):
    """{name: (path, keywords)} of every conn in the conf files of ``files``;
    ``cache`` maps texts already parsed (old and new files are mostly the
    same text) to their parse."""
    conns = {}
    for path in sorted(files):
        text = files[path]
        if text is None or _is_secrets(path):
            continue
        if text not in cache:
            cache[text] = parse_conf(text)
        for name, keywords in cache[text].items():
            conns[name] = (path, keywords)
    return conns


def diff(old_files, new_files, loaded=None, owned=()):
    """What to change in the running pluto to go from ``old_files`` to
    ``new_files``.

    old_files
        ``{path: text or None}``: what the formula's files hold now (None:
        missing). Include the formula's stale files (in the config dir but
        no longer planned) so their conns get deleted.
    new_files
        ``{path: text}``: the newly rendered files (``ipsec_render``).
    loaded
        Optional names of the conns pluto has loaded now
        (``ipsec_pluto.loaded``). Without it the old files are taken as
        what pluto runs.
    owned
        Names of the conns the formula loaded before (its manifest): those
        still loaded and not planned are deleted too. Ownership is by
        record, never by name: an operator's ``overcloud-backup`` stays.

    Returns (every list sorted)::

        {"add": [...],         # planned, not in the old files or not loaded
         "replace": [...],     # loaded (or in the old files) but its
                               # keywords or its file changed
         "delete": [...],      # in the old files or owned, loaded, not
                               # planned (or planned with auto=ignore)
         "unchanged": [...],
         "ignore": [...],      # planned with auto=ignore: never loaded
         "start": [...],       # added or replaced with auto=start: initiate
         "route": [...],       # added or replaced with auto=route|ondemand
         "secrets_changed": bool,
         "files": {"write": [paths whose text changes],
                   "remove": [old paths no longer planned]}}

    The conns of ``add`` + ``replace`` go to pluto in one ``addconn``
    (which replaces the loaded ones); ``unchanged`` conns are never touched.
    """
    old_files = dict(old_files or {})
    new_files = dict(new_files or {})
    loaded_set = None if loaded is None else set(loaded)
    cache = {}
    old = _conns_of(old_files, cache)
    new = _conns_of(new_files, cache)

    result = {"add": [], "replace": [], "delete": [], "unchanged": [], "ignore": [],
              "start": [], "route": []}
    for name in sorted(new):
        path, keywords = new[name]
        is_loaded = name in loaded_set if loaded_set is not None else name in old
        if keywords.get("auto") == "ignore":
            result["ignore"].append(name)
            if is_loaded:
                result["delete"].append(name)
            continue
        if name not in old or not is_loaded:
            kind = "add"
        elif old[name] != (path, keywords):
            kind = "replace"
        else:
            kind = "unchanged"
        result[kind].append(name)
        if kind != "unchanged":
            if keywords.get("auto") == "start":
                result["start"].append(name)
            elif keywords.get("auto") in ("route", "ondemand"):
                result["route"].append(name)

    gone = {name for name in old if name not in new}
    if loaded_set is not None:
        # A conn of the old files that pluto no longer has needs no delete.
        gone = {name for name in gone if name in loaded_set}
        gone |= {name for name in owned if name in loaded_set and name not in new}
    result["delete"] = sorted(gone | set(result["delete"]))

    secrets_paths = sorted(p for p in set(old_files) | set(new_files) if _is_secrets(p))
    result["secrets_changed"] = any(old_files.get(p) != new_files.get(p) for p in secrets_paths)
    result["files"] = {
        "write": sorted(p for p, text in new_files.items() if old_files.get(p) != text),
        "remove": sorted(p for p, text in old_files.items() if text is not None and p not in new_files),
    }
    return result


def summary(changes):
    """One line for a state comment: ``2 to add, 1 to replace, ...``."""
    parts = ["{} to {}".format(len(changes[key]), key)
             for key in ("add", "replace", "delete") if changes.get(key)]
    if changes.get("secrets_changed"):
        parts.append("secrets to re-read")
    return ", ".join(parts) if parts else "nothing to change"
