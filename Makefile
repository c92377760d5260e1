# bclviz: two commands on a fresh machine.
#   make lab    create .venv if missing, install the lab profile (pip install -e ".[lab]"),
#               open notebook 01 in JupyterLab (localhost, token)
#   make test   install the test profile if needed (pip install -e ".[lab,tensorboard,test]"), run the
#               unit tests and the notebooks under nbval
# Also: make demo (headless toy demo into out/demo), make bench (benchmarks),
# make install (the full profile, as make test installs), and make core: the core profile
# alone (pip install -e .), what a GPU node needs to run `bclviz train/evaluate/extract`,
# without JupyterLab, plotly or umap. Profiles are listed in pyproject.toml.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip install --disable-pip-version-check -q
# One stamp per profile: a target finds its own profile's stamp (newer than pyproject.toml)
# or installs that profile. A larger profile also writes the stamps of the ones it contains.
CORE_STAMP := $(VENV)/.bclviz-core
LAB_STAMP  := $(VENV)/.bclviz-lab
TEST_STAMP := $(VENV)/.bclviz-test
# Written by make install / make test as well: the name older checkouts used for "installed".
OLD_STAMP  := $(VENV)/.bclviz-installed
NOTEBOOKS := $(wildcard notebooks/*.ipynb)
LAB_PORT ?= 8888

.PHONY: core install lab test demo bench clean

# torch/torchvision are pinned exactly in pyproject.toml (2.14.1 / 0.29.1); use pip, not uv.
$(CORE_STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) -e .
	touch $(CORE_STAMP)

$(LAB_STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) -e ".[lab]"
	touch $(CORE_STAMP) $(LAB_STAMP)

$(TEST_STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) -e ".[lab,tensorboard,test]"
	touch $(CORE_STAMP) $(LAB_STAMP) $(TEST_STAMP) $(OLD_STAMP)

core: $(CORE_STAMP)

install: $(TEST_STAMP)

lab: $(LAB_STAMP)
	$(VENV)/bin/jupyter lab notebooks/01_pseudo_old_space.ipynb \
		--ServerApp.ip=127.0.0.1 --ServerApp.port=$(LAB_PORT) --ServerApp.open_browser=False

test: $(TEST_STAMP)
	$(PY) -m pytest tests $(NOTEBOOKS) --nbval -p no:cacheprovider -q --durations=15

# the demo writes report.html (plots, projections): lab profile
demo: $(LAB_STAMP)
	$(VENV)/bin/bclviz demo --dataset toy --out out/demo

# widget_latency.py times the explorer widget: lab profile
bench: $(LAB_STAMP)
	$(PY) bench/perturb_scale.py --classes 81313 --dim 256
	$(PY) bench/retrieval.py --queries 1000 --gallery 1000000 --dim 256
	$(PY) bench/widget_latency.py
	$(PY) bench/train_overhead.py
	$(PY) bench/tuning.py --threads 1

clean:
	rm -rf out .pytest_cache
