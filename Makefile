# Quick start: `make demo` and `make test` each set up .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint setup report clean

$(STAMP): pyproject.toml
	# torch's CUDA build with its libraries is ~6.2 GiB in the venv: say so before pip fails half-way on a full disk.
	@test -d $(VENV) || $(PYTHON) -c "import shutil, sys; free = shutil.disk_usage('$(dir $(abspath $(VENV)))').free / 2**30; \
	sys.exit(0 if free >= 6.0 else f'make: $(VENV) needs about 6.2 GiB of disk (torch with its CUDA libraries) and only {free:.1f} GiB is free there; free some or set VENV to a folder on a larger disk.')"
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --no-cache-dir --upgrade pip
	# torch/torchvision first, pinned to the builds that lie on this machine's disk (no other torch build is pulled).
	# --no-cache-dir: pip's cache would hold a second copy of every download on the same disk.
	$(BIN)/pip install -q --no-cache-dir "torch==2.14.1" "torchvision==0.29.1"
	$(BIN)/pip install -q --no-cache-dir -e ".[dev]"
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
