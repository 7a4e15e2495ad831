# gpuparley developer entry points. Every target installs what it needs first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test test-fast cluster-build spin bench lint clean

install: $(STAMP)

$(STAMP): pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,train,ray]'
	touch $(STAMP)

# The real Kubernetes components the cluster tests run against; cached outside the repo
# (~/.cache/gpuparley), so a warm rebuild takes under a second.
cluster-build: install
	$(BIN)/gpuparley cluster build

# The spin model checker the protocol tests run (Debian's package, unpacked into the same cache;
# no root needed; a spin on PATH where there is no apt).
spin: install
	$(BIN)/gpuparley protocol spin

demo: install
	$(BIN)/gpuparley demo

test: install cluster-build spin
	$(BIN)/python -m pytest -q

# Everything except the tests that need the real control planes.
test-fast: install spin
	$(BIN)/python -m pytest -q -m "not cluster"

bench: install
	$(BIN)/python benchmarks/sim_throughput.py
	$(BIN)/python benchmarks/env_throughput.py
	$(BIN)/python benchmarks/eval_openb.py
	$(BIN)/python benchmarks/policy_latency.py
	$(BIN)/python benchmarks/control_plane_cost.py
	$(BIN)/python benchmarks/ray_scaling.py

# Style, the layer contracts (.importlinter: each layer imports only from below; the runtime
# and the cluster side never import the training stack) and types of envs and policy.
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy -p gpuparley.envs -p gpuparley.policy

clean:
	rm -rf $(VENV) build *.egg-info
