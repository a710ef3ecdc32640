# -*- coding: utf-8 -*-
# vim: ft=sls
# Everything a node needs: package, config (NSS db, ipsec.conf, tunnel
# files), firewall, service.
include:
  - .package
  - .config
  - .firewall
  - .service
{#- Pacemaker VIP tunnel resources: ipsec:pacemaker:manage (validated by the plan). #}
{%- if salt['ipsec.plan']()['pacemaker']['manage'] %}
  - .pacemaker
{%- endif %}
