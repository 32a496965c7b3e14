# agentscale: `make demo` to see it work, `make test` to check it. Both set up what they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TOOLS := $(CURDIR)/.tools
TOXIPROXY := $(TOOLS)/bin/toxiproxy-server
TOXIPROXY_VERSION := v2.12.0

.PHONY: setup tools test lint demo bench clean chromium nginx

# The browser only the report tests need; `make demo` does without it.
setup: tools chromium

tools: $(VENV)/.installed $(TOXIPROXY)

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

# Debian's chromium renders the HTML report in the tests (headless, offline).
chromium:
	@command -v chromium > /dev/null || (apt-get update -qq && apt-get install -y -qq chromium)

lint: setup
	$(BIN)/ruff check cli tests benchmarks
	$(BIN)/ruff format --check cli tests benchmarks
	$(BIN)/mypy

# Two test processes, a file each at a time: most of a test's time is a real load waiting on
# real servers, so the second core halves the wall time (CI has 15 minutes for all of it).
test: lint
	$(BIN)/pytest -q -n 2 --dist loadfile --durations=20

# The showcase: two minutes of spiky traffic at the reference agent stack (target.url: demo)
# while its CRM tool answers 503s, gated against the committed baseline; ends with the report.
demo: tools
	$(BIN)/agentscale load scenarios/spiky_burst.yaml --faults fault_profiles/tool_5xx.yaml \
	  --baseline reports/baselines/spiky-burst-tool-5xx.json

# Every benchmark, then one table of figures and goals (BENCH_MINUTES=5 shortens the soak);
# about 45 minutes. Those against a fast target need nginx; none needs the browser.
bench: tools nginx
	$(BIN)/python benchmarks/run_all.py

nginx:
	@command -v nginx > /dev/null || test -x /usr/sbin/nginx || \
	  (apt-get update -qq && apt-get install -y -qq nginx-light)

clean:
	rm -rf $(VENV) $(TOOLS) .pytest_cache .mypy_cache .ruff_cache
