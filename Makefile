# vpcflow: `make demo` and `make test` work on a fresh Debian 12 or 13 machine, as root.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
APT_PACKAGES := openvswitch-switch openvswitch-common mininet iperf3 ethtool iproute2 iputils-ping tcpdump
PYTEST_ARGS ?=

.PHONY: deps apt-packages demo test unit bench clean-venv

deps: apt-packages $(VENV)/.installed

# Debian packages: Open vSwitch (each simulated host runs its own instance), Mininet's mnexec,
# and the tools the tests drive traffic with. Installed only when one is missing.
apt-packages:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:" $$missing; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi

$(VENV)/.installed: setup.cfg pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

demo: deps
	$(PY) -m vpcflow.harness.demo etc/topology.yaml

test: deps
	$(PY) -m pytest $(PYTEST_ARGS)

unit: deps
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

bench: deps
	$(PY) -m bench.run $(BENCH_ARGS)

clean-venv:
	rm -rf $(VENV)
