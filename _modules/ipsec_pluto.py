"""
The running pluto, conn by conn: what it has loaded, and batched add,
delete, initiate and secrets re-read, through the control socket of the
formula's lookup (``ipsec.lookup``: ``ipsec_bin``, ``ctlsocket``,
``config_file``). Nothing here restarts pluto.

How Libreswan 4.10 behaves (measured with two plutos in network
namespaces, IKE SA serial numbers compared before and after):

- ``ipsec addconn --config F --ctlsocket S NAME...`` loads many conns with
  one parse of the config. For a NAME pluto already has it *replaces*:
  pluto deletes the conn with its IKE and Child SAs (the peer gets a
  delete notification and renegotiates), then adds the new definition,
  even when the definition did not change. 5.x documents the same
  ("ipsec add" semantics: an existing conn of that name is purged first).
  So: never re-add an unchanged conn; a changed one needs no separate
  delete.
- A conn pluto rejects is reported as ``036 "x": failed to add
  connection: <reason>``; when it replaced a loaded conn, the old one is
  already gone. The other names of the same call are added normally.
- addconn's exit code is the status of the *last* name only, and 4.10
  prints pluto's replies only when its stdout is a terminal: ``add`` runs
  it on a pseudo-terminal to read the verdict of every name.
- addconn does not initiate ``auto=start`` conns (pluto does that for the
  conns it loads at start-up): ``initiate`` does, asynchronously.
- Deleting or adding one conn leaves the SAs of every other conn alone;
  ``--rereadsecrets`` leaves every SA alone.

Sync before first use: ``salt '*' saltutil.sync_all``.
"""

import errno
import logging
import os
import re
import select
import shutil
import subprocess
import tempfile
import time

import salt.utils.path
from salt.exceptions import CommandExecutionError, SaltInvocationError

log = logging.getLogger(__name__)

__virtualname__ = "ipsec_pluto"

# Conn names as the plan makes them (letters, digits, '_', '-', and the
# '.'/':' of addresses); never starting with '-', so never an option.
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@+%-]{0,199}$")
# Bytes of conn names per addconn call; each call parses the whole config
# once, so fewer calls are faster (4000 plan names are ~200 KB).
CHUNK_BYTES = 256 * 1024
ADDCONN_TIMEOUT = 600
WHACK_TIMEOUT = 60
PROPOSAL_KEYWORDS = ("ike", "esp", "phase2alg", "ah")


def __virtual__():
    return __virtualname__


def _lookup():
    if "ipsec.lookup" not in __salt__:
        raise CommandExecutionError("the ipsec execution module is not loaded (run saltutil.sync_all)")
    return __salt__["ipsec.lookup"]()


def _binary(paths):
    binary = paths["ipsec_bin"]
    if not os.path.exists(binary) and not salt.utils.path.which(binary):
        raise CommandExecutionError("{} not found: is Libreswan installed?".format(binary))
    return binary


def _names(names):
    """A list of conn names from a list or a comma/space separated string."""
    if names is None:
        return []
    if isinstance(names, str):
        names = [part for part in re.split(r"[,\s]+", names) if part]
    if not isinstance(names, (list, tuple, set, frozenset)):
        raise SaltInvocationError("names must be a list of conn names, got {}".format(type(names).__name__))
    checked = []
    for name in names:
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise SaltInvocationError("{!r} is not a conn name".format(name))
        checked.append(name)
    return list(dict.fromkeys(sorted(checked) if isinstance(names, (set, frozenset)) else checked))


def _run(cmd, quiet=False, timeout=WHACK_TIMEOUT):
    return __salt__["cmd.run_all"](
        cmd, python_shell=False, ignore_retcode=True, timeout=timeout,
        output_loglevel="quiet" if quiet else "debug",
    )


def _message(result):
    return " ".join(
        part.strip() for part in (result.get("stderr"), result.get("stdout")) if part and part.strip()
    ) or "exit {}".format(result.get("retcode"))


