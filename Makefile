# The two commands of the README: `make book` (build the site) and `make test` (check everything).
# Both create .venv from the pinned requirements.txt on first use; after that they work offline.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
JB := $(BIN)/jupyter-book
DDPM_PROFILE ?= default

# Quiet TensorFlow's C++ start-up logging; trained runs are cached here and shared by all chapters.
export TF_CPP_MIN_LOG_LEVEL := 2
export DDPM_RUNS_DIR := $(CURDIR)/runs
export PYTHONHASHSEED := 0

.PHONY: book test pytest nbval strict-build notebooks notebooks-check colab-check site-check bench clean help

help:
	@echo "make book   - execute every chapter (profile: $$DDPM_PROFILE, default 'default') and build _build/html"
	@echo "make test   - pytest, notebook pairing check, nbval and a strict build (smoke profile)"
	@echo "make notebooks     - regenerate book/*.ipynb and Colab cells from the .md pages"
	@echo "make colab-check   - run every notebook in a fresh venv with Colab's versions"
	@echo "make site-check    - open every built page in headless Chromium (after make book)"
	@echo "make bench         - timing scripts in benchmarks/ (writes benchmarks/results/)"

$(INSTALLED): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -r requirements.txt
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	touch $@

book: $(INSTALLED)
	DDPM_PROFILE=$(DDPM_PROFILE) $(JB) build . --keep-going
	@echo "Open $(CURDIR)/_build/html/index.html (profile: $(DDPM_PROFILE))"

test: $(INSTALLED) notebooks-check pytest nbval strict-build
	@echo "make test: all checks passed"

notebooks: $(INSTALLED)
	$(BIN)/python -m ddpm_helpers.booktools sync

notebooks-check: $(INSTALLED)
	$(BIN)/python -m ddpm_helpers.booktools check

# pytest exits 5 when it collects no test: make treats that as a failure, as it should.
pytest: $(INSTALLED)
	$(BIN)/python -m pytest tests -q -p no:cacheprovider

nbval: $(INSTALLED)
	DDPM_PROFILE=smoke $(BIN)/python -m pytest --nbval-lax -q -p no:cacheprovider book/*.ipynb

strict-build: $(INSTALLED)
	DDPM_PROFILE=smoke $(JB) build . -W -n --keep-going --path-output _build/strict

colab-check:
	@echo "not yet implemented"; exit 1

site-check: $(INSTALLED)
	@echo "not yet implemented"; exit 1

bench: $(INSTALLED)
	@echo "not yet implemented"; exit 1

clean:
	rm -rf _build runs
