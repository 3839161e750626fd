# Moment Balance Sync: every habit of the team is a target here. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# The newest Python >= 3.11 on this machine, 3.13 (Lambda's runtime) first. pyenv shims answer
# `command -v` even when that version is not active, so each candidate is actually run.
PYTHON ?= $(shell for candidate in python3.13 "$$(pyenv prefix 3.13.0 2>/dev/null)/bin/python3.13" \
	python3.12 python3.11 python3; do \
	"$$candidate" -c 'import sys; assert sys.version_info >= (3, 11)' >/dev/null 2>&1 \
	&& { "$$candidate" -c 'import sys; print(sys.executable)'; break; }; done)
VENV := .venv
SAM_VENV := .venv-sam
BIN := $(VENV)/bin
SAM := $(SAM_VENV)/bin/sam
CHECKOV_VENV := .venv-checkov
export SAM_CLI_TELEMETRY := 0
export AWS_DEFAULT_REGION ?= af-south-1
# The shared package and the local tooling, importable as Lambda and the local stack see them.
export PYTHONPATH := $(CURDIR)/layers/shared:$(CURDIR)/local

.PHONY: help
help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-18s %s\n", $$1, $$2}'

$(BIN)/.installed: requirements-dev.txt constraints.txt layers/shared/requirements.txt
	@test -n "$(PYTHON)" || { echo "error: no Python >= 3.11 found (3.13 preferred)"; exit 1; }
	@echo "==> creating $(VENV) with $(PYTHON)"
	@$(PYTHON) -m venv $(VENV)
	@echo "==> installing ~90 pinned packages into $(VENV) (the first time: several minutes on 2 cores; pip shows each)"
	@$(BIN)/python -m pip install --disable-pip-version-check --progress-bar on -r requirements-dev.txt -c constraints.txt
	@touch $@

# The moment-sync command and the ledger client, editable (an existing .venv gets them too).
$(BIN)/moment-sync: $(BIN)/.installed clients/python/pyproject.toml
	@echo "==> installing this repository (the moment-sync command) and its client, editable"
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e . -e clients/python
	@touch $@

$(SAM_VENV)/bin/.installed: requirements-sam.txt
	@echo "==> creating $(SAM_VENV) (SAM CLI pins its own boto3, so it lives apart; a minute or two the first time)"
	@$(PYTHON) -m venv $(SAM_VENV)
	@$(SAM_VENV)/bin/python -m pip install --disable-pip-version-check --progress-bar on -r requirements-sam.txt
	@touch $@

