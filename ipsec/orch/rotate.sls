# -*- coding: utf-8 -*-
# vim: ft=sls
{#- Key rotation without dropping a tunnel (docs/keys.md), for both key
    modes. First bump ipsec:keys:version in the pillar (and, in the shared
    mode, set the new ipsec:psk), then on the master:

      salt-run state.orchestrate ipsec.orch.rotate pillar='{"ipsec_rotate": {"version": 2}}'

    ipsec_rotate: version (required), target ('*'), tgt_type (glob),
    level (child; ike on kernels without ESP).
    Every node must see the new version and have its connection files as
    planned before any node writes anything; then every node writes its
    new secrets and pluto re-reads them (no conn is added, replaced or
    deleted; established IKE and Child SAs stay: IKEv2 rekeying does not
    use the PSK); then every node's files are checked and its tunnels
    verified. #}
{%- set rotate = salt['pillar.get']('ipsec_rotate', {}) %}
{%- set tgt = rotate.get('target', '*') %}
{%- set tgt_type = rotate.get('tgt_type', 'glob') %}
{%- set level = rotate.get('level', 'child') %}
{%- if rotate.get('version') is none %}
ipsec-rotate-needs-a-version:
  test.fail_without_changes:
    - name: "pillar ipsec_rotate:version is required, e.g. pillar='{\"ipsec_rotate\": {\"version\": 2}}'"
{%- else %}
{#- Minions keep their pillar in memory: compile it anew (with the keys the
    master issues for the new version) before anything reads it. #}
ipsec-rotate-pillar-refreshed:
  salt.function:
    - name: saltutil.refresh_pillar
    - tgt: {{ tgt | json }}
    - tgt_type: {{ tgt_type }}
    - kwarg:
        wait: true

ipsec-rotate-every-node-sees-the-new-version:
  salt.function:
    - name: ipsec_keys.check
    - tgt: {{ tgt | json }}
    - tgt_type: {{ tgt_type }}
    - kwarg:
        version: {{ rotate.version | int }}
    - require:
      - ipsec-rotate-pillar-refreshed

ipsec-rotate-secrets-written-and-reread:
  salt.state:
    - tgt: {{ tgt | json }}
    - tgt_type: {{ tgt_type }}
    - sls: ipsec.config
    - require:
      - ipsec-rotate-every-node-sees-the-new-version

ipsec-rotate-new-secrets-in-place:
  salt.function:
    - name: ipsec_keys.check
    - tgt: {{ tgt | json }}
    - tgt_type: {{ tgt_type }}
    - kwarg:
        version: {{ rotate.version | int }}
        applied: true
    - require:
      - ipsec-rotate-secrets-written-and-reread

ipsec-rotate-tunnels-verified:
  salt.function:
    - name: ipsec.verify
    - tgt: {{ tgt | json }}
    - tgt_type: {{ tgt_type }}
    - kwarg:
        level: {{ level }}
    - require:
      - ipsec-rotate-new-secrets-in-place
{%- endif %}