def _whack(paths, args, quiet=False, timeout=WHACK_TIMEOUT, replies=False):
    """The output of ``ipsec whack --ctlsocket S ARGS``; raises when pluto
    does not answer. ``replies``: (retcode, output) instead, also when
    pluto answered with an error (5.x whack exits with its reply code)."""
    socket = paths["ctlsocket"]
    cmd = [_binary(paths), "whack", "--ctlsocket", socket] + list(args)
    result = _run(cmd, quiet=quiet, timeout=timeout)
    if result["retcode"] != 0 and replies and (result.get("stdout") or "").strip():
        return result["retcode"], result["stdout"]
    if result["retcode"] != 0:
        # quiet: stdout may quote secrets (rereadsecrets); stderr is whack's own.
        message = _message({"stderr": result.get("stderr"), "retcode": result["retcode"]} if quiet else result)
        if not os.path.exists(socket) or "connect(" in message or "not running" in message:
            raise CommandExecutionError(
                "pluto is not running (no answer on control socket {}): {}".format(socket, message))
        raise CommandExecutionError("ipsec whack {} failed: {}".format(" ".join(args), message))
    return (0, result.get("stdout") or "") if replies else result.get("stdout") or ""


def _run_tty(cmd, timeout=ADDCONN_TIMEOUT):
    """(retcode, stdout, stderr) of ``cmd`` run with its stdout on a
    pseudo-terminal (addconn 4.10 only prints pluto's replies to a
    terminal). No shell; stdin is /dev/null."""
    import pty  # pylint: disable=import-outside-toplevel
    import termios  # pylint: disable=import-outside-toplevel

    log.debug("ipsec_pluto: running on a pty: %s", " ".join(cmd[:6]) + (" ..." if len(cmd) > 6 else ""))
    master, slave = pty.openpty()
    try:
        attrs = termios.tcgetattr(slave)
        attrs[1] &= ~termios.OPOST  # no "\n" -> "\r\n"
        termios.tcsetattr(slave, termios.TCSANOW, attrs)
    except termios.error:
        pass
    chunks = []
    with tempfile.TemporaryFile() as err:
        try:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=slave, stderr=err, close_fds=True)
        except OSError as exc:
            os.close(master)
            os.close(slave)
            raise CommandExecutionError("cannot run {}: {}".format(cmd[0], exc.strerror))
        os.close(slave)
        deadline = time.monotonic() + timeout
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    proc.kill()
                    proc.wait()
                    raise CommandExecutionError("{} {} timed out after {}s".format(cmd[0], cmd[1], timeout))
                ready, _, _ = select.select([master], [], [], min(remaining, 0.5))
                if not ready:
                    if proc.poll() is not None:
                        break
                    continue
                try:
                    data = os.read(master, 65536)
                except OSError as exc:
                    if exc.errno == errno.EIO:  # every writer closed the terminal
                        break
                    raise
                if not data:
                    break
                chunks.append(data)
        finally:
            os.close(master)
        proc.wait()
        err.seek(0)
        stderr = err.read().decode("utf-8", "replace")
    return proc.returncode, b"".join(chunks).decode("utf-8", "replace"), stderr


def _addconn(cmd):
    """(retcode, stdout, stderr) of one addconn call, on a pty when possible."""
    try:
        return _run_tty(cmd)
    except OSError as exc:  # no pty available: pluto's replies are lost
        log.warning("ipsec_pluto: no pseudo-terminal (%s): addconn verdicts come from the loaded list", exc)
        result = _run(cmd, timeout=ADDCONN_TIMEOUT)
        return result["retcode"], result.get("stdout") or "", result.get("stderr") or ""


def _chunks(names, budget):
    chunk, size = [], 0
    for name in names:
        if chunk and size + len(name) + 1 > budget:
            yield chunk
            chunk, size = [], 0
        chunk.append(name)
        size += len(name) + 1
    if chunk:
        yield chunk


