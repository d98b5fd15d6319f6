# make demo: build a venv, install, run the end-to-end demo. make test: the test suite.
# make lint / make typecheck: ruff and mypy (configured in pyproject.toml). make test-fast: skips slow tests.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install test test-fast lint typecheck demo bench clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# the local CPU build; pinned first so nothing pulls a CUDA build
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -c constraints.txt -e ".[test]"
	touch $(STAMP)

# both: one single-threaded worker per core; loadfile keeps a file on one worker (the README's blocks run in
# order in one workspace) and, not reordered, the files of the slow tests start first (tests/conftest.py).
# What counts as slow: pyproject.toml, markers.
DIST := -n auto --dist loadfile --no-loadscope-reorder
test: install
	OMP_NUM_THREADS=1 $(PY) -m pytest -q $(DIST)

# the edit loop: every test but the slow ones (stops at the first failure)
test-fast: install
	OMP_NUM_THREADS=1 $(PY) -m pytest -x -q -m "not slow" $(DIST)

lint: install
	$(VENV)/bin/ruff check src tests benchmarks

typecheck: install
	$(VENV)/bin/mypy src/audiotune

demo: install
	PATH="$(abspath $(VENV))/bin:$$PATH" bash examples/demo.sh

bench: install
	$(PY) benchmarks/data_pipeline.py

clean:
	rm -rf $(VENV) demo_out .pytest_cache .mypy_cache .ruff_cache
