# tokencompose: `make demo` and `make test` are the whole quick start (README).
# Torch is installed only when `import torch` fails (Colab keeps its own); override with TORCH_SPEC=...
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.tokencompose-installed

.PHONY: setup lab demo test test-main test-flair test-original test-8bit notebooks nbval bench readme lint clean

setup: $(STAMP)

# --system-site-packages: a preinstalled torch (Colab, a CUDA machine) is seen and kept
$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv --system-site-packages $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[dev,notebooks]"
	$(PY) -m tokencompose setup-tokenizer
	touch $(STAMP)

demo: setup
	$(PY) -m tokencompose demo

# JupyterLab on the notebooks (installed by `make setup`, the `notebooks` extra); LAB_FLAGS=--no-browser on a server
LAB_FLAGS ?=
lab: setup
	$(VENV)/bin/jupyter lab $(LAB_FLAGS) notebooks/

test: test-main test-flair test-8bit

# nbval re-runs notebooks at their committed parameters and compares the `# NBVAL_CHECK_OUTPUT` cells with
# the committed outputs (stale outputs fail). `make test` runs every lesson, 00-08, in order (06 evaluates the
# model 05 trained), and notebooks/solutions/: about 9 minutes on 2 cores (05-07: 7 of them, measured
# 2026-12-01). `make nbval` runs the same set alone.
NOTEBOOKS := $(sort $(wildcard notebooks/0*.ipynb)) $(sort $(wildcard notebooks/solutions/*.ipynb))
ALL_NOTEBOOKS := $(NOTEBOOKS)

test-main: setup
	$(PY) -m ruff check tokencompose tests benchmarks scripts
	$(PY) -m pytest -q tests
	$(PY) -m pytest -q -p no:cacheprovider --nbval-lax $(NOTEBOOKS)

nbval: setup
	$(PY) -m pytest -q -p no:cacheprovider --nbval-lax $(ALL_NOTEBOOKS)

# 8-bit AdamW (bitsandbytes, CPU backend) in its own folder: scripts/test_8bit.sh
test-8bit: setup
	bash scripts/test_8bit.sh

# flair needs transformers<5: its adapter is tested in its own small venv (.venv-flair)
test-flair:
	bash scripts/test_flair.sh -q

# backend="original" (the authors' groundingdino-py + segment-anything-hq) needs torchvision: its own venv,
# .venv-original (5.9 GB, 133 s to set up here, then 16 s a run), so it is not part of `make test`
test-original:
	bash scripts/test_original_masks.sh -q

notebooks: setup
	$(PY) scripts/run_notebooks.py

bench: setup
	$(PY) benchmarks/attention_overhead.py
	$(PY) benchmarks/noun_agreement.py
	$(PY) benchmarks/toy_ablation.py --preset cpu --seeds 0 1 2
	$(PY) benchmarks/toy_investigation.py --preset cpu
	$(PY) benchmarks/toy_levers.py
	$(PY) scripts/readme_results.py

# benchmarks/README.md's results and the README's finding, copied from benchmarks/results/ (toy_levers.md is
# itself generated from the other results files) and the toy base model card
readme: setup
	$(PY) benchmarks/toy_levers.py
	$(PY) scripts/readme_results.py

lint: setup
	$(PY) -m ruff check tokencompose tests benchmarks scripts

clean:
	rm -rf $(VENV) .venv-flair .venv-original outputs .pytest_cache
