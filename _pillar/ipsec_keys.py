"""
Per-tunnel IPsec keys, derived on the master (ipsec-formula).

With pillar ``ipsec:keys:mode: derived`` this ext_pillar gives each minion,
under ``ipsec:keys:issued``, the keys of the tunnels it is an end of and no
other: it builds the minion's own plan (same pillar, same peers: the
inventory ``ipsec:nodes`` or the master's mine cache) and derives each
tunnel's key from one master secret (``_utils/ipsec_keys.py``). The master
secret never leaves the master; keys are never logged.

Master configuration (then ``salt-run saltutil.sync_all``):

.. code-block:: yaml

    ext_pillar:
      - ipsec_keys:
          # a file only the master's user can read (mode 0600 or 0400),
          # holding at least 32 random bytes, e.g.
          # (umask 077; head -c 48 /dev/urandom | base64 > /etc/salt/ipsec-keys.secret)
          secret_file: /etc/salt/ipsec-keys.secret
          # or: the secret encrypted to the master's gpg key (as for the gpg
          # renderer), decrypted on the master only
          # secret_gpg: |
          #   -----BEGIN PGP MESSAGE-----
          #   ...
          # gpg_keydir: /etc/salt/gpgkeys   (default: the master's gpg_keydir)

A problem (no secret, unreadable file, bad pillar) is given to the minion as
``ipsec:keys:issued:error`` (never with secret material), so its run fails
naming it before anything is written.
"""

import logging
import os
import stat
import subprocess

import salt.daemons.masterapi
import salt.utils.data
from salt.exceptions import SaltInvocationError

log = logging.getLogger(__name__)

__virtualname__ = "ipsec_keys"

# Planning only needs topology: the Libreswan version and paths do not
# change which tunnels a node has.
PLAN_MAJOR = 4
# As _utils/ipsec_keys.py (the loader exposes its functions, not constants).
MIN_SECRET_BYTES = 32


def __virtual__():
    return __virtualname__


class SecretError(Exception):
    """Why the master secret is unusable (never holds the secret)."""


def _secret_from_file(path):
    try:
        info = os.stat(path)
    except OSError as exc:
        raise SecretError("secret_file {}: {}".format(path, exc.strerror))
    if stat.S_IMODE(info.st_mode) & 0o077 or info.st_uid != os.geteuid():
        raise SecretError("secret_file {} must belong to the master's user and be readable by it only "
                          "(mode 0600 or 0400), it is {:04o} uid {}".format(
                              path, stat.S_IMODE(info.st_mode), info.st_uid))
    with open(path, "rb") as handle:
        return handle.read().strip()


def _secret_from_gpg(ciphertext, keydir):
    cmd = ["gpg", "--homedir", keydir, "--batch", "--quiet", "--no-tty", "--decrypt"]
    try:
        result = subprocess.run(cmd, input=ciphertext.encode("ascii"), capture_output=True, timeout=60,
                                check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SecretError("secret_gpg: cannot run gpg: {}".format(exc))
    if result.returncode != 0:
        # gpg's stderr names keys and errors, never the plaintext.
        raise SecretError("secret_gpg: gpg could not decrypt it (exit {}): {}".format(
            result.returncode, result.stderr.decode("utf-8", "replace").strip()[:300]))
    return result.stdout.strip()


def _master_secret(secret_file, secret_gpg, gpg_keydir):
    if (secret_file is None) == (secret_gpg is None):
        raise SecretError("configure exactly one of secret_file or secret_gpg")
    if secret_file is not None:
        secret = _secret_from_file(secret_file)
    else:
        keydir = gpg_keydir or __opts__.get("gpg_keydir") or "/etc/salt/gpgkeys"
        secret = _secret_from_gpg(secret_gpg, keydir)
    if len(secret) < MIN_SECRET_BYTES:
        raise SecretError("the master secret is too short (at least {} bytes)".format(MIN_SECRET_BYTES))
    return secret


def _mine_data(conf, minion_id):
    """What ``mine.get`` answers the minion (the plan's own peer source)."""
    mine = conf.get("mine") or {}
    load = {
        "id": minion_id,
        "tgt": mine.get("target", "*"),
        "fun": mine.get("function", "ipsec.addresses"),
        "tgt_type": mine.get("tgt_type", "glob"),
    }
    return salt.daemons.masterapi.RemoteFuncs(__opts__)._mine_get(load, skip_verify=True)


def _cluster_node(conf, minion_id):
    mode, value = __utils__["ipsec_plan.parse_cluster"](conf)
    if mode == "nodes":
        return minion_id in value
    if mode == "grain":
        return salt.utils.data.subdict_match(__opts__.get("grains") or {}, value)
    if mode == "detect":
        raise SaltInvocationError("ipsec:cluster: derived keys need ipsec:cluster:nodes or ipsec:cluster:grain "
                                  "(the master cannot see which nodes run pacemaker)")
    return False


def _own_ips(conf, minion_id, mine_data):
    if conf.get("nodes") is not None:
        entry = (conf.get("nodes") or {}).get(minion_id) or {}
        return list(((entry if isinstance(entry, dict) else {}).get("addresses") or {}).values())
    return list(((mine_data or {}).get(minion_id) or {}).values())


def _issued(conf, minion_id, secret, version):
    mine_data = None if conf.get("nodes") is not None else _mine_data(conf, minion_id)
    plan = __utils__["ipsec_plan.build_plan"](
        conf, minion_id, _own_ips(conf, minion_id, mine_data), major=PLAN_MAJOR,
        cluster_node=_cluster_node(conf, minion_id), mine_data=mine_data, require_psk=False)
    return __utils__["ipsec_keys.issue"](plan, secret, version)


def ext_pillar(minion_id, pillar, secret_file=None, secret_gpg=None, gpg_keydir=None):
    """
    ``ipsec:keys:issued`` for ``minion_id`` when its pillar has
    ``ipsec:keys:mode: derived``; nothing otherwise.
    """
    conf = pillar.get("ipsec") if isinstance(pillar, dict) else None
    if not isinstance(conf, dict):
        return {}
    try:
        settings = __utils__["ipsec_keys.parse_keys"](conf)
    except SaltInvocationError:
        # The minion's own plan reports the pillar error.
        return {}
    if settings["mode"] != "derived":
        return {}
    try:
        secret = _master_secret(secret_file, secret_gpg, gpg_keydir)
        issued = _issued(conf, minion_id, secret, settings["version"])
    except (SecretError, SaltInvocationError) as exc:
        log.error("ipsec_keys: no keys for %s: %s", minion_id, exc)
        issued = {"version": settings["version"], "error": str(exc)}
    return {"ipsec": {"keys": {"issued": issued}}}
