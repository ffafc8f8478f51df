# Dev setup pins the local CPU torch wheel: an unpinned torch pulls GBs of CUDA packages.
PYTHON ?= python3
VENV ?= .venv
TORCH_VERSION ?= 2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(TORCH_VERSION)

.PHONY: setup test demo bench detection clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q torch==$(TORCH_VERSION)
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

# lint-imports: the folders are the layers (pyproject.toml [tool.importlinter])
test: $(STAMP)
	$(BIN)/lint-imports --no-cache
	$(BIN)/python -m pytest -n 2 -q

demo: $(STAMP)
	$(BIN)/python examples/demo.py

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py

detection: $(STAMP)
	$(BIN)/python benchmarks/detection.py

clean:
	rm -rf $(VENV) build *.egg-info
