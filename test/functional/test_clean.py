"""ipsec.clean removes everything the formula created and nothing else.

One node in its own namespace (so its firewall is its own), with the
operator's own ipsec.conf, ipsec.secrets, an unrelated conn file and an
unrelated nftables table already there; pacemaker on a file CIB. The
formula is applied, a real pluto loads the result, then ipsec.clean runs.
"""

import os
import stat

from labkit import pcmk, saltenv
from labkit.pcmknode import PacemakerNode

OPERATOR_CONF = "config setup\n\tlogfile=/var/log/pluto-site.log\n\ninclude {}/*.conf\n"
OPERATOR_SECRETS = '@site @partner : PSK "operator-own-secret-0123456789abcdef"\n'
SITE_CONN = "conn site\n\tleft=198.51.100.10\n\tright=198.51.100.99\n\tauthby=secret\n\tauto=add\n"
CIDRS = ["198.51.100.10/25", "198.51.100.130/25", "203.0.113.10/24", "2001:db8:0:1::10/64"]


def _read(path):
    with open(path) as handle:
        return handle.read()


def _states(data):
    return {v["__id__"]: v for v in data.values()}


def test_clean_removes_exactly_what_the_formula_created(salt_node, tmp_path, namespace_factory, pluto_factory):
    ns = namespace_factory("clean")
    ns.add_stub(CIDRS)
    node = PacemakerNode(salt_node, tmp_path)
    layout = node.layout
    operator_conf = OPERATOR_CONF.format(layout.config_dir)
    with open(layout.config_file, "w") as handle:
        handle.write(operator_conf)
    with open(layout.secrets_file, "w") as handle:
        handle.write(OPERATOR_SECRETS)
    os.chmod(layout.secrets_file, 0o600)
    with open(os.path.join(layout.config_dir, "site.conf"), "w") as handle:
        handle.write(SITE_CONN)
    ns.exec(["nft", "add", "table", "inet", "host_fw"])
    pillar = node.pillar()
    pillar["firewall"] = {"manage": True}
    node.set_pillar(pillar)
    cib_objects = pcmk.objects(node.cib)

    rc, data, output = saltenv.call_in_netns(node.cli, ns.name, "state.apply", "ipsec")
    assert rc == 0, output
    # The operator's ipsec.conf is kept: only the formula's marked lines are added.
    conf = _read(layout.config_file)
    assert "logfile=/var/log/pluto-site.log" in conf and "\tuniqueids=no\n" in conf
    assert conf.count("# BEGIN ipsec-formula") == 1  # the operator's include is enough
    assert not os.path.exists(layout.config_file + ".ipsec-formula-orig")
    assert _read(layout.secrets_file).startswith(OPERATOR_SECRETS)
    assert "include {}/*.secrets\n# END ipsec-formula\n".format(layout.config_dir) in _read(layout.secrets_file)
    assert ns.exec(["nft", "list", "table", "inet", "ipsec_formula"], check=False).returncode == 0
    assert os.path.exists(node.agent_path())
    assert set(pcmk.objects(node.cib)) > set(cib_objects)

    pluto = pluto_factory(layout.root, ns.name).start()
    loaded = pluto.connection_names()
    assert "site" in loaded and any(name.startswith("overcloud-") for name in loaded)

    rc, predicted, output = saltenv.call_in_netns(node.cli, ns.name, "state.apply", "ipsec.clean", "test=True")
    assert rc == 0, output
    predicted = {sid: st["changes"] for sid, st in _states(predicted).items() if st["changes"]}
    assert pluto.connection_names() == loaded, "test=True deleted conns"

    rc, data, output = saltenv.call_in_netns(node.cli, ns.name, "state.apply", "ipsec.clean")
    assert rc == 0, output
    assert {sid: st["changes"] for sid, st in _states(data).items() if st["changes"]} == predicted

    assert pluto.connection_names() == {"site"}
    assert sorted(os.listdir(layout.config_dir)) == ["site.conf"]
    assert _read(os.path.join(layout.config_dir, "site.conf")) == SITE_CONN
    assert _read(layout.config_file) == operator_conf
    assert not os.path.exists(layout.config_file + ".ipsec-formula-orig")
    assert _read(layout.secrets_file) == OPERATOR_SECRETS
    assert stat.S_IMODE(os.stat(layout.secrets_file).st_mode) == 0o600
    assert ns.exec(["nft", "list", "table", "inet", "ipsec_formula"], check=False).returncode != 0
    assert ns.exec(["nft", "list", "table", "inet", "host_fw"], check=False).returncode == 0
    assert not os.path.exists(node.agent_path())
    assert pcmk.objects(node.cib) == cib_objects

    rc, again, output = saltenv.call_in_netns(node.cli, ns.name, "state.apply", "ipsec.clean")
    assert rc == 0, output
    assert all(not st["changes"] for st in again.values())
