# mripipe — every target bootstraps .venv (from requirements.lock) when it is missing or stale.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PKG := $(VENV)/.package
CORES ?= 2
export MLFLOW_DISABLE_TELEMETRY := true
export DVC_NO_ANALYTICS := 1
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION := false
export DO_NOT_TRACK := 1
# UTF-8 whatever locale a library sets (C locale elsewhere would decode files as ASCII)
export PYTHONUTF8 := 1
# rules call the `mripipe` console script: put the environment's bin first on PATH
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: run reproduce publish screenshots test test-unit e2e ui bench gpu-check lint lint-workflow version lock clean test-slurm tracking-server

$(STAMP): requirements.lock
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' || \
	  { echo "mripipe needs Python >= 3.11; '$(PYTHON)' is $$($(PYTHON) --version 2>&1). Set PYTHON=/path/to/python3.11 and retry." >&2; exit 1; }
	@echo ">> building $(VENV) (one pip command: requirements.lock + mripipe)"
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.lock -e . 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
	touch $(STAMP) $(PKG)

# pyproject.toml changed but not the lock (e.g. a new console script): refresh the package only
$(PKG): pyproject.toml | $(STAMP)
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $(PKG)

run: $(STAMP) $(PKG)  ## phantom -> preprocess -> split -> patches -> search -> evaluate -> report
	$(BIN)/snakemake --cores $(CORES) --keep-going --printshellcmds
	$(BIN)/snakemake --cores $(CORES) --report results/report.html
	@$(BIN)/mripipe where

reproduce: $(STAMP) $(PKG)  ## re-run this commit from a clean state in a temporary copy; compare with published/phantom/summary.json
	$(BIN)/mripipe reproduce --cores $(CORES)

publish: $(STAMP) $(PKG)  ## deliberately regenerate published/phantom/summary.json from a clean run of this commit
	$(BIN)/mripipe publish --cores $(CORES)
	@echo "review and commit published/phantom/summary.json"

# Chromium (Debian's package): docs/screenshots.py installs it when missing (root or sudo -n), as
# the browser test of `make test` does (tests/e2e/test_ui_browser.py, skipped where it cannot)
RUN ?= .
screenshots: $(STAMP) $(PKG)  ## docs/img/*.png: the links of `mripipe ui` on a finished run (RUN=folder holding its mlflow.db)
	$(BIN)/python docs/screenshots.py --run $(RUN)

# two pytest-xdist workers (one per core), a test module at a time; the modules reading one e2e
# DAG run stay on one worker (tests/conftest.py)
test: $(STAMP) $(PKG)  ## unit tests + the e2e DAG runs on tiny configs
	$(BIN)/pytest -q -n 2 --dist loadscope tests

# the optional `cluster` extra (the SLURM executor plugin), installed once into the same venv
CLUSTER := $(VENV)/.cluster
$(CLUSTER): pyproject.toml | $(STAMP)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[cluster]' 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
	touch $(CLUSTER)

test-slurm: $(STAMP) $(PKG) $(CLUSTER)  ## the tiny e2e config on a real single-node SLURM cluster (root, Debian)
	$(BIN)/pytest -q -m cluster tests/cluster -o log_cli=true --log-cli-level=INFO

tracking-server: $(STAMP) $(PKG)  ## one MLflow server for parallel trials (tracking.uri: http://127.0.0.1:5000)
	$(BIN)/mripipe tracking-server --backend-store-uri sqlite:///mlflow.db --artifacts mlartifacts --host 127.0.0.1 --port 5000

test-unit: $(STAMP) $(PKG)
	$(BIN)/pytest -q tests/unit

e2e: $(STAMP) $(PKG)
	$(BIN)/pytest -q tests/e2e

ui: $(STAMP) $(PKG)  ## MLflow UI on the runs of this checkout; prints (and opens) the links comparing the trials
	$(BIN)/mripipe ui --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1 --port 5000

# the CUDA path measured on a GPU from a finished run's cached scans (needs torch + MONAI only there)
PATCHES ?= results/patches
MODEL ?= results/lesion_seg/model
gpu-check: $(STAMP) $(PKG)  ## bench/gpu_check.py: AMP step times, workers, determinism, GPU inference, trials per GPU
	$(BIN)/python bench/gpu_check.py --patches $(PATCHES) --model $(MODEL) --out gpu_check.json

bench: $(STAMP) $(PKG)
	@for b in bench/bench_*.py; do echo ">> $$b"; $(BIN)/python $$b || exit 1; done

# `snakemake --lint` for the default and the e2e config: any finding fails, but the one asking each
# rule for a conda environment or container (the rules run in this .venv; DEPLOYMENT_LINT in the test)
lint-workflow: $(STAMP) $(PKG)  ## snakemake --lint (default and e2e config)
	$(BIN)/pytest -q tests/unit/test_workflow.py::test_snakemake_lint_is_clean_but_for_the_deployment_lint

lint: $(STAMP) $(PKG) lint-workflow  ## snakemake --lint, ruff, mypy
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy src

version: $(STAMP) $(PKG)  ## record the outputs of `make run` in dvc.lock and push them to the DVC remote
	$(BIN)/dvc commit --force pipeline
	$(BIN)/dvc push
	@echo "versioned: dvc.lock (commit it with git); data and models in the DVC remote (.dvc-remote/)"

lock:  ## regenerate requirements.lock from a fresh resolve of pyproject.toml
	rm -rf /tmp/mripipe-lock && $(PYTHON) -m venv /tmp/mripipe-lock
	/tmp/mripipe-lock/bin/pip install --quiet . '.[dev]'
	/tmp/mripipe-lock/bin/pip freeze --exclude mripipe | sed -E 's/^torch==([0-9.]+)\+.*/torch==\1/' > requirements.lock

clean:
	rm -rf results/* .snakemake mlflow.db mlartifacts
	git checkout -- results/README.md
