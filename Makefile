# The README's two commands are `make figures` and `make test`; each sets up .venv itself.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch and torchvision are pinned to a pair that resolves together; override for other platforms,
# e.g. `make TORCH_SPEC="torch==2.9.1 torchvision==0.24.1" test` on aarch64.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
PROFILE ?= quick
NOTEBOOK ?=
# Sweeps inside the notebooks run as Ray tasks of one CPU each, so that the runs of every notebook
# share the cores (13.5-14.9 min for make figures on 2 cores, 16.6 with local); EXECUTOR=local: in-kernel.
EXECUTOR ?= ray
JOBS ?= auto
# The package's Jupyter kernel "adtr" (every notebook names it), registered inside the venv
# (--sys-prefix), where the venv's jupyter and papermill look; KERNEL_SCOPE=--user registers it
# in the home folder instead, for a Jupyter installed outside the venv.
KERNEL_SCOPE ?= --sys-prefix
KERNEL_ARGS := --name adtr --display-name "Python (adtr)"
KERNEL_JSON := $(VENV)/share/jupyter/kernels/adtr/kernel.json
# Nothing at run time may use the network: hub look-ups are answered from the local cache only.
export HF_HUB_OFFLINE ?= 1
export PYTHONUNBUFFERED := 1

.PHONY: setup figures test test-slow test-notebooks test-browser lint format bench kernel lab venv clean-cache book

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet $(TORCH_SPEC)
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

$(KERNEL_JSON): $(VENV)/.installed
	$(PY) -m ipykernel install --sys-prefix $(KERNEL_ARGS)

setup: $(VENV)/.installed $(KERNEL_JSON)

## The main job: run every notebook with papermill (PROFILE=smoke|quick|paper, NOTEBOOK=02 for one,
## JOBS=1 to run them one after another; auto runs two at once on 2+ cores).
figures: setup
	$(PY) -m adtr_core.figures.pipeline --profile $(PROFILE) --executor $(EXECUTOR) --jobs $(JOBS) $(if $(NOTEBOOK),--notebook $(NOTEBOOK))

## Lint and the default test suite (CPU, a few minutes).
test: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/pytest -q

## Slow checks (longer training runs, the full notebook profile).
test-slow: setup
	$(VENV)/bin/pytest -q -m slow

## Only the notebooks, executed with the smoke profile (part of `make test` too).
test-notebooks: setup
	$(VENV)/bin/pytest -q -m notebooks

## Benchmarks: prints one table of speed and memory figures.
bench: setup
	$(PY) benchmarks/run.py

## The browser tests: JupyterLab in headless Chromium runs notebook 02 (smoke profile), and the book
## (make book) is built and every page visited. Needs Chromium
## (Debian: apt-get install chromium); skipped with that hint without it. Downloads nothing.
test-browser: venv
	$(VENV)/bin/pytest -q -m browser tests/test_browser.py tests/test_book.py

## Register the package's Jupyter kernel "adtr" ("Python (adtr)", this venv's python) in the venv
## (`make setup` does it too). Works after the install by hand as well; installs nothing.
kernel: venv
	$(PY) -m ipykernel install $(KERNEL_SCOPE) $(KERNEL_ARGS)

## JupyterLab at the repository root (notebooks/ and figures/executed/ both reachable), kernel registered.
lab: kernel
	$(VENV)/bin/jupyter lab --ServerApp.root_dir="$(CURDIR)"

# An existing venv (from `make setup` or the README's install by hand) is enough.
venv:
	@test -x $(PY) || { echo "no $(PY): run 'make setup' or the README's install first" >&2; exit 1; }

lint: setup
	$(VENV)/bin/ruff check .

format: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean-cache:
	rm -rf .cache/adtr

## The reproduction as a static HTML site in build/book/: docs/ and the executed notebooks in
## figures/executed/ (MkDocs, mkdocs-jupyter; nothing re-executed, nothing downloaded).
book: setup
	$(PY) -m adtr_core.figures.pipeline.book
