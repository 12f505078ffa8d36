# micropay: `make demo` runs the main job, `make test` runs the whole suite. Both set up
# everything they need on a fresh machine (Python 3.11+, Node 20+, make): a .venv from
# PyPI, node tools from package-lock.json, and the pinned Solidity compiler.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP_PY := $(VENV)/.installed
STAMP_NODE := node_modules/.installed

# py-solc-x (ape-solidity, tools/build_artifacts.py) finds the compiler here; ape-foundry
# finds anvil and ape-hardhat finds hardhat through node_modules/.bin.
export SOLCX_BINARY_PATH := $(CURDIR)/.solcx
export PATH := $(CURDIR)/node_modules/.bin:$(CURDIR)/$(BIN):$(PATH)

.PHONY: help setup solc postgres chromium test demo bench audit artifacts web lint clean

help:
	@echo "make demo       the whole story: channel over HTTP 402, watchtower, stream, summary"
	@echo "make test       the whole suite on the in-process chain, anvil and hardhat"
	@echo "make bench      benchmarks: vouchers/s, gas per operation, paywall per book (prints figures)"
	@echo "make audit      the auditor kit, with a Markdown report in .reports/audit.md"
	@echo "make lint       ruff, and mypy --strict on micropay/"
	@echo "make artifacts  recompile contracts/ into micropay/artifacts/"
	@echo "make web        rebuild the browser client micropay/web/micropay.js from web/"

$(STAMP_PY): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "micropay needs Python 3.11+, found " + sys.version.split()[0])'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

$(STAMP_NODE): package.json package-lock.json
	@node -e 'if (+process.versions.node.split(".")[0] < 20) { console.error("micropay needs Node 20+, found " + process.version); process.exit(1) }'
	# The locked tree: solc, anvil, hardhat, forge, and the x402 npm client (@x402/fetch,
	# @x402/evm, @x402/core, viem) that tests/test_x402_npm_client.py pays with.
	# Not `npm ci`: npm 11 drops other platforms' optional anvil binaries from the lock and
	# then calls it out of sync. `install --no-save` still installs exactly the locked tree.
	npm install --no-save --ignore-scripts --no-audit --no-fund
	touch $@

# Always re-checked (cheap): recreates .solcx/ if it was removed or went stale.
solc: $(STAMP_PY) $(STAMP_NODE)
	$(BIN)/python tools/compiler.py

setup: solc

# The ledger tests run against a real PostgreSQL: found on the machine, or installed from
# Debian's packages (as root) before the suite starts; tests start a throw-away cluster.
postgres: $(STAMP_PY)
	$(BIN)/python tools/postgres.py ensure

# The browser tests drive Debian's Chromium with Playwright (no browser download): found
# on the machine, or installed from Debian's packages (as root); else the suite stops here.
chromium: $(STAMP_PY)
	$(BIN)/python tools/chromium.py ensure

test: setup postgres chromium
	$(BIN)/python tools/run_tests.py

# The main job: the whole story on the embedded chain (micropay demo --help for more;
# MICROPAY_DEMO_NETWORK=anvil|hardhat|URL runs it on a real node).
demo: setup
	$(BIN)/micropay --network $${MICROPAY_DEMO_NETWORK:-embedded} demo

# The HTTP benchmark measures the paywall on a PostgreSQL ledger too (a throw-away cluster).
bench: setup postgres
	$(BIN)/python -m bench

# The auditor kit: hostile tokens, heavy property tests, forge, slither, mutants; the report
# lands in .reports/audit.md.
audit: setup postgres
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev,audit]'
	$(BIN)/python tools/audit.py

artifacts: setup
	$(BIN)/python tools/build_artifacts.py

web: setup
	$(BIN)/python tools/build_web.py

lint: $(STAMP_PY)
	$(BIN)/ruff check micropay tools tests scripts bench examples
	$(BIN)/ruff format --check micropay tools tests scripts bench examples
	$(BIN)/mypy

clean:
	rm -rf .solcx .build .reports .cache