$(CHECKOV_VENV)/bin/.installed: requirements-checkov.txt
	@echo "==> creating $(CHECKOV_VENV) (checkov pins its own boto3 and networkx, so it lives apart)"
	@$(PYTHON) -m venv $(CHECKOV_VENV)
	@$(CHECKOV_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-checkov.txt
	@touch $@

.PHONY: venv
venv: $(BIN)/.installed $(BIN)/moment-sync ## Create the development virtual environment (pinned), with moment-sync

.PHONY: lint
lint: venv ## ruff (lint and format) and mypy --strict on the shared package
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

.PHONY: format
format: venv ## Format and auto-fix with ruff
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# pytest-xdist: one worker per core (PYTEST_WORKERS=0 for one process, e.g. to read a failure's order);
# worksteal: an idle worker takes tests queued for the other. The contract fuzzing runs alone, without xdist:
# schemathesis gives its operations one node id, by which xdist tells a worker what to run.
CONTRACT_FUZZ = tests/integration/test_api_contract_fuzz.py
PYTEST_WORKERS ?= auto

.PHONY: unit
unit: venv ## Unit and integration tests (moto, in-process; loopback only), the link check, client and CLI tests
	@mkdir -p build
	PYTEST_SUMMARY_FILE=build/pytest-summary.txt $(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist worksteal \
		--ignore $(CONTRACT_FUZZ)
	PYTEST_SUMMARY_FILE=build/pytest-summary-fuzz.txt $(BIN)/python -m pytest -p no:xdist $(CONTRACT_FUZZ)

.PHONY: template-check
template-check: venv $(SAM_VENV)/bin/.installed ## sam validate --lint, and cfn-lint over the samtranslator output
	$(SAM) validate --lint --template template.yaml
	$(BIN)/python tools/translate_template.py template.yaml build/template.translated.json
	$(BIN)/cfn-lint build/template.translated.json

# Every finding is fixed or skipped on its resource with a reason (Metadata: checkov: skip:). The
# translated template shows what SAM generates (roles, permissions, the event source mapping).
# Offline: no guideline download (BC_SKIP_MAPPING, --skip-download); nothing leaves the machine.
.PHONY: security-check
security-check: venv $(CHECKOV_VENV)/bin/.installed ## checkov over template.yaml and the translated template: no finding without a reason
	$(BIN)/python tools/translate_template.py template.yaml build/template.translated.json
	BC_SKIP_MAPPING=TRUE $(CHECKOV_VENV)/bin/checkov --quiet --compact --skip-download \
		--framework cloudformation -f template.yaml -f build/template.translated.json

.PHONY: test
test: lint unit template-check security-check ## The whole gate: what CI runs
	@echo "make test: all checks passed: ruff, ruff format, mypy --strict; pytest $$(cat build/pytest-summary.txt 2>/dev/null || echo '(no summary)'), then the contract fuzzing $$(cat build/pytest-summary-fuzz.txt 2>/dev/null || echo '(no summary)') (unit, integration, soak, Markdown links, client, CLI); sam validate --lint, cfn-lint on the translated template; checkov on both templates"

# The functions' and the layer's processor (the template's Architecture parameter): x86_64 for sam
# local on an x86_64 machine. Exported: the layer's own Makefile picks its wheels' platform from it.
export ARCHITECTURE ?= arm64

.PHONY: build
build: $(SAM_VENV)/bin/.installed ## sam build without a container (ARCHITECTURE=x86_64 for sam local on x86_64; needs python3.13, taken from pyenv if there)
	PATH="$(dir $(PYTHON)):$$PATH" $(SAM) build --template template.yaml \
		--parameter-overrides Architecture=$(ARCHITECTURE)

.PHONY: demo
demo: venv ## Show the system working on this machine, no AWS account or Docker needed
	$(BIN)/python -m local_stack.demo

.PHONY: local
local: venv ## The whole system on this machine until Ctrl-C: API :3000, Moment sandbox :4010, moto :5000
	$(BIN)/python -m local_stack

.PHONY: soak
soak: venv ## 10,000 webhooks through the local stack under faults, then the verdict (SOAK_ARGS="--seed 7 --webhooks 2000")
	$(BIN)/python -m soak $(SOAK_ARGS)

# The simulation imports the handlers as Lambda does (each function's folder) and the test support.
SIM_PYTHONPATH := $(CURDIR)/layers/shared:$(CURDIR)/local:$(CURDIR)/tests:$(shell ls -d $(CURDIR)/functions/* | paste -sd: -)

.PHONY: simulate
simulate: venv ## The deterministic simulation as long as asked (SIM_SEEDS, SIM_STEPS, SIM_EXAMPLES; SIM_SEED replays)
	SIM_SEED=$(SIM_SEED) SIM_SEEDS=$(SIM_SEEDS) SIM_STEPS=$(SIM_STEPS) SIM_EXAMPLES=$(SIM_EXAMPLES) SIM_WITHOUT=$(SIM_WITHOUT) \
		SIM_BURSTS=$(SIM_BURSTS) SIM_TRACE=$(SIM_TRACE) \
		PYTHONPATH=$(SIM_PYTHONPATH) $(BIN)/python -W ignore -m simulation

.PHONY: mutants
mutants: venv ## Each patch in tests/simulation/mutants/ on a scratch copy: does the simulation find it? (MUTANTS="name ...")
	PYTHONPATH=$(SIM_PYTHONPATH) $(BIN)/python -m simulation.mutants $(MUTANTS)

.PHONY: bench
bench: venv ## Benchmarks as ratios against baselines measured in the same run -> benchmarks/results.json; timed goals on the median of 5 runs, exit 1 if one is missed (BENCH_ARGS="--quick" or "--only receiver"; BENCH_RUNS=1)
	$(BIN)/python -m benchmarks $(BENCH_ARGS)

.PHONY: sign-webhook-event
sign-webhook-event: venv ## Sign the sample webhook afresh into build/events/moment-webhook.json (events/ is left as it is)
	$(BIN)/python tools/sign_webhook_event.py

# `sam local invoke` (Docker is yours) with events/ and events/env.json, which point the functions at
# `make local`'s moto and Moment sandbox from inside the container. Made-up credentials, so nothing
# reaches a real account. On x86_64: make invoke-... ARCHITECTURE=x86_64 (build and run alike).
SAM_LOCAL_ARGS ?= --add-host host.docker.internal:host-gateway
SAM_INVOKE = env -u AWS_PROFILE -u AWS_SESSION_TOKEN AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing \
	$(SAM) local invoke --env-vars events/env.json --parameter-overrides Architecture=$(ARCHITECTURE) \
	--region $(AWS_DEFAULT_REGION) $(SAM_LOCAL_ARGS)

.PHONY: invoke-webhook-receiver
invoke-webhook-receiver: sign-webhook-event build ## sam local invoke the receiver with a freshly signed webhook
	$(SAM_INVOKE) WebhookReceiverFunction -e build/events/moment-webhook.json

.PHONY: invoke-ledger-api
invoke-ledger-api: build ## sam local invoke the ledger API (PUT /customers/UCR1001)
	$(SAM_INVOKE) LedgerApiFunction -e events/ledger_api/put-customer.json

.PHONY: invoke-reconciler
invoke-reconciler: build ## sam local invoke the reconciler with a DynamoDB stream batch
	$(SAM_INVOKE) ReconcilerFunction -e events/reconciler/stream-batch.json

.PHONY: invoke-balance-pusher
invoke-balance-pusher: build ## sam local invoke the balance pusher as its schedule does
	$(SAM_INVOKE) BalancePusherFunction -e events/balance_pusher/scheduled.json

.PHONY: invoke-redrive
invoke-redrive: build ## sam local invoke the re-drive as its schedule does
	$(SAM_INVOKE) RedriveFunction -e events/redrive/scheduled.json

.PHONY: invoke-daily-reconcile
invoke-daily-reconcile: build ## sam local invoke the daily reconciliation as its schedule does
	$(SAM_INVOKE) DailyReconcileFunction -e events/daily_reconcile/scheduled.json

.PHONY: sam-local-check
sam-local-check: venv $(SAM_VENV)/bin/.installed ## Every function under sam local in Docker against the local stack, and start-api (needs Docker; SAM_LOCAL_SETUP=1 as root installs it)
	PATH="$(dir $(PYTHON)):$$PATH" SAM=$(SAM) $(BIN)/python tools/sam_local_check.py

.PHONY: cli
cli: venv ## The operator CLI, e.g. make cli ARGS="--stack moment-balance-sync-dev verify"
	$(BIN)/python -m moment_sync $(ARGS)

.PHONY: links
links: venv ## Check every relative link, anchor and Markdown file named in the repository (no network)
	$(BIN)/python tools/check_markdown_links.py

.PHONY: lock
lock: ## Re-pin every transitive dependency into constraints.txt from a fresh venv
	rm -rf /tmp/moment-sync-lock && $(PYTHON) -m venv /tmp/moment-sync-lock
	/tmp/moment-sync-lock/bin/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	/tmp/moment-sync-lock/bin/pip freeze --exclude-editable | grep -v '^-e' > constraints.txt

.PHONY: clean
clean: ## Remove build output and caches (keeps the virtual environments)
	rm -rf .aws-sam build .pytest_cache .ruff_cache .mypy_cache .hypothesis
	find . -name __pycache__ -type d -prune -not -path './.venv*' -exec rm -rf {} +
