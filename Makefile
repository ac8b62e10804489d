# The two commands of the README, plus the Dagster UI, the fast tests and the docs.
#   make run        set up (when needed) and materialize the whole asset graph on the embedded defaults
#   make test       set up (when needed, Chromium for the UI test included) and run the test suite
#                   (every tier: what CI runs)
#   make dev        set up (when needed) and open the Dagster UI
#   make test-fast  set up (when needed) and run the unit tier only (pytest -m unit)
#   make docs       regenerate docs/reference/configuration.md and build the site strictly into site/
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
# Reinstall only when the project's requirements change: re-running is fast.
STAMP := $(VENV)/.installed

export RECALL_PIPELINE_HOME ?= $(CURDIR)/.recall
export DAGSTER_HOME ?= $(RECALL_PIPELINE_HOME)/dagster
export HF_HUB_OFFLINE := 1
export HF_HUB_DISABLE_PROGRESS_BARS := 1
export TOKENIZERS_PARALLELISM := false
# glibc returns every large freed array to the kernel and faults it in again on the next one;
# on a VM where page faults are dear that was 166 s of system time in a 9-minute bundled run
# (docs/scaling.md, "Keeping freed memory"). Keep freed memory in the process instead: same figures,
# 7m19s, peak RSS 2.29 GiB instead of 2.51 on that machine.
export MALLOC_MMAP_THRESHOLD_ ?= 4294967296
export MALLOC_TRIM_THRESHOLD_ ?= 68719476736

.PHONY: run test test-fast dev docs setup chromium clean

setup: $(STAMP)

# A setup killed while creating the venv leaves python without pip: start that venv again.
$(STAMP): pyproject.toml
	@if [ -e $(VENV) ] && ! { [ -x $(BIN)/python ] && [ -x $(BIN)/pip ]; }; then \
	  echo "$(VENV) is incomplete (a setup was interrupted): removing it and creating it again"; rm -rf $(VENV); fi
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check torch==2.13.0
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

run: $(STAMP)
	$(BIN)/recall-pipeline run

# Two workers, a test file each at a time (a module's fixtures are built once): the system tier
# waits on processes and services much of its time, and the other worker uses that time.
PYTEST_WORKERS ?= 2
# One thread per test process (torch, BLAS, FAISS, and the runs the tests start): with two workers
# on two cores, threads of several processes otherwise share each core and spin while they wait
# for each other (the whole suite 465 s with them, 378 s without, on one 2-core machine).
test test-fast: export OMP_NUM_THREADS ?= 1

# The UI test drives Debian's Chromium (a test tool's own browser download needs more network
# than a package registry): installed once, when missing and apt-get can (as root).
export CHROMIUM ?= /usr/bin/chromium
chromium:
	@test -x $(CHROMIUM) || [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null || { \
	  echo "installing Debian's chromium for the UI test"; export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y -q chromium >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; }; }
	@test -x $(CHROMIUM) || { echo "the UI test needs Chromium at $(CHROMIUM): install Debian's chromium package, or set CHROMIUM"; exit 1; }

test: $(STAMP) chromium
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m unit -n $(PYTEST_WORKERS) --dist loadfile

dev: $(STAMP)
	$(BIN)/recall-pipeline init-home
	$(BIN)/dagster dev -w workspace.yaml

docs: $(STAMP)
	$(BIN)/python docs/scripts/config_reference.py && $(BIN)/python -m mkdocs build --strict -d site

clean:
	rm -rf $(RECALL_PIPELINE_HOME)
