# Two set-up commands: `make demo` and `make test`. Both create .venv and install the pinned, tested set.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test install bench clean figures

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# CPU torch first from the exact pin (a loose range would pull the multi-GB CUDA build).
	$(BIN)/python -m pip install -q -c constraints.txt torch
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/repanalysis demo --out figures/demo

# figures/*.png and .pdf from the demo's Dumps, by executing figures/figures.ipynb (nbclient); runs the demo first
# when its Dumps are missing. Other Dumps: $(BIN)/python figures/run_notebook.py --dumps D --checkpoints C --data A --out O
figures: $(STAMP)
	ls -d figures/demo/dumps/*_test >/dev/null 2>&1 || $(BIN)/repanalysis demo --out figures/demo
	$(BIN)/python figures/run_notebook.py

test: $(STAMP)
	$(BIN)/lint-imports    # the floors of ../shared/DESIGN.md (contracts in pyproject.toml)
	$(BIN)/python -m pytest -q

# Every benchmark at full size (the README's figures); `make bench BENCH_ARGS=--quick` for the seconds-long smoke
# run that tests/test_benchmarks.py makes. Each prints an `agree: ...` line and exits non-zero if the sides disagree.
bench: $(STAMP)
	for f in benchmarks/[!_]*.py; do echo "== $(BIN)/python $$f $(BENCH_ARGS)"; $(BIN)/python $$f $(BENCH_ARGS) || exit 1; done

clean:
	rm -rf $(VENV) runs .pytest_cache
