{#-
  ipsec-formula reactor example: repair a minion whose tunnel went down.

  The `ipsec` beacon fires salt/beacon/<minion>/ipsec/tunnel/down once a
  tunnel has been down for its debounce; with the beacon's `remind: N` it
  fires again every N seconds while the tunnel stays down, with a grown
  `down_for`. This reaction runs `ipsec_events.heal` on that minion when
  `down_for` reached `threshold`: it verifies, and re-applies the `ipsec`
  state only if a tunnel is really down, at most once every `min_interval`
  seconds per minion (the guard against loops; its outcome is fired as
  ipsec/heal/<applied|not-needed|rate-limited|failed>).

  Master config (docs/events.md):

    reactor:
      - 'salt/beacon/*/ipsec/tunnel/down':
        - salt://ipsec/files/reactor/tunnel-down.sls
    ipsec_reactor:          # optional, these are the defaults
      threshold: 60         # seconds down before acting
      min_interval: 300     # seconds between two re-applies on a minion
      action: heal          # heal, or notify (only an ipsec/notify event)
-#}
{%- set settings = opts.get('ipsec_reactor') or {} %}
{%- set threshold = settings.get('threshold', 60) | float %}
{%- set min_interval = settings.get('min_interval', 300) | float %}
{%- set action = settings.get('action', 'heal') %}
{%- if data.get('event') == 'tunnel down' and (data.get('down_for') or 0) | float >= threshold %}
{%-   if action == 'heal' %}
ipsec-heal-{{ data['id'] }}:
  local.ipsec_events.heal:
    - tgt: {{ data['id'] | json }}
    - kwarg:
        conn: {{ data.get('conn') | json }}
        level: {{ data.get('level', 'child') | json }}
        min_interval: {{ min_interval }}
{%-   else %}
ipsec-notify-{{ data['id'] }}:
  runner.event.send:
    - args:
      - tag: ipsec/notify/tunnel-down
      - data:
          minion: {{ data['id'] | json }}
          conn: {{ data.get('conn') | json }}
          peer: {{ data.get('peer') | json }}
          reason: {{ data.get('reason') | json }}
          down_for: {{ data.get('down_for') | json }}
{%-   endif %}
{%- endif %}
