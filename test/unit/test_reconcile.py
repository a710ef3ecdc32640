"""Pure reconcile logic (_utils/ipsec_reconcile.py): reading the formula's
rendered conf files back, the add/replace/delete diff, and the parsers of
addconn, whack and --rereadsecrets output (texts as Libreswan 4.10 printed
them in test/integration/test_pluto_ops.py)."""

import copy

import pytest

import ipsec_plan
import ipsec_reconcile as rec
import ipsec_status
import ipsec_render
from labkit import examples

DIR = "/etc/ipsec.d"
CONF = DIR + "/overcloud-internal_api-node-to-node-tunnels.conf"
CONF2 = DIR + "/overcloud-storage-node-to-node-tunnels.conf"
SECRETS = DIR + "/overcloud-internal_api-node-to-node-tunnels.secrets"


def render(conns_by_file, secrets=None):
    """{path: text} in the formula's format from {path: {name: keywords}}."""
    files = {}
    for path, conns in conns_by_file.items():
        blocks = [ipsec_render.format_conn(name, kw) for name, kw in conns.items()]
        files[path] = ipsec_render.HEADER + "\n" + "\n".join(blocks)
    files.update(secrets or {})
    return files


def kw(right, **extra):
    keywords = {"type": "tunnel", "authby": "secret", "left": "198.51.100.10", "leftid": "198.51.100.10",
                "right": right, "rightid": right, "ikev2": "yes", "esp": "aes_gcm128-null",
                "failureshunt": "drop", "retransmit-timeout": "2s", "auto": "start"}
    keywords.update(extra)
    return keywords


BASE = {CONF: {"overcloud-a": kw("198.51.100.11"), "overcloud-b": kw("198.51.100.12"),
               "overcloud-c": kw("198.51.100.13", auto="add")}}
SECRET_TEXT = {SECRETS: ipsec_render.HEADER + '198.51.100.10 198.51.100.11 : PSK "old-secret-value"\n'}


def test_parse_conf_reads_back_what_render_wrote():
    plan = ipsec_plan.build_plan(examples.pillar(), "controller-0", examples.own_ips("controller-0"),
                                 cluster_node=True, config_dir=DIR)
    files = ipsec_render.render_files(plan, examples.PSK)
    seen = {}
    for path, text in files.items():
        if path.endswith(".conf"):
            for name, keywords in rec.parse_conf(text).items():
                seen[name] = keywords
                assert plan["connections"][name]["file"] == path
    assert seen == {name: conn["keywords"] for name, conn in plan["connections"].items()}


def test_parse_conf_quotes_comments_and_other_sections():
    text = (
        "# Managed by Salt\n"
        "config setup\n\tuniqueids=no\n\n"
        "include /etc/ipsec.d/*.conf\n"
        "conn %default\n\tikelifetime=1h\n"
        "conn one\n"
        "\tleft=198.51.100.1\n"
        "  # indented comment\n"
        '\tleftid="@my id"\n'
        "\tright=198.51.100.2   # trailing comment\n"
        "\n"
        "conn two\n\tauto=add\n"
        "conn one\n\tleft=198.51.100.9\n"
    )
    parsed = rec.parse_conf(text)
    assert parsed == {"one": {"left": "198.51.100.9"}, "two": {"auto": "add"}}
    assert rec.conf_names(text) == ["one", "two", "one"]
    assert rec.parse_conf(text.rsplit("conn one", 1)[0])["one"] == {
        "left": "198.51.100.1", "leftid": "@my id", "right": "198.51.100.2"}
    assert rec.parse_conf(None) == {} and rec.parse_conf("") == {}


def test_same_files_nothing_to_do():
    files = render(BASE, SECRET_TEXT)
    result = rec.diff(files, files)
    assert result["add"] == result["replace"] == result["delete"] == result["start"] == []
    assert result["unchanged"] == ["overcloud-a", "overcloud-b", "overcloud-c"]
    assert result["secrets_changed"] is False
    assert result["files"] == {"write": [], "remove": []}
    assert rec.summary(result) == "nothing to change"
    # With pluto's list agreeing, still nothing.
    assert rec.diff(files, files, loaded=["overcloud-a", "overcloud-b", "overcloud-c", "other"]) == result


