# The two commands of the README: `make book` (build the site) and `make test` (check everything).
# Both create .venv from the pinned requirements.txt on first use; after that they work offline.
# bash, without TensorFlow's C++ start-up lines on standard error (see .ci/quiet-shell).
SHELL := $(CURDIR)/.ci/quiet-shell
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
# The book's own build tooling lives in .ci/booktools, outside the package readers install.
TOOLS := PYTHONPATH=$(CURDIR)/.ci $(BIN)/python
JB := $(BIN)/jupyter-book
DDPM_PROFILE ?= default

# Quiet TensorFlow's C++ start-up logging; trained runs are cached here and shared by all chapters.
export TF_CPP_MIN_LOG_LEVEL := 2
export DDPM_RUNS_DIR := $(CURDIR)/runs
export PYTHONHASHSEED := 0

.PHONY: book test pytest nbval strict-build notebooks notebooks-check colab-notebooks colab-notebooks-keep colab-notebooks-check colab-check colab-runtime-known site-check bench bench-book clean help

help:
	@echo "make book   - execute every chapter (profile: $(DDPM_PROFILE)) and build _build/html"
	@echo "make test   - pytest, notebook pairing check, nbval and a strict build (smoke profile)"
	@echo "make notebooks     - regenerate book/*.ipynb and Colab cells from the .md pages"
	@echo "make colab-notebooks - write book/colab/*.ipynb (what Colab opens) from the built book"
	@echo "make colab-check   - run every notebook in a fresh venv with Colab's versions"
	@echo "                     (today's runtime; a past one: COLAB_RUNTIME=2026.07)"
	@echo "make site-check    - open every built page in headless Chromium (after make book)"
	@echo "make bench         - timing scripts in benchmarks/ (writes benchmarks/results/)"
	@echo "make bench-book    - wall time of every chapter, make book and make test"

# The pinned packages are installed by uv (its version is pinned in requirements.txt too), which
# downloads and unpacks them in parallel: about 10 s on 2 cores, where pip takes about 40 s. Where
# uv cannot be installed or fails, pip installs the same pins. Neither compiles the modules at
# install time (--no-compile): Python compiles what it imports when it first imports it.
UV_PIN := $(shell sed -n 's/^uv==/uv==/p' requirements.txt)
$(INSTALLED): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	{ $(BIN)/python -m pip install -q $(UV_PIN) && \
	  $(BIN)/uv pip install -q --python $(BIN)/python -r requirements.txt; } || \
	  $(BIN)/python -m pip install -q --no-compile -r requirements.txt
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	touch $@

# Chapters are executed first, JOBS at a time (.ci/booktools/bookbuild.py), into the jupyter-cache
# that Jupyter Book then renders from (execute_notebooks: cache in _config.yml).
# DDPM_BOOK_BUILD=1: progress bars print one summary line instead of redrawing (ddpm_helpers.notebook.pages).
NPROC := $(shell nproc 2>/dev/null || echo 2)
JOBS ?= $(NPROC)
# TensorFlow threads for each of N processes that share the cores (as bookbuild.share_cores does):
# on 2 cores, two processes of 2 threads each run about 20% slower than two of 1 thread.
tf_threads = TF_NUM_INTRAOP_THREADS=$(1) TF_NUM_INTEROP_THREADS=$(1)
share_cores = $(call tf_threads,$(shell n=$$(( $(NPROC) / $(1) )); echo $$(( n > 0 ? n : 1 ))))

book: $(INSTALLED)
	DDPM_BOOK_BUILD=1 DDPM_PROFILE=$(DDPM_PROFILE) $(TOOLS) -m booktools.bookbuild \
	  --jobs $(JOBS) --cache _build/.jupyter_cache
	DDPM_BOOK_BUILD=1 DDPM_PROFILE=$(DDPM_PROFILE) $(JB) build . --keep-going
	@echo "Open $(CURDIR)/_build/html/index.html (profile: $(DDPM_PROFILE))"

test: $(INSTALLED) notebooks-check pytest nbval strict-build colab-notebooks-check
	@echo "make test: all checks passed"

notebooks: $(INSTALLED)
	$(TOOLS) -m booktools sync

notebooks-check: $(INSTALLED)
	$(TOOLS) -m booktools check

# The Colab edition (book/colab/*.ipynb, what the launch buttons open): written by a Sphinx
# builder from the resolved pages of the default build (.ci/booktools/colab.py), so equation,
# figure and exercise numbers, references, citations and glued numbers read as on the published
# page. Run it after `make book`: it renders from the cache that leaves (10 to 20 s), and
# executes only pages missing from it (run `make book` first when pages changed).
colab-notebooks: $(INSTALLED)
	DDPM_BOOK_BUILD=1 DDPM_PROFILE=default $(JB) build . --keep-going --builder custom --custom-builder colab
	$(TOOLS) -m booktools.colab write _build/colab book/colab

