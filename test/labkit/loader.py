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
