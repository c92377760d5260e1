# bclviz: two commands on a fresh machine.
#   make lab    create .venv if missing, install, open notebook 01 in JupyterLab (localhost, token)
#   make test   install if needed, run the unit tests and the notebooks under nbval
# Also: make demo (headless toy demo into out/demo), make bench (benchmarks), make install.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.bclviz-installed
NOTEBOOKS := $(wildcard notebooks/*.ipynb)
LAB_PORT ?= 8888

.PHONY: install lab test demo bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch/torchvision are pinned exactly in pyproject.toml (2.14.1 / 0.29.1); use pip, not uv.
	$(PY) -m pip install --disable-pip-version-check -q -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks/01_pseudo_old_space.ipynb \
		--ServerApp.ip=127.0.0.1 --ServerApp.port=$(LAB_PORT) --ServerApp.open_browser=False

test: $(STAMP)
	$(PY) -m pytest tests $(NOTEBOOKS) --nbval -p no:cacheprovider -q --durations=15

demo: $(STAMP)
	$(VENV)/bin/bclviz demo --dataset toy --out out/demo

bench: $(STAMP)
	$(PY) bench/perturb_scale.py --classes 81313 --dim 256
	$(PY) bench/retrieval.py --queries 1000 --gallery 1000000 --dim 256
	$(PY) bench/widget_latency.py
	$(PY) bench/train_overhead.py

clean:
	rm -rf out .pytest_cache
