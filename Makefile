# Two entry points matter: `make demo` (the main job) and `make test` (every test).
# Both create the virtualenv on first use, so they work on a fresh clone.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

.PHONY: demo test lint typecheck unit bench vcluster-up vcluster-down clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-* && touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m autoscaler demo $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest -m "not integration and not e2e" -q

# Every test: lint, types, unit, property, integration (real Valkey), e2e (real Kubernetes API server).
# The virtual cluster is stopped afterwards only if this run started it: one that was already up
# may serve other test sessions (deploy/virtual-cluster/README.md: they share it).
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	state=$${VCLUSTER_STATE:-/tmp/startup-autoscaler-vcluster}; \
	if kubectl --kubeconfig "$$state/kubeconfig" --request-timeout=5s get --raw=/readyz >/dev/null 2>&1; \
	then echo "make test: the virtual cluster in $$state is already up: using it, leaving it up"; up=shared; \
	else up=ours; fi; \
	bash deploy/virtual-cluster/up.sh || exit $$?; \
	E2E_REQUIRED=1 KUBECONFIG_E2E=$$state/kubeconfig $(BIN)/pytest -q; rc=$$?; \
	if [ $$up = ours ]; then bash deploy/virtual-cluster/down.sh; fi; exit $$rc

# Performance goals live here, not in timed tests; results are recorded in benchmarks/RESULTS.md.
bench: $(STAMP)
	$(BIN)/python benchmarks/replay_1m.py
	$(BIN)/python benchmarks/decision_latency.py

vcluster-up:
	bash deploy/virtual-cluster/up.sh

vcluster-down:
	bash deploy/virtual-cluster/down.sh

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