# When only prose or code changed (no glued number is new): rewrite them from make test's smoke
# build, keeping the published values they have.
colab-notebooks-keep: $(INSTALLED)
	DDPM_BOOK_BUILD=1 DDPM_PROFILE=smoke $(JB) build . --keep-going --path-output _build/strict \
	  --builder custom --custom-builder colab
	$(TOOLS) -m booktools.colab write --keep-values _build/strict/_build/colab book/colab

# After strict-build: the same builder over the smoke build; the committed notebooks must agree
# with it in everything but the glued values (booktools.colab.drift).
colab-notebooks-check: $(INSTALLED)
	DDPM_BOOK_BUILD=1 DDPM_PROFILE=smoke $(JB) build . -W -n --keep-going --path-output _build/strict \
	  --builder custom --custom-builder colab
	$(TOOLS) -m booktools.colab check _build/strict/_build/colab book/colab

# pytest exits 5 when it collects no test: make treats that as a failure, as it should.
pytest: $(INSTALLED)
	$(call share_cores,2) $(BIN)/python -m pytest tests -q -p no:cacheprovider -n 2

# One notebook per worker (--dist loadfile): a notebook's cells share one kernel. DDPM_RUNS_DIR is
# unset, as in Colab: the notebooks train into book/runs (relative to their folder), the first one
# that needs the shared model trains it and the others wait for it, then load it.
nbval: $(INSTALLED)
	DDPM_RUNS_DIR= DDPM_PROFILE=smoke $(call share_cores,$(JOBS)) $(BIN)/python -m pytest --nbval-lax -q -p no:cacheprovider -n $(JOBS) --dist loadfile book/*.ipynb

strict-build: $(INSTALLED)
	DDPM_BOOK_BUILD=1 DDPM_PROFILE=smoke $(TOOLS) -m booktools.bookbuild \
	  --jobs $(JOBS) --cache _build/strict/_build/.jupyter_cache
	DDPM_BOOK_BUILD=1 DDPM_PROFILE=smoke $(JB) build . -W -n --keep-going --path-output _build/strict
	$(TOOLS) -m booktools.sitescan _build/strict/_build/html
	$(TOOLS) -m booktools.equations _build/strict/_build/html

# Colab check: every book/colab/*.ipynb (the notebooks the launch buttons open) run top to
# bottom from a folder outside the repository, as in Colab's /content, with their first cell
# installing the package from this checkout instead of GitHub and their settings cell set to the
# smoke profile (booktools.colab localize), in a venv of its own with one Colab runtime's versions:
# .ci/colab-requirements-$(COLAB_RUNTIME).txt, whose `# python: X.Y` line names the runtime's
# Python. Default: the runtime Colab gives today; `make colab-check COLAB_RUNTIME=2026.07` checks
# a past one (Colab still lets a notebook pin it). Each runtime has its own venv, rebuilt when its
# requirements file changes or after `rm -rf _build/colab-venv-<runtime>`. The package is
# installed the way each chapter's first cell does in Colab, but from this checkout.
COLAB_RUNTIME ?= 2026.08
COLAB_RUNTIMES := $(patsubst .ci/colab-requirements-%.txt,%,$(wildcard .ci/colab-requirements-*.txt))
COLAB_REQUIREMENTS := .ci/colab-requirements-$(COLAB_RUNTIME).txt
COLAB_PYTHON_VERSION := $(shell sed -n 's/^\# python: *//p' $(COLAB_REQUIREMENTS) 2>/dev/null)
COLAB_VENV := _build/colab-venv-$(COLAB_RUNTIME)
COLAB_DIR := _build/colab-check-$(COLAB_RUNTIME)
# The runtime's Python: the first python3.X found on PATH or in pyenv whose version matches.
COLAB_PYTHON ?= $(if $(COLAB_PYTHON_VERSION),$(firstword $(foreach p,python$(COLAB_PYTHON_VERSION) \
  $(wildcard $(HOME)/.pyenv/versions/$(COLAB_PYTHON_VERSION)*/bin/python$(COLAB_PYTHON_VERSION)),\
  $(shell $(p) -c 'import sys; "%d.%d" % sys.version_info[:2] == "$(COLAB_PYTHON_VERSION)" and print(sys.executable)' 2>/dev/null))))

colab-runtime-known:
	@test -f $(COLAB_REQUIREMENTS) || { echo "colab-check: no runtime $(COLAB_RUNTIME) (no $(COLAB_REQUIREMENTS)); known runtimes: $(COLAB_RUNTIMES). Use e.g. make colab-check COLAB_RUNTIME=$(lastword $(COLAB_RUNTIMES))"; exit 1; }
	@test -n "$(COLAB_PYTHON_VERSION)" || { echo "colab-check: $(COLAB_REQUIREMENTS) has no '# python: X.Y' line; add the runtime's Python version"; exit 1; }
	@test -n "$(COLAB_PYTHON)" || { echo "colab-check: Colab runtime $(COLAB_RUNTIME) runs Python $(COLAB_PYTHON_VERSION), and none was found (PATH, pyenv): install it (pyenv install $(COLAB_PYTHON_VERSION)) or set COLAB_PYTHON=/path/to/python$(COLAB_PYTHON_VERSION)"; exit 1; }

