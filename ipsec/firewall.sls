# -*- coding: utf-8 -*-
# vim: ft=sls
# Accept IKE (udp 500), NAT-T (udp 4500), ESP and AH for every tunneled
# network, IPv4 and IPv6, before pluto starts negotiating. Backend and
# table: pillar ipsec:firewall (manage: false turns this into a no-op).
# persist (default true): the same rules where the distribution loads them
# at boot; with nftables, its service is enabled so it does (where the
# formula manages services: lookup:service:manage).
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import lookup with context %}
{%- set firewall = salt['ipsec.settings']().firewall %}

include:
  - {{ tplroot }}.config

ipsec-firewall-managed:
  ipsec_firewall.managed:
    - require:
      - ipsec-tunnel-files-managed
    - require_in:
      - ipsec-service-running

{%- if firewall.manage and firewall.persist and firewall.persist_service and lookup.service.manage %}

ipsec-firewall-persist-service-enabled:
  ipsec_units.enabled:
    - name: {{ firewall.persist_service }}
    - config_dir: {{ lookup.config_dir }}
    - require:
      - ipsec-firewall-managed
{%- endif %}

