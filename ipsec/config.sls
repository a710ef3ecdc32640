# -*- coding: utf-8 -*-
# vim: ft=sls
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import lookup with context %}
{#- Computing the plan here validates the pillar while the SLS renders: bad
    input fails the whole run before any state (and so any write) runs.
    The plan is redacted: the PSK never enters rendered SLS data, which
    Salt logs at debug level. #}
{%- set plan = salt['ipsec.plan']() %}

include:
  - {{ tplroot }}.package

ipsec-nss-db-directory:
  file.directory:
    - name: {{ lookup.nss_dir }}
    - makedirs: true
    - require:
      - ipsec-package-installed

ipsec-nss-db-initialised:
  cmd.run:
    - name: {{ lookup.ipsec_bin }} initnss --nssdir {{ lookup.nss_dir }}
    - creates: {{ lookup.nss_dir }}/cert9.db
    - require:
      - ipsec-nss-db-directory

{#- The operator's own ipsec.conf is kept once, for ipsec.clean. #}
ipsec-config-file-original-saved:
  ipsec.config_original_saved:
    - name: {{ lookup.config_file }}
    - require:
      - ipsec-package-installed

ipsec-config-file-managed:
  file.managed:
    - name: {{ lookup.config_file }}
    - source: salt://{{ tplroot }}/files/ipsec.conf.jinja
    - template: jinja
    - mode: '0644'
    - makedirs: true
    - context:
        config_setup: {{ plan.config_setup | json }}
        config_dir: {{ lookup.config_dir | json }}
    - require:
      - ipsec-config-file-original-saved

{#- ipsec.secrets may hold the operator's own secrets: only make sure it
    includes the formula's files (a line marked for ipsec.clean is added
    when no include is there; the file is created 0600 when missing). #}
ipsec-secrets-file-includes-formula-secrets:
  ipsec.secrets_include_present:
    - name: {{ lookup.secrets_file }}
    - config_dir: {{ lookup.config_dir }}
    - require:
      - ipsec-package-installed

ipsec-tunnel-files-managed:
  ipsec.tunnels_managed:
    - require:
      - ipsec-package-installed
