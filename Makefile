# Two newcomer commands: `make demo` and `make test`. Both build .venv from nothing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
# Re-install when the package metadata or the pinned versions change.
STAMP := $(VENV)/.installed

export OMP_NUM_THREADS ?= 1
export MPLBACKEND ?= Agg

.PHONY: venv demo test lint bench clean

venv: $(STAMP)

$(STAMP): setup.cfg pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/demo.py

test: $(STAMP)
	$(BIN)/python -m pytest -q
	$(BIN)/ruff check ase_flatten tests examples benchmarks
	$(BIN)/ruff format --check ase_flatten tests examples benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_clustering.py

clean:
	rm -rf $(VENV) examples/data examples/output