def test_first_apply_adds_everything_and_starts_auto_start():
    new = render(BASE, SECRET_TEXT)
    old = {path: None for path in new}
    result = rec.diff(old, new)
    assert result["add"] == ["overcloud-a", "overcloud-b", "overcloud-c"]
    assert result["start"] == ["overcloud-a", "overcloud-b"]
    assert result["secrets_changed"] is True
    assert result["files"]["write"] == sorted(new)
    assert rec.diff({}, new)["add"] == result["add"]


def test_changed_keyword_is_replace_reordered_keywords_are_not():
    new_conns = copy.deepcopy(BASE)
    new_conns[CONF]["overcloud-b"]["esp"] = "aes_gcm256-null"
    reordered = dict(reversed(list(new_conns[CONF]["overcloud-a"].items())))
    new_conns[CONF]["overcloud-a"] = reordered
    old, new = render(BASE, SECRET_TEXT), render(new_conns, SECRET_TEXT)
    assert old[CONF] != new[CONF]
    result = rec.diff(old, new)
    assert result["replace"] == ["overcloud-b"]
    assert result["unchanged"] == ["overcloud-a", "overcloud-c"]
    assert result["start"] == ["overcloud-b"]
    assert result["secrets_changed"] is False
    assert result["files"]["write"] == [CONF]


def test_removed_keyword_and_auto_change_are_replace():
    new_conns = copy.deepcopy(BASE)
    del new_conns[CONF]["overcloud-a"]["retransmit-timeout"]
    new_conns[CONF]["overcloud-c"]["auto"] = "start"
    result = rec.diff(render(BASE), render(new_conns))
    assert result["replace"] == ["overcloud-a", "overcloud-c"]
    assert result["start"] == ["overcloud-a", "overcloud-c"]


def test_removed_conn_and_stale_file_are_deleted():
    old_conns = copy.deepcopy(BASE)
    old_conns[CONF2] = {"overcloud-s1": kw("203.0.113.11"), "overcloud-s2": kw("203.0.113.12")}
    new_conns = copy.deepcopy(BASE)
    del new_conns[CONF]["overcloud-c"]
    old = render(old_conns, SECRET_TEXT)
    new = render(new_conns, SECRET_TEXT)
    result = rec.diff(old, new)
    assert result["delete"] == ["overcloud-c", "overcloud-s1", "overcloud-s2"]
    assert result["add"] == result["replace"] == []
    assert result["files"] == {"write": [CONF], "remove": [CONF2]}
    assert rec.summary(result) == "3 to delete"


def test_moved_to_another_file_is_replace():
    new_conns = {CONF: {k: v for k, v in BASE[CONF].items() if k != "overcloud-c"},
                 CONF2: {"overcloud-c": BASE[CONF]["overcloud-c"]}}
    result = rec.diff(render(BASE), render(new_conns))
    assert result["replace"] == ["overcloud-c"]
    assert result["unchanged"] == ["overcloud-a", "overcloud-b"]
    assert result["delete"] == [] and result["start"] == []


def test_secrets_only_change():
    other = {SECRETS: SECRET_TEXT[SECRETS].replace("old-secret-value", "new-secret-value")}
    old, new = render(BASE, SECRET_TEXT), render(BASE, other)
    result = rec.diff(old, new)
    assert result["secrets_changed"] is True
    assert result["add"] == result["replace"] == result["delete"] == []
    assert result["files"]["write"] == [SECRETS]
    assert rec.summary(result) == "secrets to re-read"
    # The secret text is nowhere in the result.
    assert "secret-value" not in repr(result)
    # A secrets file removed, or one added, changes the secrets too.
    assert rec.diff(old, render(BASE))["secrets_changed"] is True
    assert rec.diff(render(BASE), old)["secrets_changed"] is True
    assert rec.diff(render(BASE), {**render(BASE), SECRETS: None})["secrets_changed"] is False


