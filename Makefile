# Two commands on a fresh machine: `make demo` and `make test`. Each installs what it needs.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

NODE_STAMP := node_modules/.installed
BITCOIND_STAMP := .tools/.bitcoind
CHROMIUM_STAMP := .tools/.chromium

.PHONY: demo test chaos bench lint typecheck clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[daemon,dev]'
	touch $(STAMP)

# anvil (the Ethereum node for development and tests) and solc (compiles the test token), pinned by the lock file
$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $(NODE_STAMP)

# bitcoind (the Bitcoin node for development and tests): one on PATH, or Debian's bitcoin-knots fetched into .tools/
$(BITCOIND_STAMP): scripts/fetch-bitcoind.sh
	bash scripts/fetch-bitcoind.sh
	touch $(BITCOIND_STAMP)

# Debian's chromium and chromedriver (apt, by package name), for the console and verifier-page browser tests
$(CHROMIUM_STAMP): scripts/install-chromium.sh
	bash scripts/install-chromium.sh
	mkdir -p .tools && touch $(CHROMIUM_STAMP)

test: $(STAMP) $(NODE_STAMP) $(BITCOIND_STAMP) $(CHROMIUM_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports
	$(PY) -m pytest

# The long fault tests (a few minutes): PostgreSQL down 20 s and a worker frozen 30 s, as in a real incident
# (`make test` runs the same tests with shorter outages), replicas killed at random under load, and the node
# restarted without its mempool again and again, or rolled back under live workers.
chaos: $(STAMP) $(NODE_STAMP) $(BITCOIND_STAMP)
	CUSTODY_CHAOS_LONG=1 $(PY) -m pytest -s tests/integration/test_db_outages.py tests/integration/test_chaos.py \
		tests/integration/test_node_faults.py

demo: $(STAMP) $(NODE_STAMP) $(BITCOIND_STAMP)
	$(PY) scripts/demo.py

bench: $(STAMP) $(NODE_STAMP) $(BITCOIND_STAMP)
	$(PY) bench/run.py

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) node_modules demo-data .tools
