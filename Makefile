# Set-up is implicit: every target below creates .venv and installs nasrobust on first use.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
# torch/torchvision pinned to the builds on the team's machines (pip takes them from local disk).
TORCH   = torch==2.14.1 torchvision==0.29.1

.PHONY: setup test test-fast typecheck study clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

# Every test, the slow ones included, on two workers (this is what CI runs: ~14 min on 2 cores).
test: setup
	$(BIN)/python -m pytest -n 2

# The fast tests only (~6 min on 2 cores): no torchrun, no full training runs, no AutoAttack check.
test-fast: setup
	$(BIN)/python -m pytest -n 2 -m "not slow"

# The type checker on the public API (pyproject.toml [tool.mypy]; also run by `make test`, tests/test_typing.py).
typecheck: setup
	$(BIN)/python -m mypy

# The main job on the embedded defaults: 1200 sampled bignas subnets, the supernet trained on the
# bundled MNIST, every suite on a CPU-sized subset (all subnets with a GPU), report in study/report.
# Rerunning continues where it stopped.
study: setup
	$(BIN)/nasrobust study --space bignas --n 1200 --dataset mnist5k --out study/

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
