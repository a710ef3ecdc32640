"""
Reconciling the running pluto with the plan: pure logic, no I/O.

``parse_conf`` reads the formula's own rendered conf files back;
``diff`` compares what is on disk (and what pluto has loaded) with what is
planned and says which conns to add, replace, delete, initiate and whether
secrets must be re-read. The parsers below turn the text Libreswan's tools
print into data for ``_modules/ipsec_pluto.py``.

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

# Must stay equal to ipsec_plan.DEFAULT_PREFIX (utils loaded by Salt cannot
# import each other reliably; a unit test compares them).
DEFAULT_PREFIX = "overcloud"

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


def diff(old_files, new_files, loaded=None, prefix=DEFAULT_PREFIX):
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
    prefix
        The plan's prefix: loaded conns named ``<prefix>-...`` that are not
        planned are deleted too. ``None``: only conns of the old files.

    Returns (every list sorted)::

        {"add": [...],         # planned, not in the old files or not loaded
         "replace": [...],     # loaded (or in the old files) but its
                               # keywords or its file changed
         "delete": [...],      # in the old files or loaded with the prefix,
                               # not planned (or planned with auto=ignore)
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
        if prefix:
            gone |= {name for name in loaded_set
                     if name.startswith(prefix + "-") and name not in new}
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


# --- Libreswan output -------------------------------------------------------

# 3.x/4.x prefix whack replies with a 3-digit code (000-009 information,
# 010-099 errors, 1xx/2xx state progress); 5.x prints none.
_CODE = re.compile(r"^(\d{3}) (.*)$")
_NAMED = re.compile(r'^"([^"]+)"(?:\[\d+\])?(?: #\d+)?:\s*(.*)$')
# The first line of each conn in the status connection list:
# `"name": 198.51.100.1...198.51.100.2; ...`, instances `"name"[3]: ...`.
_STATUS_CONN = re.compile(r'^(?:\d{3} )?"([^"]+)"(?:\[\d+\])?(?:\s|:)', re.M)
# 4.x: "conn 'x': not found (tried aliases)"; 5.x: "conn x: not found ...".
_NOT_FOUND = re.compile(r"^conn '?([^'\s]+?)'?: not found")


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
        elif line.startswith(("cannot load config", "FATAL ERROR:")) or "syntax error" in line:
            # 4.x "cannot load config ...: syntax error [kw]"; 5.x
            # "FATAL ERROR: ipsec addconn: F:N: unrecognized 'conn' keyword ..."
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


def whack_errors(stdout, unanswered_ok=False, retcode=0):
    """Error replies (codes 10-99) of a whack call, e.g.
    ``021 no connection named "x"``; ``unanswered_ok``: not those of a
    negotiation the peer has not answered (NEGOTIATION_CODES).

    5.x prints no codes: whack exits with the code of pluto's error reply
    (``retcode``, e.g. 21 ``no connection or alias named "x"``), and its
    output is then the error."""
    skip = NEGOTIATION_CODES if unanswered_ok else ()
    errors = []
    coded = False
    lines = [line.rstrip() for line in (stdout or "").replace("\r", "").splitlines()]
    for line in lines:
        code, text = split_code(line)
        coded = coded or code is not None
        if code is not None and 10 <= code < 100 and code not in skip:
            errors.append(text)
    if retcode and not coded and retcode not in skip:
        errors = [line.strip() for line in lines if line.strip()] or ["whack exit {}".format(retcode)]
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
