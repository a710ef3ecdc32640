# -*- coding: utf-8 -*-
# vim: ft=sls
# Accept IKE (udp 500), NAT-T (udp 4500), ESP and AH for every tunneled
# network, IPv4 and IPv6, before pluto starts negotiating. Backend and
# table: pillar ipsec:firewall (manage: false turns this into a no-op).
{%- set tplroot = tpldir.split('/')[0] %}

include:
  - {{ tplroot }}.config

ipsec-firewall-managed:
  ipsec_firewall.managed:
    - require:
      - ipsec-tunnel-files-managed
    - require_in:
      - ipsec-service-running