def running():
    """
    Whether pluto answers on the lookup's control socket
    (``ipsec whack --ctlsocket S --briefstatus``; ``--status`` before
    Libreswan 3.29). False when Libreswan is not installed.

    CLI Example:

    .. code-block:: bash

        salt '*' ipsec_pluto.running
    """
    paths = _lookup()
    if not os.path.exists(paths["ctlsocket"]):
        return False
    try:
        binary = _binary(paths)
    except CommandExecutionError:
        return False
    for flag in ("--briefstatus", "--status"):
        result = _run([binary, "whack", "--ctlsocket", paths["ctlsocket"], flag], quiet=True)
        if result["retcode"] == 0:
            return True
        if "connect(" in _message(result) or "not running" in _message(result):
            return False
    return False


def loaded():
    """
    Sorted names of the conns pluto has loaded, from the connection list of
    ``ipsec whack --ctlsocket S --status`` (Libreswan 4.10 has no lighter
    listing; ~0.5 s for 4000 conns). Instances of template conns
    (``"name"[3]``) count as ``name``. Raises when pluto is not running.

    CLI Example:

    .. code-block:: bash

        salt '*' ipsec_pluto.loaded
    """
    text = _whack(_lookup(), ["--status"], quiet=True)
    return __utils__["ipsec_status.parse_loaded"](text)


def add(names, config=None, chunk_bytes=CHUNK_BYTES):
    """
    Load (or replace) conns in the running pluto with one ``ipsec addconn
    --config <config> --ctlsocket S NAME...`` call (more only when the names
    exceed ``chunk_bytes``). A name pluto already has is replaced: its SAs
    are deleted and renegotiate, even when nothing changed; hand only new
    and changed conns here. Nothing is initiated (see ``initiate``).

    names
        List of conn names (or a comma-separated string).
    config
        The config file addconn reads (default: the lookup's ``config_file``,
        which includes the formula's files).

    Returns ``{"added": [names], "warnings": [addconn warnings]}``. When
    pluto rejects conns, raises ``CommandExecutionError`` naming each with
    pluto's message (``036 "x": failed to add connection: ...``); its
    ``info`` holds ``{"added": [...], "rejected": {name: message}}``. The
    other names are added all the same; a rejected name that replaced a
    loaded conn leaves that conn deleted.

    CLI Example:

    .. code-block:: bash

        salt '*' ipsec_pluto.add '["overcloud-storage-203.0.113.10-203.0.113.11"]'
    """
    names = _names(names)
    if not names:
        return {"added": [], "warnings": []}
    paths = _lookup()
    binary = _binary(paths)
    config = config or paths["config_file"]
    if not os.path.isfile(config):
        raise CommandExecutionError("config file {} does not exist".format(config))
    if not os.path.exists(paths["ctlsocket"]):
        raise CommandExecutionError(
            "pluto is not running (no control socket {})".format(paths["ctlsocket"]))
    parse = __utils__["ipsec_status.parse_addconn"]
    added, rejected, unknown, warnings = [], {}, [], []
    retcode = 0
    for chunk in _chunks(names, chunk_bytes):
        cmd = [binary, "addconn", "--config", config, "--ctlsocket", paths["ctlsocket"]] + chunk
        retcode, stdout, stderr = _addconn(cmd)
        verdict = parse(stdout, stderr, chunk)
        if verdict["error"] or ("connect(" in stderr and not verdict["added"]):
            raise CommandExecutionError(
                "ipsec addconn: {}".format(verdict["error"] or stderr.strip()),
                info={"added": added, "rejected": rejected})
        added.extend(verdict["added"])
        rejected.update(verdict["rejected"])
        unknown.extend(verdict["unknown"])
        warnings.extend(verdict["warnings"])
    if unknown:
        # No reply seen for these (no terminal, or a release that prints
        # differently): ask pluto what it has.
        have = set(loaded())
        for name in unknown:
            if name in have:
                added.append(name)
            else:
                rejected[name] = "not loaded by pluto (addconn exit {}, no message)".format(retcode)
    for warning in warnings:
        log.info("ipsec addconn: %s", warning)
    order = {name: index for index, name in enumerate(names)}
    added.sort(key=order.get)
    if rejected:
        listed = "; ".join("{}: {}".format(name, rejected[name]) for name in sorted(rejected, key=order.get))
        raise CommandExecutionError(
            "pluto rejected {} of {} conns: {}".format(len(rejected), len(names), listed),
            info={"added": added, "rejected": rejected})
    return {"added": added, "warnings": warnings}


