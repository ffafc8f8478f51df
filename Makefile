# Dev setup pins the local CPU torch wheel: an unpinned torch pulls GBs of CUDA packages.
PYTHON ?= python3
VENV ?= .venv
TORCH_VERSION ?= 2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(TORCH_VERSION)

# The peers measured beside us (make detection, make bench) live in their own venv: never our dependency.
PEERS_VENV ?= .venv-peers
PEERS_STAMP := $(PEERS_VENV)/.installed-$(TORCH_VERSION)-frameworks
PEERS := pytest-torch==1.1.1 TrainParity==0.1.0 ckpt-chaos==0.1.8

.PHONY: setup test demo bench detection mutation peers clean

setup: $(STAMP)

# pip prints what it collects and installs (a first setup takes minutes: a person should see it move)
$(STAMP): pyproject.toml
	@echo "setting up $(VENV): the CPU wheel of torch $(TORCH_VERSION), then pytest-ckpt with its test extras (first run only)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --progress-bar on torch==$(TORCH_VERSION)
	$(BIN)/python -m pip install --progress-bar on -e '.[test]'
	touch $@

# lint-imports: the folders are the layers (pyproject.toml [tool.importlinter])
test: $(STAMP)
	$(BIN)/lint-imports --no-cache
	$(BIN)/python -m pytest -n 2 -q

demo: $(STAMP)
	$(BIN)/python examples/demo.py

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py

detection: $(STAMP) $(PEERS_STAMP)
	$(BIN)/python benchmarks/detection.py
	PEERS_PYTHON=$(PEERS_VENV)/bin/python $(BIN)/python benchmarks/resume_detection.py
	$(BIN)/python benchmarks/fuzz.py
	PEERS_PYTHON=$(PEERS_VENV)/bin/python $(BIN)/python benchmarks/interrupted.py
	PEERS_PYTHON=$(PEERS_VENV)/bin/python $(BIN)/python benchmarks/trainers_detection.py
	$(BIN)/python benchmarks/mutation.py

# named mutants at the verdict points, each run against the tests that should kill it (README table)
mutation: $(STAMP)
	$(BIN)/python benchmarks/mutation.py

peers: $(PEERS_STAMP)

$(PEERS_STAMP):
	$(PYTHON) -m venv $(PEERS_VENV)
	$(PEERS_VENV)/bin/python -m pip install -q torch==$(TORCH_VERSION)
	$(PEERS_VENV)/bin/python -m pip install -q numpy transformers accelerate lightning pytest $(PEERS)
	touch $@

clean:
	rm -rf $(VENV) $(PEERS_VENV) build *.egg-info
