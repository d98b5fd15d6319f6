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

test: install
	$(PY) -m pytest -q

# the edit loop: every test but the slow ones, one single-threaded worker per core
test-fast: install
	OMP_NUM_THREADS=1 $(PY) -m pytest -x -q -m "not slow" -n auto

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
