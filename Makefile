# ipsec-formula: the two commands a newcomer needs are `make demo` and
# `make test`; both install what they need first (Debian packages with
# apt-get when missing, a virtualenv with pinned Python packages).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEBS := $(shell sed -e 's/\#.*//' debian-packages.txt)
VM_DEBS := $(shell sed -e 's/\#.*//' debian-packages-vm.txt)
PYTEST_ARGS ?=

.PHONY: test demo bench deps debs venv clean salt-lines

# The whole suite on Salt 3008 (.venv), then the unit and functional tiers
# again on the other Salt lines FORMULA's minimum_version promises.
test: deps salt-lines-venvs
	$(PY) -m pytest $(PYTEST_ARGS) test
	$(MAKE) --no-print-directory salt-lines

demo: deps
	KEEP=$(KEEP) $(PY) tools/demo.py

bench: deps
	$(PY) bench/plan_bench.py
	$(PY) bench/status_bench.py
	$(PY) bench/apply_bench.py

deps: debs venv

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

venv: $(STAMP)

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

salt-lines: salt-lines-venvs
	@for line in $(SALT_LINES); do \
	  echo "== Salt $$line: $(LINE_TIERS)"; \
	  .venv-$$line/bin/python -m pytest -q -p no:cacheprovider $(LINE_TIERS) || exit 1; \
	done

.venv-%/.installed: requirements.txt constraints-%.txt
	$(PYTHON) -m venv .venv-$*
	grep -v '^salt==' requirements.txt > .venv-$*/requirements.txt
	.venv-$*/bin/pip install -q -r .venv-$*/requirements.txt salt -c constraints-$*.txt
	touch $@

clean:
	rm -rf $(VENV) .venv-3006 .venv-3007 .pytest_cache
