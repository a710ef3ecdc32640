# -*- coding: utf-8 -*-
# vim: ft=sls
# Everything a node needs: package, config (NSS db, ipsec.conf, tunnel
# files), firewall, service.
include:
  - .package
  - .config
  - .firewall
  - .service
{#- Pacemaker VIP tunnel resources: opt-in (ipsec:pacemaker:manage). #}
{%- if salt['pillar.get']('ipsec:pacemaker:manage', False) %}
  - .pacemaker
{%- endif %}
