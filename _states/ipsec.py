"""
States of ipsec-formula. They only call the execution modules and report:
the work is done by ``ipsec_tunnels.reconcile`` / ``ipsec_tunnels.remove``
(files and the running pluto, one transaction), ``ipsec_pluto`` (Libreswan
commands) and ``ipsec.verify``, all callable with ``salt-call`` too.
"""

import logging
import time

from salt.exceptions import CommandExecutionError, SaltInvocationError

log = logging.getLogger(__name__)

__virtualname__ = "ipsec"

RESTART_FLAG = "ipsec.config_setup_changed"


def __virtual__():
    if "ipsec_tunnels.reconcile" in __salt__:
        return __virtualname__
    return (False, "the ipsec execution modules are not loaded (run saltutil.sync_all)")


def _call(name, function, **kwargs):
    """A state return from an execution function returning
    ``{"result", "changes", "comment"}``."""
    ret = {"name": name, "changes": {}, "result": True, "comment": ""}
    try:
        done = __salt__[function](**kwargs)
    except (SaltInvocationError, CommandExecutionError) as exc:
        ret.update(result=False, comment=str(exc))
        return ret, {}
    ret.update(result=done["result"], changes=done["changes"], comment=done["comment"])
    return ret, done


def tunnels_managed(name, live=True, **kwargs):
    """
    Make the node's tunnel configuration what the plan says, in one
    transaction (``ipsec_tunnels.reconcile``): the formula's tunnel files,
    its part of ipsec.conf and ipsec.secrets, its manifest, then the
    running pluto conn by conn, without restarting it. The complete new
    configuration is checked first (also under ``test=True``, which thus
    predicts failures as well as changes); a failure at any later step
    leaves every file as it was and pluto with the conns it had.

    name
        Any ID; everything comes from the plan.
    live
        ``False``: files only (pluto is not asked nor changed).

    .. code-block:: yaml

        ipsec-tunnel-files-managed:
          ipsec.tunnels_managed
    """
    ret, done = _call(name, "ipsec_tunnels.reconcile", test=bool(__opts__["test"]), live=bool(live))
    if done.get("restart"):
        __context__[RESTART_FLAG] = True
    return ret


def files_managed(name, **kwargs):
    """
    ``ipsec.tunnels_managed`` with ``live: false``: the files only.

    .. code-block:: yaml

        ipsec-tunnel-files:
          ipsec.files_managed
    """
    return tunnels_managed(name, live=False)


def config_setup_applied(name):
    """
    Reports a change when ``ipsec.tunnels_managed`` changed (or, under
    ``test=True``, would change) ``config setup`` in ipsec.conf earlier in
    this run: the service state watches it, so pluto restarts only for
    that, never for tunnel changes (which reach the running pluto live).

    .. code-block:: yaml

        ipsec-config-setup-applied:
          ipsec.config_setup_applied:
            - require:
              - ipsec-tunnel-files-managed
    """
    ret = {"name": name, "changes": {}, "result": True, "comment": "config setup unchanged"}
    if __context__.get(RESTART_FLAG):
        ret["changes"] = {"config setup": "changed: pluto must restart"}
        ret["comment"] = "config setup changed"
        if __opts__["test"]:
            ret["result"] = None
    return ret


def nss_initialised(name):
    """
    Create pluto's NSS database in the lookup's ``nss_dir`` when it has none
    (``ipsec initnss``, run as an argument list).

    .. code-block:: yaml

        ipsec-nss-db-initialised:
          ipsec.nss_initialised
    """
    ret = {"name": name, "changes": {}, "result": True, "comment": ""}
    try:
        done = __salt__["ipsec_pluto.initnss"](test=bool(__opts__["test"]))
    except (SaltInvocationError, CommandExecutionError) as exc:
        ret.update(result=False, comment=str(exc))
        return ret
    if done["created"]:
        ret["changes"] = {"created": done["nss_dir"]}
        ret["result"] = None if __opts__["test"] else True
        ret["comment"] = "NSS database {} {}".format(done["nss_dir"], "would be created" if __opts__["test"] else "created")
    else:
        ret["comment"] = "NSS database {} exists".format(done["nss_dir"])
    return ret


def absent(name):
    """
    Remove what the formula wrote, and nothing else
    (``ipsec_tunnels.remove``): its conns from pluto, its tunnel files and
    manifest, its lines in ipsec.conf and ipsec.secrets.

    .. code-block:: yaml

        ipsec-clean-tunnels-absent:
          ipsec.absent
    """
    ret, _ = _call(name, "ipsec_tunnels.remove", test=bool(__opts__["test"]))
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
        ``child`` (default: IKE SA and Child SA established), ``ike``
        (an established IKE SA is enough: kernels without ESP) or
        ``traffic`` (the Child level, and every such tunnel carries an
        ICMP echo probe both ways: see ``ipsec.verify``; each check is one
        probe round of up to 5 s). Named ``level`` because ``require`` is
        a Salt requisite.

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
        if level not in ("ike", "child", "traffic"):
            raise SaltInvocationError("level must be 'ike', 'child' or 'traffic', got {!r}".format(level))
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
