# -*- coding: utf-8 -*-
# vim: ft=sls
# Everything a node needs: package, config (NSS db, ipsec.conf, tunnel
# files), service.
include:
  - .package
  - .config
  - .service