# Whack's reply code for a conn name pluto does not have; 5.x answers a
# --delete of such a name with it (4.x: silence, exit 0).
RC_UNKNOWN_NAME = 21


# How long one ``whack --initiate --asynchronous`` may stay attached. 4.10's
# whack stays on a Child SA negotiated over an existing IKE SA until it
# settles; when both ends replace a conn at once that can outlast the
# peer's retransmits (seen under load: over 60 s). Pluto has the request
# by then and keeps negotiating, so waiting longer tells nothing.
INITIATE_TIMEOUT = 15
_TIMED_OUT = re.compile(r"^Timed out after \d+ seconds")


def _each(names, args, verb, unanswered_ok=False, absent_ok=False, timeout=WHACK_TIMEOUT):
    """Run ``whack --name N ARGS`` for each name; raise naming the failures
    (``unanswered_ok``: a negotiation the peer has not answered, or whack
    still attached to it after ``timeout``, is logged, not a failure;
    ``absent_ok``: a name pluto does not have is done)."""
    names = _names(names)
    paths = _lookup()
    utils = __utils__
    done, failed = [], {}
    for name in names:
        retcode, stdout = _whack(paths, ["--name", name] + list(args), replies=True, timeout=timeout)
        if absent_ok and retcode == RC_UNKNOWN_NAME:
            retcode, stdout = 0, ""
        if unanswered_ok and retcode and _TIMED_OUT.match(stdout):
            log.info("ipsec_pluto.%s %s: whack still attached after %ss (pluto keeps negotiating)",
                     verb, name, timeout)
            done.append(name)
            continue
        errors = utils["ipsec_status.whack_errors"](stdout, unanswered_ok, retcode)
        if unanswered_ok and not errors:
            for line in utils["ipsec_status.whack_errors"](stdout, retcode=retcode):
                log.info("ipsec_pluto.%s %s: %s (pluto keeps trying)", verb, name, line)
        if errors:
            failed[name] = "; ".join(errors)
        else:
            done.append(name)
    if failed:
        raise CommandExecutionError(
            "{} failed for {} conns: {}".format(
                verb, len(failed), "; ".join("{}: {}".format(n, m) for n, m in failed.items())),
            info={"done": done, "failed": failed})
    return done


def delete(names):
    """
    Delete conns from the running pluto (``ipsec whack --name N --delete``,
    one call per conn: whack takes one name), with their SAs; the peers are
    told. A name pluto does not have is not an error. Other conns and
    their SAs are not touched.

    Returns ``{"deleted": [names]}``.

    CLI Example:

    .. code-block:: bash

        salt '*' ipsec_pluto.delete '["overcloud-storage-203.0.113.10-203.0.113.11"]'
    """
    return {"deleted": _each(names, ["--delete"], "delete", absent_ok=True)}


