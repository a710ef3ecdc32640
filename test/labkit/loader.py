"""The formula's execution modules loaded in-process by Salt's own loader.

``minion_modules(pillar, grains=..., opts=...)`` returns the loader's
``__salt__`` mapping (``mods["ipsec_pluto.add"](...)``) with the real
``cmd.run_all``, ``ipsec.lookup`` and the repository's ``_utils``: the code
path of ``salt-call --local`` without its ~2 s start-up per call, for tests
and benchmarks that call many functions. Pillar and grains are given
directly (nothing is compiled or detected).
"""

import copy
import os
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def minion_modules(pillar, grains=None, opts=None, node_id="labkit-node"):
    import salt.config  # pylint: disable=import-outside-toplevel
    import salt.loader  # pylint: disable=import-outside-toplevel

    base = dict(opts or {})
    root = base.pop("root_dir", None) or tempfile.mkdtemp(prefix="labkit-salt-")
    minion_opts = salt.config.minion_config(None)
    minion_opts.update({
        "id": node_id,
        "file_client": "local",
        "root_dir": root,
        "cachedir": os.path.join(root, "cache"),
        "pki_dir": os.path.join(root, "pki"),
        "module_dirs": [os.path.join(REPO, "_modules")],
        "utils_dirs": [os.path.join(REPO, "_utils")],
        "states_dirs": [os.path.join(REPO, "_states")],
        "grains": dict({"os_family": "Debian", "ipv4": [], "ipv6": []}, **(grains or {})),
        "pillar": copy.deepcopy(pillar),
        "multiprocessing": False,
    })
    minion_opts.update(base)
    utils = salt.loader.utils(minion_opts)
    return salt.loader.minion_mods(minion_opts, utils=utils)


def utils_functions():
    """Every public function of the repository's ``_utils`` modules, keyed
    as Salt's ``__utils__`` keys them (``"ipsec_plan.build_plan"``), for
    unit tests that give a module its dunders as plain dicts."""
    import importlib  # pylint: disable=import-outside-toplevel
    import inspect  # pylint: disable=import-outside-toplevel

    functions = {}
    for name in sorted(os.listdir(os.path.join(REPO, "_utils"))):
        if name.endswith(".py"):
            module = importlib.import_module(name[:-3])
            for attr, value in vars(module).items():
                if not attr.startswith("_") and (inspect.isfunction(value) or inspect.isclass(value)):
                    functions["{}.{}".format(name[:-3], attr)] = value
                elif attr.isupper():
                    functions["{}.{}".format(name[:-3], attr)] = value
    return functions


def load_file(kind, name, **dunders):
    """A fresh copy of ``<kind>/<name>.py`` (``_modules`` or ``_states``) with
    the given dunders (``__salt__=...``) set as they are, for unit tests of
    the Salt glue with Salt's other functions faked."""
    import importlib.util  # pylint: disable=import-outside-toplevel

    spec = importlib.util.spec_from_file_location(
        "{}_{}_under_test".format(name, kind.strip("_")), os.path.join(REPO, kind, name + ".py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for key, value in dunders.items():
        setattr(module, key, value)
    return module


def with_pluto(salt, utils, context):
    """Add the functions of ``_modules/ipsec_pluto.py`` (the Libreswan
    commands, run through ``salt["cmd.run_all"]``) to a fake ``__salt__``."""
    pluto = load_file("_modules", "ipsec_pluto", __salt__=salt, __utils__=utils, __context__=context)
    for name in ("version", "algparse", "whack", "running", "loaded", "checkconfig", "initnss"):
        salt["ipsec_pluto." + name] = getattr(pluto, name)
    return pluto