def test_loaded_list_adds_missing_and_deletes_only_owned_conns():
    files = render(BASE)
    loaded = ["overcloud-a", "overcloud-c", "overcloud-gone", "overcloud-backup", "operator-own"]
    result = rec.diff(files, files, loaded=loaded, owned=["overcloud-gone", "overcloud-never-loaded"])
    # b is in the files but pluto lost it (rejected earlier, pluto restarted...)
    assert result["add"] == ["overcloud-b"]
    assert result["start"] == ["overcloud-b"]
    # only what the formula recorded is ours to delete: the operator's
    # overcloud-backup has the prefix but is not the formula's
    assert result["delete"] == ["overcloud-gone"]
    assert result["unchanged"] == ["overcloud-a", "overcloud-c"]
    assert rec.diff(files, files, loaded=loaded)["delete"] == []


def test_changed_but_not_loaded_is_add_and_removed_not_loaded_needs_no_delete():
    new_conns = copy.deepcopy(BASE)
    new_conns[CONF]["overcloud-a"]["esp"] = "aes_gcm256-null"
    del new_conns[CONF]["overcloud-c"]
    result = rec.diff(render(BASE), render(new_conns), loaded=["overcloud-b"])
    assert result["add"] == ["overcloud-a"]
    assert result["replace"] == []
    assert result["delete"] == []


def test_planned_not_in_old_files_but_loaded_is_add():
    result = rec.diff({}, render(BASE), loaded=["overcloud-a"])
    assert result["add"] == ["overcloud-a", "overcloud-b", "overcloud-c"]


def test_auto_ignore_is_never_loaded_and_deleted_when_loaded():
    new_conns = copy.deepcopy(BASE)
    new_conns[CONF]["overcloud-a"]["auto"] = "ignore"
    new_conns[CONF]["overcloud-b"]["auto"] = "route"
    result = rec.diff(render(BASE), render(new_conns))
    assert result["ignore"] == ["overcloud-a"]
    assert result["delete"] == ["overcloud-a"]
    assert result["replace"] == ["overcloud-b"]
    assert result["route"] == ["overcloud-b"] and result["start"] == []
    # once gone from pluto, it stays out: idempotent
    again = rec.diff(render(new_conns), render(new_conns), loaded=["overcloud-b", "overcloud-c"])
    assert again["delete"] == again["add"] == again["replace"] == []
    assert again["ignore"] == ["overcloud-a"]


def test_deterministic_output():
    old = render(BASE, SECRET_TEXT)
    new_conns = copy.deepcopy(BASE)
    new_conns[CONF2] = {"overcloud-z": kw("203.0.113.9"), "overcloud-y": kw("203.0.113.8")}
    new = render(new_conns, SECRET_TEXT)
    first = rec.diff(old, new, loaded={"overcloud-q", "overcloud-a"})
    for _ in range(3):
        shuffled_old = dict(reversed(list(old.items())))
        shuffled_new = dict(reversed(list(new.items())))
        assert rec.diff(shuffled_old, shuffled_new, loaded=["overcloud-a", "overcloud-q"]) == first
    assert first["add"] == ["overcloud-b", "overcloud-c", "overcloud-y", "overcloud-z"]


# --- Libreswan output parsers ------------------------------------------------

ADDCONN_OUT = (
    '002 "c1": terminating SAs using this connection\n'
    '002 "c1" #1: deleting state (STATE_V2_ESTABLISHED_IKE_SA) aged 5.118914s and sending notification\n'
    '036 "c1": failed to add connection: AEAD ESP encryption algorithm AES_GCM_16 must have '
    "'NONE' as the integrity algorithm\r\n"
    '002 "c3": added IKEv2 connection\n'
)


def test_parse_addconn_names_each_verdict():
    verdict = ipsec_status.parse_addconn(
        ADDCONN_OUT,
        "conn 'nope': not found (tried aliases)\n"
        'conn: "c3" warning IKEv2 liveness uses retransmit-timeout=, dpdtimeout= ignored\n',
        ["c1", "nope", "c3", "c4"])
    assert verdict["added"] == ["c3"]
    assert verdict["rejected"] == {
        "c1": '"c1": failed to add connection: AEAD ESP encryption algorithm AES_GCM_16 must have '
              "'NONE' as the integrity algorithm",
        "nope": "conn 'nope': not found (tried aliases)",
    }
    assert verdict["unknown"] == ["c4"]
    assert verdict["error"] is None
    assert verdict["warnings"] == ['conn: "c3" warning IKEv2 liveness uses retransmit-timeout=, dpdtimeout= ignored']