def initiate(names):
    """
    Start negotiating conns without waiting for the peers
    (``ipsec whack --name N --initiate --asynchronous``, one call per conn,
    ~10 ms each): a peer that does not answer does not block. Raises naming
    the conns pluto refuses to initiate (unknown, neither end local, ...).
    A negotiation the peer does not answer in time is not a failure (whack
    can stay attached to a Child SA negotiated over an existing IKE SA; it
    is let go after INITIATE_TIMEOUT seconds):
    pluto keeps the conn and retries; ``ipsec.verify`` tells when it is up.

    Returns ``{"initiated": [names]}``.

    CLI Example:

    .. code-block:: bash

        salt '*' ipsec_pluto.initiate '["overcloud-storage-203.0.113.10-203.0.113.11"]'
    """
    return {"initiated": _each(names, ["--initiate", "--asynchronous"], "initiate", unanswered_ok=True,
                               timeout=INITIATE_TIMEOUT)}


def route(names):
    """
    Install the trap policies of ``auto=route``/``auto=ondemand`` conns
    (``ipsec whack --name N --route``), as pluto does for them at start-up.

    Returns ``{"routed": [names]}``.

    CLI Example:

    .. code-block:: bash

        salt '*' ipsec_pluto.route '["overcloud-storage-203.0.113.10-203.0.113.11"]'
    """
    return {"routed": _each(names, ["--route"], "route")}


def listen():
    """
    Make pluto scan this node's addresses again (``ipsec whack --listen``):
    it stops listening on addresses that are gone (conns oriented to them
    become unoriented and their SAs are deleted) and listens on new ones.

    Returns ``{"listened": True}``.

    CLI Example:

    .. code-block:: bash

        salt '*' ipsec_pluto.listen
    """
    _whack(_lookup(), ["--listen"], quiet=True)
    return {"listened": True}


def rereadsecrets():
    """
    Make pluto forget its secrets and load them again from its secrets file
    (``ipsec whack --rereadsecrets``; established SAs are not touched).
    Pluto's output is never logged: on a malformed line it quotes the
    secret. Raises naming file and line (never the text) of each line pluto
    could not read.

    Returns ``{"files": [secrets files pluto read]}``.

    CLI Example:

    .. code-block:: bash

        salt '*' ipsec_pluto.rereadsecrets
    """
    stdout = _whack(_lookup(), ["--rereadsecrets"], quiet=True)
    files, problems = __utils__["ipsec_status.secrets_report"](stdout)
    if problems:
        raise CommandExecutionError("pluto could not read some secrets: {}".format("; ".join(problems)),
                                    info={"files": files, "problems": problems})
    return {"files": files}


def whack(args):
    """
    stdout of ``ipsec whack --ctlsocket <lookup ctlsocket> ARGS`` (a unix
    socket path works across network namespaces). Raises
    ``CommandExecutionError`` naming the socket when pluto does not answer.
    For read-only queries (``--status``, ``--trafficstatus``,
    ``--listpubkeys``...); the formula's changes go through the functions
    of this module.

    CLI Example:

    .. code-block:: bash

        salt '*' ipsec_pluto.whack '["--status"]'
    """
    if isinstance(args, str):
        args = args.split()
    if not isinstance(args, (list, tuple)) or not all(isinstance(a, str) and a.startswith("--") for a in args):
        raise SaltInvocationError("args must be a list of whack options (--status, ...)")
    return _whack(_lookup(), list(args), quiet=True)


def version():
    """
    The installed Libreswan, from ``ipsec --version`` of the lookup's
    ``ipsec_bin``: ``{"version": "4.10", "major": 4, "source": <binary>}``,
    ``None`` values when it is not installed (cached once known: the
    package may be installed later in the same run).

    CLI Example:

    .. code-block:: bash

        salt '*' ipsec_pluto.version
    """
    if "ipsec_pluto.version" in __context__:
        return __context__["ipsec_pluto.version"]
    paths = _lookup()
    try:
        binary = _binary(paths)
    except CommandExecutionError:
        return {"version": None, "major": None, "source": "not installed"}
    stdout = _run([binary, "--version"], quiet=True).get("stdout") or ""
    parsed = __utils__["ipsec_status.parse_version"](stdout)
    if not parsed:
        return {"version": None, "major": None, "source": "unrecognised: " + stdout[:80]}
    found = {"version": "{}.{}".format(*parsed), "major": parsed[0], "source": binary}
    __context__["ipsec_pluto.version"] = found
    return found


