# ipsec-formula: the two commands a newcomer needs are `make demo` and
# `make test`; both install what they need first (Debian packages with
# apt-get when missing, a virtualenv with pinned Python packages).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEBS := $(shell sed -e 's/\#.*//' debian-packages.txt)
VM_DEBS := $(shell sed -e 's/\#.*//' debian-packages-vm.txt)
LIBRESWAN_DEBS := $(shell sed -e 's/\#.*//' debian-packages-libreswan.txt)
PYTEST_ARGS ?=

.PHONY: test check demo bench bench-converge bench-failover deps debs venv pth clean salt-lines libreswan-5

# The whole suite on Salt 3008 (.venv), then the unit and functional tiers
# again on the other Salt lines FORMULA's minimum_version promises.
test: deps salt-lines-venvs libreswan-5
	$(PY) -m pytest --durations=25 $(PYTEST_ARGS) test
	$(MAKE) --no-print-directory salt-lines

# The vendored Libreswan 5.3.2 (../shared/vendor) for the 5.x test tier, built
# once into the ignored .cache/ of this checkout (its PREFIX is compiled in).
libreswan-5: debs
	tools/build-libreswan.sh 5.3.2

# The unit tier only (no namespace, no daemon, no VM; tiers: pytest.ini,
# test/conftest.py): seconds, for every edit.
check: deps
	$(PY) -m pytest -m unit $(PYTEST_ARGS) test

demo: deps
	KEEP=$(KEEP) $(PY) tools/demo.py

# Each bench prints its figures as ratios to a floor timed in the same run
# and writes them to bench/results/ (ignored by git).
bench: deps
	$(PY) bench/plan_bench.py
	$(PY) bench/status_bench.py
	$(PY) bench/apply_bench.py
	$(PY) bench/events_bench.py
	$(PY) bench/salt_bench.py

# Mesh convergence, both-ends-start against one initiator per tunnel, N = 12
# and 24 plutos, 5 restart rounds (docs/convergence.md): about 25 minutes.
bench-converge: deps
	$(PY) bench/converge_bench.py --nodes 12 24 --rounds 5

# VIP failovers on the live cluster lab, 10 of each kind (docs/pacemaker.md):
# about 15 minutes.
bench-failover: deps
	$(PY) bench/failover_bench.py --rounds 10

deps: debs venv pth

# Install the Debian packages that are missing (apt-get needs root).
define install_missing
	@missing=$$(for p in $(1); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:" $$missing; \
	  apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(2) $$missing; \
	fi
endef

debs:
	$(call install_missing,$(DEBS),)
	$(call install_missing,$(VM_DEBS),--no-install-recommends)
	$(call install_missing,$(LIBRESWAN_DEBS),--no-install-recommends)

venv: $(STAMP)

# tools/, bench/ and the VM jobs (labkit.labvm, run by the venv's python
# inside the VM) import labkit (test/) and the formula's pure modules
# (_utils/): a .pth file in the venv's site-packages puts both on its path,
# written relative to site-packages, so a venv shared by several checkouts
# (a symlinked .venv) resolves to the folders of the checkout it is run
# from. pytest does not need it (pytest.ini: pythonpath).
pth: $(STAMP)
	@$(PY) -c 'import os, sys, sysconfig; site = sysconfig.get_path("purelib"); \
	text = "".join(os.path.relpath(os.path.join(sys.argv[1], d), site) + "\n" for d in ("test", "_utils")); \
	path = os.path.join(site, "ipsec-formula.pth"); \
	old = open(path).read() if os.path.exists(path) else None; \
	old == text or open(path, "w").write(text)' "$(CURDIR)"

$(STAMP): requirements.txt constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt -c constraints.txt
	touch $@

# --- other Salt lines: one virtualenv each (.venv-3006, .venv-3007), pinned
# by constraints-<line>.txt, running the tiers that do not depend on the
# line's daemons (unit, functional: salt-call --local).
SALT_LINES := 3006 3007
LINE_TIERS := test/unit test/functional

salt-lines-venvs: $(foreach line,$(SALT_LINES),.venv-$(line)/.installed)

# The lines run side by side (one per core; each output printed whole when
# it ends): they share nothing but the machine, and make test stays shorter.
salt-lines: salt-lines-venvs
	@$(MAKE) --no-print-directory -j$(words $(SALT_LINES)) --output-sync=target \
	  $(addprefix salt-line-,$(SALT_LINES))

salt-line-%: .venv-%/.installed
	@echo "== Salt $*: $(LINE_TIERS)"
	.venv-$*/bin/python -m pytest -q -p no:cacheprovider $(LINE_TIERS)

.venv-%/.installed: requirements.txt constraints-%.txt
	$(PYTHON) -m venv .venv-$*
	grep -v '^salt==' requirements.txt > .venv-$*/requirements.txt
	.venv-$*/bin/pip install -q -r .venv-$*/requirements.txt salt -c constraints-$*.txt
	touch $@

clean:
	rm -rf $(VENV) .venv-3006 .venv-3007 .pytest_cache
