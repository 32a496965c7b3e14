# agentscale: `make demo` to see it work, `make test` to check it. Both set up what they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TOOLS := $(CURDIR)/.tools
TOXIPROXY := $(TOOLS)/bin/toxiproxy-server
TOXIPROXY_VERSION := v2.12.0
DEMO_PORT ?= 8787

.PHONY: setup test lint demo bench clean

setup: $(VENV)/.installed $(TOXIPROXY)

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

# The binary that `go install` builds is called `server`; agentscale looks for toxiproxy-server.
$(TOXIPROXY):
	mkdir -p $(TOOLS)/bin
	GOBIN=$(TOOLS)/bin GOFLAGS=-mod=mod go install github.com/Shopify/toxiproxy/v2/cmd/server@$(TOXIPROXY_VERSION)
	mv $(TOOLS)/bin/server $(TOXIPROXY)

lint: setup
	$(BIN)/ruff check cli tests benchmarks
	$(BIN)/ruff format --check cli tests benchmarks
	$(BIN)/mypy

test: lint
	$(BIN)/pytest -q

# Until the reference agent stack lands, the demo runs the smoke scenario against a small
# local target that speaks the trace contract.
demo: setup
	@$(BIN)/python tests/support/agent_server.py --port $(DEMO_PORT) > /dev/null & \
	  server=$$!; trap 'kill $$server 2>/dev/null' EXIT; sleep 1; \
	  $(BIN)/agentscale load scenarios/smoke.yaml

bench: setup
	$(BIN)/python benchmarks/overhead.py
	$(BIN)/python benchmarks/open_model.py

clean:
	rm -rf $(VENV) $(TOOLS) .pytest_cache .mypy_cache .ruff_cache