def test_parse_addconn_5x_style_and_whole_config_error():
    verdict = ipsec_status.parse_addconn('"x": added IKEv2 connection\n"y": failed to add connection: bad\n', "", ["x", "y"])
    assert verdict["added"] == ["x"] and list(verdict["rejected"]) == ["y"]
    broken = ipsec_status.parse_addconn("", "cannot load config '/etc/ipsec.conf': /etc/ipsec.d/a.conf:2: syntax error [bogus]\n",
                               ["x"])
    assert broken["error"].startswith("cannot load config")
    assert broken["unknown"] == ["x"]


def test_parse_loaded_and_total():
    status = (
        "000 Connection list:\n"
        "000  \n"
        '000 "overcloud-a": 198.51.100.10...198.51.100.11; unrouted; eroute owner: #0\n'
        '000 "overcloud-a":     oriented; my_ip=unset; their_ip=unset;\n'
        '000 "overcloud-vip"[2]: 198.51.100.100...198.51.100.20; erouted; eroute owner: #4\n'
        '"five-style": 198.51.100.10...198.51.100.12; unrouted;\n'
        "000 Total IPsec connections: loaded 3, active 1\n"
        '000 #1: "overcloud-a":500 STATE_V2_ESTABLISHED_IKE_SA (established IKE SA); newest;\n'
    )
    assert ipsec_status.parse_loaded(status) == ["five-style", "overcloud-a", "overcloud-vip"]
    assert ipsec_status.total_loaded(status) == 3
    assert ipsec_status.parse_loaded("") == [] and ipsec_status.total_loaded("") is None


def test_whack_errors():
    out = "000 initiating all conns with alias='a9'\n021 no connection named \"a9\"\n181 \"a2\" #1: initiating IKEv2 connection\n"
    assert ipsec_status.whack_errors(out) == ['no connection named "a9"']
    assert ipsec_status.whack_errors('002 "a2": terminating SAs using this connection\n') == []
    # A peer that does not answer (yet) is not an error of the conn.
    slow = ('010 "a2" #36: STATE_V2_ESTABLISHED_IKE_SA: retransmission; will wait 0.5 seconds for response\n'
            '031 "a2" #36: STATE_V2_ESTABLISHED_IKE_SA: 2 second timeout exceeded after 2 retransmits.\n')
    assert len(ipsec_status.whack_errors(slow)) == 2
    assert ipsec_status.whack_errors(slow + out, unanswered_ok=True) == ['no connection named "a9"']


def test_secrets_report_never_repeats_the_secret():
    out = (
        '002 forgetting secrets\n'
        '002 loading secrets from "/etc/ipsec.secrets"\n'
        '002 loading secrets from "/etc/ipsec.d/a.secrets"\n'
        '002 no secrets filename matched "/etc/ipsec.d/*.secrets"\n'
        "003 unterminated string\n"
        '003 "/etc/ipsec.d/a.secrets" line 1: PSK data malformed (input does not begin with format prefix): '
        '"sekrit-value-xyz\n'
        '003 "/etc/ipsec.d/a.secrets" line 2: PSK data malformed (input does not begin with format prefix): '
        "sekrit2\n"
    )
    files, problems = ipsec_status.secrets_report(out)
    assert files == ["/etc/ipsec.secrets", "/etc/ipsec.d/a.secrets"]
    assert problems == [
        "unterminated string",
        "/etc/ipsec.d/a.secrets line 1: PSK data malformed (input does not begin with format prefix)",
        "/etc/ipsec.d/a.secrets line 2: PSK data malformed (input does not begin with format prefix)",
    ]
    assert "sekrit" not in repr(problems)
    assert ipsec_status.secrets_report('002 forgetting secrets\n002 loading secrets from "/x"\n') == (["/x"], [])


@pytest.mark.parametrize("changes,text", [
    ({"add": ["a"], "replace": ["b", "c"], "delete": [], "secrets_changed": True},
     "1 to add, 2 to replace, secrets to re-read"),
    ({"add": [], "replace": [], "delete": ["x"], "secrets_changed": False}, "1 to delete"),
])
def test_summary(changes, text):
    assert rec.summary(changes) == text