def algparse(kind, proposal):
    """
    Libreswan's own verdict on a proposal: ``""`` when it accepts
    ``<kind>=<proposal>`` (kind ``esp``, ``ike`` or ``ah``), its message
    when it does not, ``None`` when algparse is not installed: the lookup's
    ``algparse`` program, ``-v2``, on every release (5.x's ``ipsec algparse``
    only execs that same ``<libexecdir>/algparse``, which takes ``-v2`` in
    4.x and 5.x alike: measured with 4.10 and 5.3.2; and the lookup can say
    that a node has none).

    CLI Example:

    .. code-block:: bash

        salt '*' ipsec_pluto.algparse esp aes_gcm256-null
    """
    if kind not in ("esp", "ike", "ah") or not isinstance(proposal, str) or proposal.startswith("-"):
        raise SaltInvocationError("algparse: kind must be esp, ike or ah and proposal a proposal string")
    key = "ipsec_pluto.algparse:{}={}".format(kind, proposal)
    if key in __context__:
        return __context__[key]
    paths = _lookup()
    if not os.path.exists(paths["algparse"]):
        return None
    cmd = [paths["algparse"], "-v2"]
    result = _run(cmd + ["{}={}".format(kind, proposal)], quiet=True)
    verdict = ""
    if result["retcode"] != 0:
        lines = ((result.get("stdout") or "") + "\n" + (result.get("stderr") or "")).splitlines()
        errors = [line.split("ERROR:", 1)[1].strip() for line in lines if "ERROR:" in line]
        verdict = errors[0] if errors else "rejected (exit {})".format(result["retcode"])
    __context__[key] = verdict
    return verdict


def initnss(test=False):
    """
    Create pluto's NSS database in the lookup's ``nss_dir`` when it has
    none (``ipsec initnss --nssdir <nss_dir>``, an argument list: the path
    never meets a shell). Returns ``{"created": bool, "nss_dir": path}``;
    ``test=True`` only says whether it would be created.

    CLI Example:

    .. code-block:: bash

        salt '*' ipsec_pluto.initnss
    """
    paths = _lookup()
    nss_dir = paths["nss_dir"]
    if os.path.exists(os.path.join(nss_dir, "cert9.db")):
        return {"created": False, "nss_dir": nss_dir}
    if test:
        return {"created": True, "nss_dir": nss_dir}
    os.makedirs(nss_dir, mode=0o700, exist_ok=True)
    result = _run([_binary(paths), "initnss", "--nssdir", nss_dir], timeout=ADDCONN_TIMEOUT)
    if result["retcode"] != 0:
        raise CommandExecutionError("ipsec initnss --nssdir {} failed: {}".format(nss_dir, _message(result)))
    return {"created": True, "nss_dir": nss_dir}


def _conf_texts(conf_texts):
    """[(label, text)] from a text, a list of texts or {path: text}."""
    if isinstance(conf_texts, str):
        return [("conf-1.conf", conf_texts)]
    if isinstance(conf_texts, dict):
        return [(path, text) for path, text in conf_texts.items()
                if text is not None and not str(path).endswith(".secrets")]
    if isinstance(conf_texts, (list, tuple)):
        return [("conf-{}.conf".format(index), text) for index, text in enumerate(conf_texts, 1)]
    raise SaltInvocationError("conf_texts must be a text, a list of texts or a mapping of path to text")


