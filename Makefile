# Quick start: `make demo` and `make test` each set up .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint setup report clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch/torchvision first, pinned to the builds that lie on this machine's disk (no other torch build is pulled).
	$(BIN)/pip install -q "torch==2.14.1" "torchvision==0.29.1"
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/bench demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

# reports/ from results/ alone (no local runs), as the committed copy is checked byte for byte by the tests.
report: $(STAMP)
	$(BIN)/bench report --runs-dir .no-runs

lint: $(STAMP)
	$(BIN)/ruff check bench models baselines tests
	$(BIN)/ruff format --check bench models baselines tests

clean:
	rm -rf runs .cache .pytest_cache
