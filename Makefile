# Two newcomer commands: `make demo` and `make test`. Both build .venv from nothing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
# Re-install when the package metadata or the pinned versions change.
STAMP := $(VENV)/.installed

export OMP_NUM_THREADS ?= 1
export MPLBACKEND ?= Agg

.PHONY: venv demo test docs lint bench suite clean

venv: $(STAMP)

$(STAMP): setup.cfg pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	# torch first, from the local CPU wheel (any other torch is a multi-GB CUDA build)
	$(PIP) install --quiet -c constraints.txt torch==2.13.0
	$(PIP) install --quiet -c constraints.txt -e '.[test,all,docs]'
	# schnetpack 2.2 declares Python>=3.12 and older releases break with torch 2.13:
	# its dependencies come with the `schnet` extra, the package itself without them.
	$(PIP) install --quiet -c constraints.txt --no-deps --ignore-requires-python \
		schnetpack==2.2.0
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/demo.py

test: $(STAMP)
	$(BIN)/python -m pytest -q
	$(BIN)/ruff check ase_flatten md_validation tests examples benchmarks
	$(BIN)/ruff format --check ase_flatten md_validation tests examples benchmarks
	$(MAKE) docs

# the documentation site, offline, warnings as errors: docs/_build/html/index.html
docs: $(STAMP)
	$(BIN)/sphinx-build -W --keep-going -q -b html docs docs/_build/html

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_clustering.py

# the quick benchmark suite (BENCHMARKS.md) on the demo's ethanol data, made if missing
suite: $(STAMP)
	$(BIN)/python benchmarks/suite.py --size quick

clean:
	rm -rf $(VENV) examples/data examples/output docs/_build