def checkconfig(conf_texts, algorithms=True, config_setup=None):
    """
    Check rendered conn files before they replace the live ones, without
    pluto and without secrets: ``ipsec addconn --checkconfig`` on a
    temporary config that includes only these texts (syntax, keywords and
    their values), conn names defined more than once, and (``algorithms``)
    every distinct ``ike=``/``esp=``/``phase2alg=``/``ah=`` value through
    Libreswan's algparse (``--checkconfig`` does not check proposals).

    conf_texts
        A conf text, a list of texts, or ``{path: text}`` (``.secrets``
        paths are skipped).
    config_setup
        ``{keyword: value}`` of ``config setup`` to check with them (the
        formula's part of ipsec.conf), so the whole new set is checked.

    Returns the list of problems, empty when all is well; messages name the
    given paths, not the temporary ones.

    CLI Example:

    .. code-block:: bash

        salt '*' ipsec_pluto.checkconfig "$(cat /etc/ipsec.d/overcloud-storage-node-to-node-tunnels.conf)"
    """
    texts = _conf_texts(conf_texts)
    for label, text in texts:
        if not isinstance(text, str):
            raise SaltInvocationError("{}: text must be a string".format(label))
    paths = _lookup()
    binary = _binary(paths)
    utils = __utils__
    problems = []

    where = {}
    for label, text in texts:
        for name in utils["ipsec_reconcile.conf_names"](text):
            where.setdefault(name, []).append(label)
    for name, labels in sorted(where.items()):
        if len(labels) > 1:
            problems.append("conn {} is defined {} times ({})".format(name, len(labels), ", ".join(labels)))

    workdir = tempfile.mkdtemp(prefix="ipsec-formula-check-")
    try:
        confdir = os.path.join(workdir, "d")
        os.mkdir(confdir)
        renames = {}
        for index, (label, text) in enumerate(texts):
            tmp = os.path.join(confdir, "{:04d}-{}.conf".format(index, re.sub(r"[^A-Za-z0-9_.-]", "_",
                                                                             os.path.basename(label))))
            with open(tmp, "w", encoding="utf-8") as handle:
                handle.write(text)
            renames[tmp] = label
        main = os.path.join(workdir, "ipsec.conf")
        with open(main, "w", encoding="utf-8") as handle:
            handle.write(__utils__["ipsec_files.edit_conf"](None, config_setup or {}, confdir))
        result = _run([binary, "addconn", "--config", main, "--checkconfig"], timeout=ADDCONN_TIMEOUT)
        output = "\n".join(part for part in (result.get("stdout"), result.get("stderr")) if part)
        for tmp, label in sorted(renames.items(), key=lambda item: -len(item[0])):
            output = output.replace(tmp, label)
        output = output.replace(main, "<check config>")
        lines = [line.strip() for line in output.splitlines() if line.strip()]
        for line in lines:
            # 5.x only warns about a bad value ("warning: invalid, keyword
            # ignored: auto=sometimes", exit 0) and drops the keyword: a problem.
            if re.search(r"\bwarning\b", line, re.I) and "invalid, keyword ignored" not in line:
                log.warning("ipsec addconn --checkconfig: %s", line)
            elif line not in problems:
                problems.append(line)
        if result["retcode"] != 0 and not lines:
            problems.append("ipsec addconn --checkconfig failed (exit {})".format(result["retcode"]))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    if algorithms:
        users = {}
        for label, text in texts:
            for name, keywords in utils["ipsec_reconcile.parse_conf"](text).items():
                for keyword in PROPOSAL_KEYWORDS:
                    if keywords.get(keyword):
                        users.setdefault((keyword, keywords[keyword]), []).append(name)
        for (keyword, proposal), conns in sorted(users.items()):
            kind = "esp" if keyword == "phase2alg" else keyword
            verdict = algparse(kind, proposal)
            if verdict is None:
                log.warning("ipsec_pluto.checkconfig: algparse not found: %s=%s not checked", keyword, proposal)
                continue
            if verdict:
                more = " and {} more".format(len(conns) - 1) if len(conns) > 1 else ""
                problems.append("conn {}{}: {}={}: {}".format(conns[0], more, keyword, proposal, verdict))
    return problems
