{#- The `ipsec` beacon (tunnel down/up events on the master's bus), on when
    pillar ipsec:beacon:enabled is true; its configuration comes validated
    from ipsec_events.settings. beacon.present adds it to the running
    minion and saves it in <conf_dir>/minion.d/beacons.conf. Needs
    `saltutil.sync_all` first (the beacon and its module). #}
{%- set events = salt['ipsec_events.settings']() %}
{%- if events.beacon.enabled %}
ipsec-beacon:
  beacon.present:
    - name: ipsec
    - save: True
{%-   for item in events.beacon_config %}
{%-     for key, value in item.items() %}
    - {{ key }}: {{ value | json }}
{%-     endfor %}
{%-   endfor %}
{%- else %}
ipsec-beacon:
  beacon.absent:
    - name: ipsec
    - save: True
{%- endif %}
