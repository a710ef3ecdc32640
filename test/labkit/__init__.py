"""
Test and lab harness of ipsec-formula: network namespaces, isolated pluto
instances and Salt minion configuration pointing the formula at a temporary
root. Used by the test suite and by ``make demo`` (tools/demo.py).

All addresses are documentation ranges (198.51.100.0/24, 203.0.113.0/24,
2001:db8::/32); traffic only flows between namespaces created here.
"""
