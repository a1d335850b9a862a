# Two commands: `make demo` runs the system, `make test` passes the tests. Both build .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test bench clean install-server

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "Python 3.11 or newer is needed (found $$($(PYTHON) --version))"; exit 1; }
	@$(PYTHON) -m venv $(VENV) || { rm -rf $(VENV); \
		echo "could not create $(VENV): on Debian and Raspberry Pi OS run 'sudo apt install python3-venv'"; exit 1; }
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.demo: $(BIN)/python setup.cfg pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[controller,cloud]'
	@touch $@

$(VENV)/.test: $(VENV)/.demo
	$(BIN)/python -m pip install --quiet -e '.[controller,cloud,postgres,dev]'
	@touch $@

demo: $(VENV)/.demo
	$(BIN)/python -m cloud.demo

# Test processes (pytest-xdist): CI's box has two cores, and many tests wait on the processes they start.
# loadscope keeps each module in one process: its module-wide fixtures are built once (the card's first boot),
# and many modules' tests build on the one before (a sale, then its refund).
TEST_WORKERS ?= 2

test: $(VENV)/.test
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadscope

bench: $(VENV)/.test
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/vend_latency.py
	$(BIN)/python bench/controller_memory.py
	$(BIN)/python bench/framebuffer.py
	$(BIN)/python bench/pages.py
	$(BIN)/python bench/dex.py
	$(BIN)/python bench/wechat.py

# The cloud server in one step, as root on a fresh Debian 12 or 13 (docs/deploying.md):
#   sudo make install-server DOMAIN=vend.example.com EMAIL=admin@example.com [MACHINE_BROKER=...] [DB=...]
install-server: $(BIN)/python
	rm -rf dist && $(BIN)/python -m pip wheel --quiet --no-deps -w dist .
	deploy/install-server.sh --domain '$(DOMAIN)' --email '$(EMAIL)' \
		$(if $(MACHINE_BROKER),--machine-broker '$(MACHINE_BROKER)') $(if $(DB),--db '$(DB)') dist/vend_fleet-*.whl

clean:
	rm -rf $(VENV) var test-artifacts
