# -*- coding: utf-8 -*-
# vim: ft=sls
# Remove everything the formula created, and nothing else:
#   its pacemaker resources and constraints (from the applier node) and its
#   resource agent; its conns from the running pluto; its conf/secrets
#   files; its firewall table or rules; the include line it added to
#   ipsec.secrets; ipsec.conf given back as it was before the formula.
# Optionally (ipsec:clean:remove_package) the service and package too.
# Works with an invalid pillar: it reads only ipsec:prefix, ipsec:firewall,
# ipsec:lookup and ipsec:clean, never the plan.
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import lookup with context %}
{%- set conf = salt['pillar.get']('ipsec', {}) %}
{%- set firewall = conf.get('firewall') or {} %}
{%- set clean = conf.get('clean') or {} %}
{%- set pcmk = lookup.pacemaker %}

{%- if (conf.get('pacemaker') or {}).get('manage', False) %}
ipsec-clean-pacemaker-resources-absent:
  ipsec_pacemaker.absent:
    - require_in:
      - ipsec-clean-conns-deleted
{%- endif %}

ipsec-clean-pacemaker-agent-absent:
  file.absent:
    - name: {{ pcmk.ocf_root }}/resource.d/{{ pcmk.provider }}/{{ pcmk.agent }}

ipsec-clean-conns-deleted:
  ipsec.conns_absent

ipsec-clean-tunnel-files-absent:
  ipsec.files_absent:
    - require:
      - ipsec-clean-conns-deleted

ipsec-clean-secrets-include-absent:
  ipsec.secrets_include_absent:
    - name: {{ lookup.secrets_file }}

ipsec-clean-config-file-restored:
  ipsec.config_restored:
    - name: {{ lookup.config_file }}

{%- if firewall.get('manage', True) %}
ipsec-clean-firewall-absent:
  ipsec_firewall.absent:
    - backend: {{ firewall.get('backend', 'nftables') }}
    - table: {{ firewall.get('table', 'ipsec_formula') }}
{%- endif %}

{%- if clean.get('remove_package', False) %}
{%-   if lookup.service.manage %}
ipsec-clean-service-dead:
  service.dead:
    - name: {{ lookup.service.name }}
    - enable: false
    - require:
      - ipsec-clean-conns-deleted
{%-   endif %}
{%-   if lookup.pkg.manage %}
ipsec-clean-package-removed:
  pkg.removed:
    - name: {{ lookup.pkg.name }}
    - require:
      - ipsec-clean-tunnel-files-absent
      - ipsec-clean-config-file-restored
{%-   endif %}
{%- endif %}
