# relayflow — the two commands a new user types are `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
SAMVENV := .venv-sam
# checkov pins boto3 1.35 (the runtime needs >= 1.40): it gets its own virtual environment.
CHECKOVVENV := .venv-checkov
CHECKOV_VERSION := 3.3.30
STAMP  := $(VENV)/.installed
# npm's asl-validator (pinned), which validates statemachine/*.asl.json in the test suite.
NODEDIR := .node
NODESTAMP := $(NODEDIR)/.installed
ASL_VALIDATOR_VERSION := 4.0.0
# The suite runs on two workers (pytest-xdist; it waits more than it computes), but for the modules
# xdist cannot run whole: schemathesis's per-operation cases share one node id (xdist keeps one).
SERIAL_TESTS := tests/integration/test_schemathesis.py
# Debian's own Chromium for the dashboard's browser test (Playwright drives it; nothing is downloaded).
CHROMIUM := /usr/bin/chromium
# The dashboard's graph layout, vendored (served with the page, never from a CDN): static/VENDORED.md.
DAGRE_VERSION := 3.1.4
STATIC := functions/runtime/relayflow_runtime/static

.DEFAULT_GOAL := help
.PHONY: help demo test lint cfn-lint checkov sam-validate bench bench-million serve clean browser vendor-dagre

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[local,dev]'
	@touch $(STAMP)

$(NODESTAMP): Makefile
	npm install --prefix $(NODEDIR) --no-audit --no-fund --save-exact asl-validator@$(ASL_VALIDATOR_VERSION)
	@touch $(NODESTAMP)

$(CHECKOVVENV)/.installed: Makefile
	$(PYTHON) -m venv $(CHECKOVVENV)
	$(CHECKOVVENV)/bin/pip install --quiet checkov==$(CHECKOV_VERSION)
	@touch $@

$(SAMVENV)/.installed:
	$(PYTHON) -m venv $(SAMVENV)
	$(SAMVENV)/bin/pip install --quiet aws-sam-cli==1.170.0
	@touch $@

demo: $(STAMP) ## Run a real workflow end to end on the embedded local stack
	$(BIN)/relayflow demo $(if $(DATA_DIR),--data-dir $(DATA_DIR))

serve: $(STAMP) ## Serve the HTTP API and dashboard on 127.0.0.1:8765
	$(BIN)/relayflow serve --port 8765

# The serial modules run beside the two workers (the suite waits more than it computes); their
# output is printed after the workers', and either's failure fails the target.
test: $(STAMP) $(NODESTAMP) $(CHROMIUM) lint sam-validate ## Lint, validate the template and state machines, run the whole test suite
	@rm -f .serial-tests.log; \
	$(BIN)/pytest -q -p no:cacheprovider $(SERIAL_TESTS) > .serial-tests.log 2>&1 & serial=$$!; \
	$(BIN)/pytest -q -n 2 --dist loadfile $(addprefix --ignore=,$(SERIAL_TESTS)); workers=$$?; \
	wait $$serial; serial_status=$$?; \
	echo "--- $(SERIAL_TESTS) (run beside the workers):"; cat .serial-tests.log; \
	test $$workers -eq 0 && test $$serial_status -eq 0

$(CHROMIUM):
	apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium

browser: $(CHROMIUM) ## Install headless Chromium (Debian's package) for the dashboard test

vendor-dagre: ## Copy @dagrejs/dagre's browser bundle at DAGRE_VERSION into the dashboard's static/
	rm -rf .vendor-dagre && mkdir .vendor-dagre
	cd .vendor-dagre && npm pack --silent @dagrejs/dagre@$(DAGRE_VERSION) && tar xzf *.tgz
	cp .vendor-dagre/package/dist/dagre.min.js $(STATIC)/dagre.min.js
	cp .vendor-dagre/package/LICENSE $(STATIC)/dagre.LICENSE.txt
	rm -rf .vendor-dagre
	sha256sum $(STATIC)/dagre.min.js

lint: $(STAMP) cfn-lint checkov ## ruff + mypy + cfn-lint + checkov + import-linter (the runtime's layers)
	$(BIN)/ruff check functions tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

cfn-lint: $(STAMP)
	$(BIN)/cfn-lint template.yaml

# CloudFormation checks over the template (the same checks and results as over `sam build`'s
# .aws-sam/build/template.yaml, which only rewrites CodeUri). Every exception is a skip with its
# reason in the resource's Metadata; BC_SKIP_MAPPING and --skip-download keep it offline.
checkov: $(CHECKOVVENV)/.installed ## checkov: no failed check (each skip argued in the template)
	BC_SKIP_MAPPING=TRUE $(CHECKOVVENV)/bin/checkov --file template.yaml --framework cloudformation \
		--compact --quiet --skip-download

sam-validate: $(SAMVENV)/.installed ## sam validate --lint (offline)
	AWS_DEFAULT_REGION=us-east-1 SAM_CLI_TELEMETRY=0 $(SAMVENV)/bin/sam validate --lint --template template.yaml

bench: $(STAMP) ## Benchmarks: ratios measured side by side in one run
	$(BIN)/python -m bench

bench-million: $(STAMP) ## bench/export.py, plus a million items recorded, compacted and exported
	RELAYFLOW_BENCH_EXPORT_ITEMS=1000000 $(BIN)/python -m bench export

clean: ## Remove the virtual environments and caches
	rm -rf $(VENV) $(SAMVENV) $(CHECKOVVENV) $(NODEDIR) .pytest_cache .mypy_cache .ruff_cache .aws-sam
