"""Salt minion settings that run the formula straight from this checkout.

``minion_overrides`` is shared by the tests (given to pytest-salt-factories)
and the demo (written as a minion config file): the formula's modules,
states and utils load from the repository, ``salt://ipsec`` is the
repository's ``ipsec/`` (through ``.state-root/``), and pillar comes from a
directory the caller fills.
"""

import os

import yaml

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# salt:// for masterless minions: a root holding only the formula's tree.
# The file server lists its whole root at every state run; the checkout's
# root also holds three virtualenvs (85 000 files), which took the VM's
# salt-calls (emulated CPU, files over 9p) 15 minutes to list.
STATE_ROOT = os.path.join(REPO, ".state-root")
STATE_ROOT_LINKS = ("ipsec", "_modules", "_states", "_utils")


def state_root():
    """STATE_ROOT, with relative symlinks to the formula's directories."""
    os.makedirs(STATE_ROOT, exist_ok=True)
    for name in STATE_ROOT_LINKS:
        link = os.path.join(STATE_ROOT, name)
        if not os.path.islink(link):
            try:
                os.symlink(os.path.join("..", name), link)
            except FileExistsError:  # another test process made it
                pass
    return STATE_ROOT


def minion_overrides(pillar_dir, grains=None):
    overrides = {
        "file_client": "local",
        "file_roots": {"base": [state_root()]},
        "pillar_roots": {"base": [str(pillar_dir)]},
        "module_dirs": [os.path.join(REPO, "_modules")],
        "states_dirs": [os.path.join(REPO, "_states")],
        "utils_dirs": [os.path.join(REPO, "_utils")],
        # One process, no multiprocessing noise in tests.
        "multiprocessing": False,
    }
    if grains:
        overrides["grains"] = grains
    return overrides


def write_minion_config(config_dir, node_id, pillar_dir, grains=None, **extra):
    """A masterless minion's config, CONFIG_DIR/minion, for ``salt-call
    --local -c CONFIG_DIR`` (the demo's VM phase, the salt bench)."""
    config = minion_overrides(pillar_dir, grains)
    config.update(extra, id=node_id)
    os.makedirs(str(config_dir), exist_ok=True)
    with open(os.path.join(str(config_dir), "minion"), "w") as handle:
        yaml.safe_dump(config, handle)
    return str(config_dir)


def write_pillar(pillar_dir, ipsec, extra=None):
    """Write top.sls + ipsec.sls so every minion gets ``ipsec`` (and ``extra``)."""
    os.makedirs(str(pillar_dir), exist_ok=True)
    data = {"ipsec": ipsec}
    data.update(extra or {})
    with open(os.path.join(str(pillar_dir), "top.sls"), "w") as handle:
        yaml.safe_dump({"base": {"*": ["ipsec"]}}, handle)
    with open(os.path.join(str(pillar_dir), "ipsec.sls"), "w") as handle:
        # Plain YAML, no Jinja pass: Salt logs Jinja-rendered pillar text at
        # debug level, which would put the PSK in the log (see README).
        handle.write("#!yaml\n")
        yaml.safe_dump(data, handle, default_flow_style=False)


def node_grains(addresses):
    """Static grains giving a test node exactly these addresses."""
    return {
        "ipv4": [a for a in addresses if ":" not in a],
        "ipv6": [a for a in addresses if ":" in a],
    }


def parse_cli_json(text):
    """``salt --out=json`` output without --static (one JSON document per
    minion; with --static, salt 3008 exits 0 even when a minion returns a
    non-zero retcode) merged into {minion: return}; None when unreadable."""
    import json

    data, text, decoder = {}, text.strip(), json.JSONDecoder()
    try:
        while text:
            part, end = decoder.raw_decode(text)
            data.update(part)
            text = text[end:].lstrip()
    except (ValueError, TypeError, AttributeError):
        return None
    return data


def call_in_netns(cli, netns_name, *args):
    """Run a pytest-salt-factories salt-call CLI inside a namespace, so what
    the formula does to the network (firewall) stays there.

    Returns (returncode, parsed "local" data or None, stdout + stderr).
    """
    import json
    import subprocess

    cmd = ["ip", "netns", "exec", netns_name] + cli.cmdline("--local", *args)
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    try:
        data = json.loads(result.stdout)["local"]
    except (ValueError, KeyError, TypeError):
        data = None
    return result.returncode, data, result.stdout + result.stderr
