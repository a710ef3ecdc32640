{#- Tunnel metrics for node_exporter's textfile collector, on when pillar
    ipsec:metrics:enabled is true: the file is written now, and kept fresh
    by the ipsec beacon when it is on (ipsec.beacon), else by a Salt
    schedule every ipsec:metrics:schedule seconds. #}
{%- set events = salt['ipsec_events.settings']() %}
{%- set metrics = events.metrics %}
{%- if metrics.enabled %}
ipsec-metrics:
  ipsec_events.metrics:
    - name: {{ metrics.path | json }}
    - level: {{ events.beacon.level | json }}
{%- endif %}
{%- if metrics.enabled and metrics.schedule and not events.beacon.enabled %}
ipsec-metrics-schedule:
  schedule.present:
    - name: ipsec-metrics
    - function: ipsec_events.write_metrics
    - job_kwargs:
        path: {{ metrics.path | json }}
        level: {{ events.beacon.level | json }}
    - seconds: {{ metrics.schedule }}
    - return_job: False
    - persist: True
{%- else %}
ipsec-metrics-schedule:
  schedule.absent:
    - name: ipsec-metrics
{%- endif %}
