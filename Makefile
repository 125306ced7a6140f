# `make run` and `make test` bootstrap .venv from nothing (DESIGN.md §7).
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0   # the local CPU wheel; an unpinned torch pulls GBs of CUDA
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/secagg run
	@echo "To call secagg yourself: source $(VENV)/bin/activate"

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest

bench: $(STAMP)
	$(BIN)/secagg bench

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
