"""
Key rotation checks of ipsec-formula (per-tunnel keys or the shared PSK).

``ipsec_keys.check`` tells whether this node is ready for, or done with, a
rotation to a key version: the pillar's ``ipsec:keys:version``, and whether
the formula's files on disk are what the pillar renders. File contents are
compared here and never returned. The orchestration
``ipsec/orch/rotate.sls`` runs it before and after writing the new secrets.
"""

from salt.exceptions import CommandExecutionError, SaltInvocationError

__virtualname__ = "ipsec_keys"


def __virtual__():
    if "ipsec.build" in __salt__:
        return __virtualname__
    return (False, "the ipsec execution module is not loaded (run saltutil.sync_all)")


def _on_disk(path):
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def check(version=None, applied=False):
    """
    The key mode and version of this node's pillar and which of the
    formula's files differ from what it renders (names only, never content).

    version
        Fail unless the pillar's ``ipsec:keys:version`` is this one (a
        rotation's first gate: every node must see the new version before
        any node writes it).
    applied
        ``False`` (before a rotation): fail if a ``.conf`` file differs, so
        the rotation can only change secrets (no conn is replaced).
        ``True`` (after): fail if any file, secrets included, differs.

    CLI Example:

    .. code-block:: bash

        salt '*' ipsec_keys.check
        salt '*' ipsec_keys.check version=2 applied=True
    """
    settings = __salt__["ipsec.settings"]()["keys"]
    if version is not None:
        try:
            wanted = int(version)
        except (TypeError, ValueError):
            raise SaltInvocationError("ipsec_keys.check: version must be an integer, got {!r}".format(version))
        if settings["version"] != wanted:
            raise CommandExecutionError("ipsec:keys:version is {} on this node, not {}: update the pillar "
                                        "(and saltutil.refresh_pillar) first".format(settings["version"], wanted))
    plan = __salt__["ipsec.build"](check_algorithms=False)
    # The keys go from pillar straight to the secrets renderer, as in
    # ipsec_tunnels (compared here, never returned).
    keys = __utils__["ipsec_keys.secret_source"](__pillar__["ipsec"])
    texts = __utils__["ipsec_render.render_files"](plan, keys)
    differ = sorted(path for path, text in texts.items() if _on_disk(path) != text)
    conf_differ = [path for path in differ if not path.endswith(".secrets")]
    result = {
        "mode": settings["mode"],
        "version": settings["version"],
        "files": len(texts),
        "differ": differ,
    }
    if conf_differ and not applied:
        raise CommandExecutionError("connection files differ from the plan ({}): apply the `ipsec` state "
                                    "first; a rotation changes secrets only".format(", ".join(conf_differ)))
    if differ and applied:
        raise CommandExecutionError("files not as the pillar renders them: {}".format(", ".join(differ)))
    return result
