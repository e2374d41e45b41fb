# All set-up happens here, so a fresh machine needs only `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv test demo bench clean results

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	# torch first and pinned: the CPU wheel on disk. A loose requirement would pull a multi-GB CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q -x --durations=10

# DEMO_ARGS: extra flags, e.g. DEMO_ARGS="--experiment char-small-demo" to write results/char-small-demo.json
demo: $(STAMP)
	$(BIN)/rnnkit train --preset char-small --out runs/demo --overwrite $(DEMO_ARGS)

bench: $(STAMP)
	$(BIN)/python benchmarks/layers.py

results: $(STAMP)
	$(BIN)/python -m rnnkit.results docs/results.md

clean:
	rm -rf $(VENV) runs build *.egg-info
