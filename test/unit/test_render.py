"""Unit tests of the file formatting (_utils/ipsec_render.py)."""

import base64

import ipsec_plan
import ipsec_render
from labkit import examples


def _plan(node="controller-0", **extra):
    return ipsec_plan.build_plan(
        examples.pillar(**extra), node, examples.own_ips(node), cluster_node=True
    )


def test_psk_token_plain_when_safe_else_base64():
    assert ipsec_render.psk_token("a" * 32) == '"' + "a" * 32 + '"'
    for hostile in ('with"quote' + "x" * 30, "new\nline" + "x" * 30, "nul\x00" + "x" * 30, "ünïcødé" * 6):
        token = ipsec_render.psk_token(hostile)
        assert token.startswith("0s")
        assert base64.b64decode(token[2:]).decode("utf-8") == hostile


def test_ipv6_ids_quoted_in_secrets():
    plan = _plan()
    path = "/etc/ipsec.d/overcloud-tenant-node-to-node-tunnels.secrets"
    text = ipsec_render.render_secrets(plan, path, examples.PSK)
    assert '"2001:db8:0:1::10" "2001:db8:0:1::11" : PSK "{}"\n'.format(examples.PSK) in text


def test_every_file_rendered_and_psk_only_in_secrets():
    plan = _plan()
    files = ipsec_render.render_files(plan, examples.PSK)
    assert list(files) == list(plan["files"])
    for path, text in files.items():
        assert (examples.PSK in text) == path.endswith(".secrets")


def test_conf_lists_every_conn_of_its_file_with_its_keywords():
    plan = _plan()
    path = "/etc/ipsec.d/overcloud-internal_api-vip-tunnels.conf"
    text = ipsec_render.render_conf(plan, path)
    blocks = [b for b in text.split("\n\n") if b.startswith("conn ")]
    assert [b.splitlines()[0] for b in blocks] == [
        "conn overcloud-internal_api-vip-tunnel",
        "conn overcloud-internal_api-node-to-vip-tunnel",
    ]
    keywords = plan["connections"]["overcloud-internal_api-vip-tunnel"]["keywords"]
    assert blocks[0].splitlines()[1:] == ["\t{}={}".format(k, v) for k, v in keywords.items()]


def test_values_with_spaces_are_quoted():
    assert ipsec_render.format_conn("c", {"plutodebug": "all crypt", "auto": "add"}) == (
        'conn c\n\tplutodebug="all crypt"\n\tauto=add\n'
    )
