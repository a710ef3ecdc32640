# -*- coding: utf-8 -*-
# vim: ft=sls
# Pacemaker resources of the VIP tunnels (included by init.sls when pillar
# ipsec:pacemaker:manage is true). Every cluster node gets the OCF agent
# ocf:ipsec-formula:vip-tunnel; one node per cluster (pillar
# ipsec:pacemaker:apply_from, else the DC) changes the CIB: per VIP a
# resource colocated with the VIP's own resource and ordered after it.
# Non-cluster nodes: nothing.
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import lookup with context %}
{%- set pcmk = lookup.pacemaker %}
{%- set plan = salt['ipsec.plan']() %}
{#- Agent path parts come from the validated lookup (no '/' or '..' in them). #}

include:
  - {{ tplroot }}.service

{%- if plan.cluster_node %}

ipsec-pacemaker-agent-installed:
  file.managed:
    - name: {{ pcmk.ocf_root }}/resource.d/{{ pcmk.provider }}/{{ pcmk.agent }}
    - source: salt://{{ tplroot }}/files/ocf/vip-tunnel
    - mode: '0755'
    - makedirs: true
{%- endif %}

{#- After the tunnel files and pluto: the agent's start loads the server
    conn from the files the config states wrote. #}
ipsec-pacemaker-vip-resources-managed:
  ipsec_pacemaker.vip_resources_managed:
    - require:
      - ipsec-tunnel-files-managed
      - ipsec-service-running
{%- if plan.cluster_node %}
      - ipsec-pacemaker-agent-installed

{#- A first deployment: if the CIB was changed before this node's state
    installed the agent, the probes that ran here recorded "not installed"
    and ban the tunnel resources from this node; clean those records up. #}
ipsec-pacemaker-agent-missing-cleared:
  ipsec_pacemaker.agent_missing_cleared:
    - require:
      - ipsec-pacemaker-agent-installed

{#- A VIP that left this node while its tunnel resource did not run here
    (the same first deployment moves VIPs away from nodes without the
    agent) had no agent stop to make pluto let go of it. #}
ipsec-pacemaker-stale-vips-released:
  ipsec_pacemaker.stale_vips_released:
    - require:
      - ipsec-service-running
      - ipsec-tunnel-files-managed
{%- endif %}
