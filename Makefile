# The two commands of the README:  `make run`  (the whole series)  and  `make test`.
# Both build .venv on first use: pinned packages from constraints.txt (CPU torch 2.13.0).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
ARGS ?=
export OMP_NUM_THREADS ?= 2
export MPLBACKEND ?= Agg

.PHONY: run book test lint bench install clean

$(BIN)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev,bench,serve,parquet,book]"
	touch $@

install: $(BIN)/.installed

## Execute every notebook with papermill and write runs/latest/results.{csv,md}
run: $(BIN)/.installed
	$(BIN)/python -m mfutils.series $(ARGS)

## The executed notebooks of the last `make run` as a static web book: runs/latest/book/
book: $(BIN)/.installed
	$(BIN)/python -m mfutils.book --run runs/latest

## ruff check and format (what .pre-commit-config.yaml runs) and the README tables against their JSON
lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python benchmarks/readme.py --check

## ruff check and format, the unit tests, then every notebook at its defaults under nbval
test: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest --durations=15 tests
	$(BIN)/python -m pytest --durations=16 --nbval-lax --nbval-current-env -p no:cacheprovider notebooks

## Explicit-model benchmark against Surprise on the same folds
bench: $(BIN)/.installed
	$(BIN)/python benchmarks/explicit.py --peers

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
