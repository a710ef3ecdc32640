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

.PHONY: test demo bench deps debs venv clean libreswan-5

test: deps libreswan-5
	$(PY) -m pytest $(PYTEST_ARGS) test

# The vendored Libreswan 5.3.2 (../shared/vendor) for the 5.x test tier, built
# once into the ignored .cache/ of this checkout (its PREFIX is compiled in).
libreswan-5: debs
	tools/build-libreswan.sh 5.3.2

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
	$(call install_missing,$(LIBRESWAN_DEBS),--no-install-recommends)

venv: $(STAMP)

$(STAMP): requirements.txt constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt -c constraints.txt
	touch $@

clean:
	rm -rf $(VENV) .pytest_cache
