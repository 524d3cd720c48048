# The README's two commands: `make repro` (set up, run the pipeline) and `make test`
# (set up, lint, run the tests). Both create .venv and install the pinned
# environment on first use; later runs skip the install (the stamp is newer
# than requirements.lock and pyproject.toml).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Stage commands in dvc.yaml say `python`: make it the venv's.
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: install repro test test-fast lint format bench report seeds lock clean

install: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -r requirements.lock
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

repro: $(STAMP)
	$(BIN)/dvc repro

test: lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Unit tests only: no dvc, torchrun or stage subprocesses (under a minute).
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not e2e and not slow" $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run_all $(BENCH_ARGS)

# A Markdown comparison of the workspace against REV for a pull request (default: the
# merge-base with main off main; on main HEAD if params/metrics changed, else HEAD~1).
report: $(STAMP)
	$(BIN)/python scripts/report.py $(if $(REV),--rev $(REV)) --params params.yaml \
	  --metrics metrics/evaluate.json metrics/train/metrics.json \
	  --figures metrics/evaluate --predictions metrics/evaluate/predictions_test.csv \
	  --seeds metrics/seeds.json --out report.md

# Train the committed params with K seeds (default 5) in DVC's queue, one at a time, and
# write their mean ± std to metrics/seeds.json (commit it; `make report` compares it).
seeds: $(STAMP)
	$(BIN)/python scripts/seeds.py --k $(or $(K),5) --out metrics/seeds.json

# Re-pin the whole environment from what .venv holds now.
lock: $(STAMP)
	$(BIN)/python -m pip freeze --exclude-editable | grep -v '^torch==' | \
	  { echo 'torch==2.13.0'; cat; } | LC_ALL=C sort -f > requirements.lock.new
	mv requirements.lock.new requirements.lock

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
