# `make install` builds .venv; `make lab` opens the notebooks in JupyterLab; `make run` executes them
# headlessly; `make test` checks everything. Each target sets up .venv first.
VENV ?= .venv
PYTHON := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
# The Python that makes .venv. The pins in requirements.txt need Python 3.11 or newer.
PYTHON_BASE ?= python3
MIN_PYTHON := 3.11
# A comma, for $(subst) below (no comment on its line: make keeps the spaces before one).
comma := ,
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9]*.md))
# Notebooks with a full-size parameter file run at that size under `make exercises`.
FULL_SIZE := $(sort $(wildcard notebooks/full_size/*.yaml))
EXECUTED := results/executed
# JupyterLab's settings for the workshop (.md files open as notebooks), installed into .venv.
LAB_SETTINGS := $(VENV)/share/jupyter/lab/settings/overrides.json
# Kernels come from the virtual environment, whatever the user has installed elsewhere.
export JUPYTER_PATH := $(abspath $(VENV))/share/jupyter
# No MPLBACKEND, not even the user's: it reaches the kernels of `make lab` and `make run`, and a
# kernel under Agg shows no figures. ipykernel picks its inline backend by itself; the tests that
# draw outside a kernel choose Agg themselves.
unexport MPLBACKEND
# Extra papermill arguments for `make run`, e.g. PARAMS="-p epochs 80 -p seed 3".
PARAMS ?=
# Extra JupyterLab arguments for `make lab`, e.g. LAB_ARGS="--port 8899 --no-browser".
LAB_ARGS ?=
# The tests that execute whole notebooks: once, not at every thread count of the unit tests.
NOTEBOOK_RUN_TESTS := tests/test_standalone_notebooks.py tests/test_executed_notebooks.py
BROWSER_TEST := tests/test_browser.py

.PHONY: install check-python sync run exercises test unit-test notebook-test browser-test notebooks lab clean

install: $(INSTALLED) $(LAB_SETTINGS)

# Refuses a .venv made by another Python minor version than $(PYTHON_BASE) (its packages and the
# pins' wheels are built for one minor version), and a Python older than the pins allow.
check-python:
	@base=$$($(PYTHON_BASE) -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null) || { \
		echo "error: $(PYTHON_BASE) was not found. Install Python $(MIN_PYTHON) or newer, or name it: make PYTHON_BASE=python3.11 ..." >&2; exit 1; }; \
	if ! $(PYTHON_BASE) -c 'import sys; sys.exit(sys.version_info[:2] < ($(subst .,$(comma),$(MIN_PYTHON))))'; then \
		echo "error: $(PYTHON_BASE) is Python $$base, but the pins in requirements.txt need Python $(MIN_PYTHON) or newer." >&2; \
		echo "       Name a newer one: make PYTHON_BASE=python3.11 ... (then it makes $(VENV) with that one)." >&2; exit 1; fi; \
	if [ -e $(VENV) ]; then \
		made=$$(sed -n 's/^version\(_info\)\{0,1\} *= *\([0-9]*\.[0-9]*\).*/\2/p' $(VENV)/pyvenv.cfg 2>/dev/null | head -n 1); \
		if [ "$$made" != "$$base" ]; then \
			echo "error: $(VENV) was made by Python $${made:-(unknown: no $(VENV)/pyvenv.cfg)}, but $(PYTHON_BASE) is Python $$base." >&2; \
			echo "       Start afresh: rm -rf $(VENV) && make install" >&2; \
			if [ -n "$$made" ] && $(PYTHON_BASE) -c "import sys; sys.exit(($${made%%.*}, $${made#*.}) < ($(subst .,$(comma),$(MIN_PYTHON))))"; then \
				echo "       or keep it, naming its Python: make PYTHON_BASE=python$$made ..." >&2; fi; \
			exit 1; fi; \
		if [ -e $(INSTALLED) ] && ! $(PYTHON) -c '' 2>/dev/null; then \
			echo "error: $(PYTHON) does not run (was its Python removed or moved?). Start afresh: rm -rf $(VENV) && make install" >&2; exit 1; fi; \
	fi



# The stamp is written last: a .venv whose install stopped half-way is completed, and says so.
$(INSTALLED): requirements.txt pyproject.toml | check-python
	@if [ -e $@ ]; then echo "$(VENV): requirements.txt or pyproject.toml changed: updating it"; \
	elif [ -e $(VENV) ]; then echo "$(VENV) exists, but its last install did not finish: installing into it again (or start afresh: rm -rf $(VENV))"; \
	else echo "Making $(VENV) with $(PYTHON_BASE) and installing requirements.txt (a minute or two)"; fi
	test -x $(PYTHON) || $(PYTHON_BASE) -m venv $(VENV)
	$(PYTHON) -m pip --version >/dev/null 2>&1 || $(PYTHON) -m ensurepip --upgrade >/dev/null
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet -r requirements.txt
	$(PYTHON) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (ipykernel)" >/dev/null
	touch $@

# JupyterLab reads <sys.prefix>/share/jupyter/lab/settings/overrides.json as its defaults (a user's
# own settings still win): double-clicking a .md opens it as a notebook (jupytext's documented
# `defaultViewers`), and JupyterLab does not ask to fetch news from the internet.
$(LAB_SETTINGS): jupyterlab/overrides.json $(INSTALLED)
	mkdir -p $(dir $@)
	cp jupyterlab/overrides.json $@

# Brings every .ipynb twin up to date with its .md (or the .md with its .ipynb, whichever was edited
# last: jupytext --sync loses neither), so that nothing runs a stale notebook.
sync: $(INSTALLED)
	@out=$$($(VENV)/bin/jupytext --sync $(NOTEBOOKS) 2>&1) || { echo "$$out" >&2; exit 1; }; \
	echo "$$out" | grep -E "Updating [^ ]+\.(ipynb|md)$$" || true

run: sync
	mkdir -p $(EXECUTED)
	@set -e; for md in $(NOTEBOOKS); do \
		name=$$(basename $$md .md); \
		echo "== $$name"; \
		$(VENV)/bin/papermill --cwd notebooks --kernel python3 --no-progress-bar $(PARAMS) \
			notebooks/$$name.ipynb $(EXECUTED)/$$name.ipynb; \
	done
	@echo "Executed notebooks: $(EXECUTED)/; results: results/; figure: images/stochastic_computing.png"

# The exercises and the five-variable run at full size; figures go to images/.
exercises: sync
	mkdir -p $(EXECUTED)
	@set -e; for yaml in $(FULL_SIZE); do \
		name=$$(basename $$yaml .yaml); \
		echo "== $$name (full size)"; start=$$(date +%s); \
		$(VENV)/bin/papermill --cwd notebooks --kernel python3 --no-progress-bar \
			-f $$yaml notebooks/$$name.ipynb $(EXECUTED)/$$name-full.ipynb; \
		echo "   $$name took $$(( $$(date +%s) - start )) s"; \
	done

# A grid of configurations from a YAML file (sweeps/*.yaml), resumable; rows in results/sweeps/<name>/.
# SWEEP_ARGS="--workers 2" runs it on a Dask LocalCluster, SWEEP_ARGS="--scheduler tcp://HOST:8786" on a cluster.
.PHONY: sweep
sweep: $(INSTALLED)
	@test -n "$(GRID)" || { echo "usage: make sweep GRID=sweeps/quick.yaml [SWEEP_ARGS='--workers 2']" >&2; exit 2; }
	$(PYTHON) -m workshop_utils.sweep $(GRID) $(SWEEP_ARGS)

test: unit-test notebook-test browser-test

unit-test: $(INSTALLED)
	$(PYTHON) -m pytest tests $(addprefix --ignore=,$(NOTEBOOK_RUN_TESTS) $(BROWSER_TEST))

# Every notebook under nbval, in order (notebook 4 reads what notebook 3 writes), each in a fresh
# kernel; then the notebooks run alone as on Colab, and as `make run` runs them.
notebook-test: $(INSTALLED)
	$(PYTHON) -m pytest --nbval-lax --nbval-current-env --nbval-cell-timeout=900 -p no:cacheprovider \
		$(NOTEBOOKS:.md=.ipynb)
	$(PYTHON) -m pytest $(NOTEBOOK_RUN_TESTS)

# JupyterLab as `make lab` starts it, driven by a headless Chromium (skipped, saying why, without one).
browser-test: $(INSTALLED) $(LAB_SETTINGS)
	$(PYTHON) -m pytest $(BROWSER_TEST)

# After editing a notebook's .md source: regenerate its .ipynb twin, and strip outputs (and widget
# state) from every .ipynb with nbstripout, as they are committed.
notebooks: sync
	$(VENV)/bin/nbstripout --keep-id $(NOTEBOOKS:.md=.ipynb)

# JupyterLab serves the repository (so that notebooks show ../images/) and opens at notebooks/.
lab: $(INSTALLED) $(LAB_SETTINGS)
	$(VENV)/bin/jupyter lab --ServerApp.root_dir=. --FileContentsManager.preferred_dir=notebooks $(LAB_ARGS)

clean:
	rm -rf $(EXECUTED) results/stochastic results/stochastic-5
