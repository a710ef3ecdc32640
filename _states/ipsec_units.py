"""
States for the services ipsec-formula turns on at boot, and gives back.

``enabled`` enables a service at boot like ``service.enabled``, and when the
formula is the one that enables it (it was disabled), it records so in
``<config_dir>/.ipsec-formula-units.json``. ``restored`` (``ipsec.clean``)
disables exactly the recorded services again, stops the ones it is asked
to, and removes the record: after a clean and a reboot, no unit of the
node is in a state the formula put it in. A service the operator had
enabled before the formula is never recorded, so never disabled.
"""

from salt.exceptions import CommandExecutionError, SaltInvocationError

__virtualname__ = "ipsec_units"


def __virtual__():
    return __virtualname__


def _record(config_dir):
    return __utils__["ipsec_files.units_record_path"](config_dir)


def _write_record(config_dir, names):
    """Write (or, for no names, remove) the record in one rename."""
    files = __utils__["ipsec_files.transaction"]()
    path = _record(config_dir)
    try:
        if names:
            files.stage(path, __utils__["ipsec_files.units_record_text"](names), "0644")
        else:
            files.remove(path)
        files.apply()
    except OSError as exc:
        files.rollback()
        raise CommandExecutionError("cannot write {}: {}".format(path, exc)) from exc
    files.commit()


def enabled(name, config_dir):
    """
    Enable service ``name`` at boot; when it was disabled, record that the
    formula enabled it (``ipsec.clean`` disables it again).

    .. code-block:: yaml

        ipsec-service-enabled:
          ipsec_units.enabled:
            - name: ipsec
            - config_dir: /etc/ipsec.d
    """
    ret = {"name": name, "changes": {}, "result": True, "comment": ""}
    if not config_dir:
        raise SaltInvocationError("ipsec_units.enabled needs config_dir")
    try:
        if __salt__["service.enabled"](name):
            ret["comment"] = "service {} is enabled".format(name)
            return ret
        recorded = __utils__["ipsec_files.load_units_record"](config_dir)
        ret["changes"] = {"enabled": name, "recorded": _record(config_dir)}
        if __opts__["test"]:
            ret.update(result=None, comment="service {} would be enabled".format(name))
            return ret
        if not __salt__["service.enable"](name):
            raise CommandExecutionError("systemd did not enable {}".format(name))
        _write_record(config_dir, recorded + [name])
        ret["comment"] = "service {} enabled (ipsec.clean disables it again)".format(name)
    except (SaltInvocationError, CommandExecutionError) as exc:
        ret.update(result=False, changes={}, comment=str(exc))
    return ret


def restored(name, config_dir, stop=()):
    """
    Disable every service the formula enabled (its record), also stop those
    named in ``stop``, and remove the record. Services the formula did not
    enable are left as they are.

    .. code-block:: yaml

        ipsec-clean-units-restored:
          ipsec_units.restored:
            - config_dir: /etc/ipsec.d
            - stop: [ipsec]
    """
    ret = {"name": name, "changes": {}, "result": True, "comment": ""}
    try:
        recorded = __utils__["ipsec_files.load_units_record"](config_dir)
        if not recorded:
            ret["comment"] = "no service enabled by the formula"
            return ret
        disable = [unit for unit in recorded if __salt__["service.enabled"](unit)]
        halt = [unit for unit in recorded if unit in stop and __salt__["service.status"](unit)]
        changes = {"disabled": disable, "record_removed": _record(config_dir)}
        if halt:
            changes["stopped"] = halt
        if __opts__["test"]:
            ret.update(result=None, changes=changes,
                       comment="the services the formula enabled would be disabled again")
            return ret
        for unit in halt:
            if not __salt__["service.stop"](unit):
                raise CommandExecutionError("systemd did not stop {}".format(unit))
        for unit in disable:
            if not __salt__["service.disable"](unit):
                raise CommandExecutionError("systemd did not disable {}".format(unit))
        _write_record(config_dir, [])
        ret.update(changes=changes, comment="the services the formula enabled are disabled again")
    except (SaltInvocationError, CommandExecutionError) as exc:
        ret.update(result=False, comment=str(exc))
    return ret
