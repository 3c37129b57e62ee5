# `make run` executes the workshop headlessly; `make test` checks it. Both set up .venv first.
VENV ?= .venv
PYTHON := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9]*.md))
# Notebooks with a full-size parameter file run at that size under `make exercises`.
FULL_SIZE := $(sort $(wildcard notebooks/full_size/*.yaml))
EXECUTED := results/executed
# Kernels come from the virtual environment, whatever the user has installed elsewhere.
export JUPYTER_PATH := $(abspath $(VENV))/share/jupyter
export MPLBACKEND := Agg
# Extra papermill arguments for `make run`, e.g. PARAMS="-p epochs 80 -p seed 3".
PARAMS ?=

.PHONY: install run exercises test unit-test notebook-test notebooks lab clean

install: $(INSTALLED)

$(INSTALLED): requirements.txt pyproject.toml
	test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet -r requirements.txt
	$(PYTHON) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (ipykernel)" >/dev/null
	touch $@

run: $(INSTALLED)
	mkdir -p $(EXECUTED)
	@set -e; for md in $(NOTEBOOKS); do \
		name=$$(basename $$md .md); \
		echo "== $$name"; \
		$(VENV)/bin/papermill --cwd notebooks --kernel python3 --no-progress-bar $(PARAMS) \
			notebooks/$$name.ipynb $(EXECUTED)/$$name.ipynb; \
	done
	@echo "Executed notebooks: $(EXECUTED)/; results: results/; figure: images/stochastic_computing.png"

# The exercises and the five-variable run at full size; figures go to images/.
exercises: $(INSTALLED)
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

test: unit-test notebook-test

unit-test: $(INSTALLED)
	$(PYTHON) -m pytest tests

# Notebooks run in order (notebook 4 reads what notebook 3 writes), each in a fresh kernel.
notebook-test: $(INSTALLED)
	$(PYTHON) -m pytest --nbval-lax --nbval-current-env --nbval-cell-timeout=900 -p no:cacheprovider \
		$(NOTEBOOKS:.md=.ipynb)

# After editing a notebook's .md source: regenerate its .ipynb twin (without outputs).
notebooks: $(INSTALLED)
	$(VENV)/bin/jupytext --sync $(NOTEBOOKS)

lab: $(INSTALLED)
	$(VENV)/bin/jupyter lab notebooks/

clean:
	rm -rf $(EXECUTED) results/stochastic results/stochastic-5
