# -*- coding: utf-8 -*-
# vim: ft=sls
{%- set tplroot = tpldir.split('/')[0] %}
{#- The plan is the gate: computing it here validates every input while the
    SLS renders, so bad input fails the whole run before any state (and so
    any write) runs. It is built once per run and the states reuse it. The
    PSK never enters rendered SLS data (Salt logs it at debug level). #}
{%- do salt['ipsec.plan']() %}

include:
  - {{ tplroot }}.package

ipsec-nss-db-initialised:
  ipsec.nss_initialised:
    - require:
      - ipsec-package-installed

{#- One transaction: the tunnel files, the formula's lines in ipsec.conf
    and ipsec.secrets, its manifest, then the running pluto (live, no
    restart). Everything is checked before the first write. #}
ipsec-tunnel-files-managed:
  ipsec.tunnels_managed:
    - require:
      - ipsec-package-installed

{#- Changes only when config setup changed: the service watches this, so
    tunnel changes never restart pluto. #}
ipsec-config-setup-applied:
  ipsec.config_setup_applied:
    - require:
      - ipsec-tunnel-files-managed
