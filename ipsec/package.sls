# -*- coding: utf-8 -*-
# vim: ft=sls
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import lookup with context %}

{%- if lookup.pkg.manage %}
ipsec-package-installed:
  pkg.installed:
    - name: {{ lookup.pkg.name }}
{%- else %}
ipsec-package-installed:
  test.nop:
    - name: package {{ lookup.pkg.name }} is managed outside the formula
{%- endif %}
