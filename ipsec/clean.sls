# -*- coding: utf-8 -*-
# vim: ft=sls
# Remove everything the formula created, and nothing else:
#   its pacemaker resources and constraints (from the applier node) and its
#   resource agent; its conns from the running pluto, its tunnel files and
#   manifest, its lines in ipsec.conf and ipsec.secrets (what its manifest
#   and markers say it wrote, never a name pattern); its firewall table or
#   rules and their persisted copy (its table file, its marked lines);
#   the services it enabled at boot (ipsec, nftables: disabled again).
# Optionally (ipsec:clean:remove_package) the service and package too.
# Works with an invalid pillar: it reads only the validated settings
# (ipsec.settings: prefix, lookup, firewall, pacemaker, clean), never the plan.
{%- set tplroot = tpldir.split('/')[0] %}
{%- set settings = salt['ipsec.settings']() %}
{%- set lookup = settings.lookup %}
{%- set pcmk = lookup.pacemaker %}

{%- if settings.pacemaker.manage %}
ipsec-clean-pacemaker-resources-absent:
  ipsec_pacemaker.absent:
    - require_in:
      - ipsec-clean-tunnels-absent
{%- endif %}

ipsec-clean-pacemaker-agent-absent:
  file.absent:
    - name: {{ pcmk.ocf_root }}/resource.d/{{ pcmk.provider }}/{{ pcmk.agent }}

ipsec-clean-tunnels-absent:
  ipsec.absent

{%- if settings.firewall.manage %}
ipsec-clean-firewall-absent:
  ipsec_firewall.absent:
    - backend: {{ settings.firewall.backend }}
    - table: {{ settings.firewall.table }}
    - persist_files: {{ settings.firewall.persist_files | json }}
{%- endif %}

{%- if lookup.service.manage %}
# The services the formula enabled at boot (ipsec, nftables), disabled
# again; pluto stopped if the formula had enabled it. nftables.service is
# never stopped: its stop flushes the whole ruleset.
ipsec-clean-units-restored:
  ipsec_units.restored:
    - config_dir: {{ lookup.config_dir }}
    - stop: [{{ lookup.service.name }}]
    - require:
      - ipsec-clean-tunnels-absent
{%- endif %}

{%- if settings.clean.remove_package %}
{%-   if lookup.service.manage %}
ipsec-clean-service-dead:
  service.dead:
    - name: {{ lookup.service.name }}
    - enable: false
    - require:
      - ipsec-clean-tunnels-absent
{%-   endif %}
{%-   if lookup.pkg.manage %}
ipsec-clean-package-removed:
  pkg.removed:
    - name: {{ lookup.pkg.name }}
    - require:
      - ipsec-clean-tunnels-absent
{%-   endif %}
{%- endif %}
