# Two commands from a fresh clone (see README):  make train   |   make test
# Both create .venv if missing, install torch (CPU build by default) and then the project.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
EXTRAS ?= all
BIN := $(VENV)/bin
STAMP := $(VENV)/.lit_sr-installed
# Extra Hydra overrides for `make train`, e.g. make train ARGS="trainer=ddp_sim"
ARGS ?=
PYTEST_ARGS ?=
# make test runs the suite in this many pytest-xdist processes (one torch thread each; tests/conftest.py)
TEST_WORKERS ?= 2
# make bench QUICK=1: the same table with smaller sizes (under 5 minutes on 2 cores)
QUICK ?=

.PHONY: setup train test bench figures clean-outputs

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first: the project's unpinned torch>= requirement then keeps this build (no CUDA download)
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $(STAMP)

setup: $(STAMP)

train: setup
	$(BIN)/python run.py $(ARGS)

test: setup
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist worksteal $(PYTEST_ARGS)

bench: setup
	QUICK=$(QUICK) $(BIN)/python benchmarks/run_all.py

# Regenerate every README figure and results table from runs on this machine (docs/figures/); the drivers
# are reports/<domain>/figures.py, a layer above the library (not installed: run from the repository root)
figures: setup
	for f in reports/*/figures.py; do \
		d=$$(basename $$(dirname $$f)); \
		echo "== $$d"; $(BIN)/python -m reports.$$d.figures --out docs/figures || exit 1; \
	done

clean-outputs:
	rm -rf outputs multirun
