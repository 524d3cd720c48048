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

.PHONY: install repro test test-fast lint format bench report seeds plots lock clean

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
	  --seeds metrics/seeds.json --per-class metrics/evaluate/per_class_test.csv \
	  --curves metrics/train/plots/loss.tsv metrics/train/plots/accuracy.tsv \
	  --images report --out report.md

# Train the committed params with K seeds (default 5) in DVC's queue, one at a time, and
# write their mean ± std to metrics/seeds.json (commit it; `make report` compares it).
seeds: $(STAMP)
	$(BIN)/python scripts/seeds.py --k $(or $(K),5) --out metrics/seeds.json

# `dvc plots diff` (workspace against REV, default HEAD) as one page that works offline:
# DVC's page loads Vega from a CDN, so this inlines pinned copies (npm tarballs fetched
# once into .vega/, checked against scripts/vega.sha256) through --html-template.
VEGA_DIR := .vega
VEGA_PACKAGES := vega@5.33.1 vega-lite@5.23.0 vega-embed@6.29.0

$(VEGA_DIR)/template.html: scripts/plots_template.py scripts/vega.sha256 $(STAMP)
	mkdir -p $(VEGA_DIR)
	cd $(VEGA_DIR) && npm pack --silent $(VEGA_PACKAGES) > /dev/null
	cd $(VEGA_DIR) && for tarball in *.tgz; do \
	  tar -xzf $$tarball --wildcards --strip-components=2 'package/build/*.min.js'; done
	cd $(VEGA_DIR) && sha256sum --quiet -c $(CURDIR)/scripts/vega.sha256
	$(BIN)/python scripts/plots_template.py --js-dir $(VEGA_DIR) --out $@

plots: $(VEGA_DIR)/template.html
	$(BIN)/dvc plots diff $(REV) --html-template $(VEGA_DIR)/template.html -o dvc_plots

# Re-pin the whole environment from what .venv holds now.
lock: $(STAMP)
	$(BIN)/python -m pip freeze --exclude-editable | grep -v '^torch==' | \
	  { echo 'torch==2.13.0'; cat; } | LC_ALL=C sort -f > requirements.lock.new
	mv requirements.lock.new requirements.lock

clean:
	rm -rf $(VENV) $(VEGA_DIR) .pytest_cache .ruff_cache
