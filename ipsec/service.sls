# -*- coding: utf-8 -*-
# vim: ft=sls
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import lookup with context %}

include:
  - {{ tplroot }}.config

{%- if lookup.service.manage %}
# Enabled at boot; when the formula is the one enabling it, ipsec.clean
# disables it again (the record: _states/ipsec_units.py).
ipsec-service-enabled:
  ipsec_units.enabled:
    - name: {{ lookup.service.name }}
    - config_dir: {{ lookup.config_dir }}
    - require:
      - ipsec-tunnel-files-managed

ipsec-service-running:
  service.running:
    - name: {{ lookup.service.name }}
    - require:
      - ipsec-service-enabled
      - ipsec-nss-db-initialised
      - ipsec-tunnel-files-managed
    # Tunnels change live, without a restart (ipsec.tunnels_managed); only a
    # change of `config setup` in ipsec.conf needs pluto restarted.
    - watch:
      - ipsec-config-setup-applied
{%- else %}
ipsec-service-running:
  test.nop:
    - name: service {{ lookup.service.name }} (pluto) is managed outside the formula
{%- endif %}
