# -*- coding: utf-8 -*-
# vim: ft=sls
# Everything a node needs: package, config (NSS db, ipsec.conf, tunnel
# files), firewall, service; the pacemaker resources, the beacon and the
# metrics when pillar asks (all validated by the plan).
{%- set plan = salt['ipsec.plan']() %}
include:
  - .package
  - .config
  - .firewall
  - .service
{%- if plan.pacemaker.manage %}
  - .pacemaker
{%- endif %}
{#- Turning them off again: `state.apply ipsec.beacon` / `ipsec.metrics`
    with enabled: false removes the beacon and the schedule. #}
{%- if plan.events.beacon.enabled %}
  - .beacon
{%- endif %}
{%- if plan.events.metrics.enabled %}
  - .metrics
{%- endif %}