$(COLAB_VENV)/.installed: $(COLAB_REQUIREMENTS) | colab-runtime-known
	rm -rf $(COLAB_VENV)
	$(COLAB_PYTHON) -m venv $(COLAB_VENV)
	$(COLAB_VENV)/bin/python -m pip install -q --upgrade pip
	$(COLAB_VENV)/bin/python -m pip install -q -r $(COLAB_REQUIREMENTS)
	touch $@

colab-check: colab-runtime-known $(INSTALLED) $(COLAB_VENV)/.installed
	rm -rf $(COLAB_DIR) && mkdir -p $(COLAB_DIR)/notebooks
	$(COLAB_VENV)/bin/python -c 'import shutil; shutil.copytree(".", "$(COLAB_DIR)/src", ignore=lambda d, names: [n for n in names if d == "." and n not in ("pyproject.toml", "README.md", "ddpm_helpers") and not n.startswith("LICENSE") or n == "__pycache__"])'
	$(COLAB_VENV)/bin/python -m pip uninstall -q -y ddpm_helpers 2>/dev/null || true
	$(COLAB_VENV)/bin/python -m pip install -q "ddpm_helpers @ file://$(CURDIR)/$(COLAB_DIR)/src"
	$(COLAB_VENV)/bin/python .ci/colab_pins.py $(COLAB_REQUIREMENTS)
	cp book/colab/*.ipynb $(COLAB_DIR)/notebooks/
	$(TOOLS) -m booktools.colab localize $(COLAB_DIR)/notebooks \
	  --package "file://$(CURDIR)/$(COLAB_DIR)/src" --profile smoke
	cd $(COLAB_DIR)/notebooks && DDPM_PROFILE=smoke DDPM_RUNS_DIR= \
	  $(CURDIR)/$(COLAB_VENV)/bin/python -m pytest --nbval-lax --nbval-current-env -q -p no:cacheprovider \
	  --rootdir . -c /dev/null *.ipynb
	@echo "make colab-check: every notebook ran with Colab $(COLAB_RUNTIME)'s versions (Python $(COLAB_PYTHON_VERSION))"

# Site check (after make book): every page of $(SITE_HTML) in headless Chromium; screenshots and
# report.json in _build/site-check/. Installs Debian's chromium and chromium-driver if missing.
SITE_HTML ?= _build/html
SUDO = $(shell [ "$$(id -u)" = 0 ] || echo sudo)

site-check: $(INSTALLED)
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  echo "site-check: installing chromium and chromium-driver (apt)"; \
	  $(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q chromium chromium-driver; }
	$(BIN)/python tests/site_check.py $(SITE_HTML) --out _build/site-check

# Benchmarks (benchmarks/*.py; not unit tests): each compares variants side by side in one process
# and writes benchmarks/results/<name>-<date>.json (machine, load average, command, numbers), which
# the chapter "Performance" shows; scaling-*.json holds the seed profile's step with mixed precision,
# XLA and MirroredStrategy on 2 logical CPU devices as ratios to the plain step (no chapter reads it
# yet). `make bench` took about 9 minutes on the 2-core CPU (busy, before bench_scaling.py);
# `make bench-book` times every chapter, `make book` and `make test` (much longer; skip parts with
# e.g. BENCH_BOOK_ARGS="--skip-make-book --skip-make-test").
BENCH_STAMP = $(shell date +%Y%m%d-%H%M%S)
BENCH_TRAINING_ARGS ?= --profiles seed,default --rounds 3
BENCH_SAMPLING_ARGS ?= --profile default --batch 64 --steps 50 --rounds 3 --ddim
BENCH_SEED_SAMPLING_ARGS ?= --profile seed --batch 64 --steps 2 --rounds 2
BENCH_MEMORY_ARGS ?= --profile default --batch 16 --snapshots 11
BENCH_SCALING_ARGS ?= --profiles seed --rounds 3 --steps 1 --min-seconds 4
BENCH_BOOK_ARGS ?= --profile default --runs-dir _build/bench-book-runs

bench: $(INSTALLED)
	$(BIN)/python benchmarks/bench_training.py $(BENCH_TRAINING_ARGS)
	$(BIN)/python benchmarks/bench_sampling.py $(BENCH_SAMPLING_ARGS)
	$(BIN)/python benchmarks/bench_sampling.py $(BENCH_SEED_SAMPLING_ARGS) \
	  --out benchmarks/results/sampling_seed-$(BENCH_STAMP).json
	$(BIN)/python benchmarks/bench_sampling_memory.py $(BENCH_MEMORY_ARGS)
	$(BIN)/python benchmarks/bench_scaling.py $(BENCH_SCALING_ARGS)
	@echo "make bench: results in benchmarks/results/ (shown by book/10_performance.md)"

bench-book: $(INSTALLED)
	rm -rf _build/bench-book-runs  # chapters timed with no trained model cached
	$(BIN)/python benchmarks/bench_book.py $(BENCH_BOOK_ARGS)

clean:
	rm -rf _build runs
