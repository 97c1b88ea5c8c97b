# ssmbench developer targets. `make test` and `make sweep` each install what they need.
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip
# A CUDA machine keeps the torch it has; a machine without torch gets this one (CPU build on CI).
TORCH_SPEC ?= torch==2.13.0
SWEEP ?= sweeps/nemotron3-super-tp8.yaml
SMOKE ?= sweeps/smoke.yaml
# The example plugin package (docs/plugins.md): installed and checked by `make test`.
EXAMPLE_PLUGIN ?= examples/ssmbench-example-plugin

.PHONY: install install-dev test sweep lint check

install:
	$(PYTHON) -c "import torch" 2>/dev/null || $(PIP) install -q "$(TORCH_SPEC)"
	$(PIP) install -q -e .

install-dev:
	$(PYTHON) -c "import torch" 2>/dev/null || $(PIP) install -q "$(TORCH_SPEC)"
	$(PIP) install -q -e ".[dev]"
	$(PIP) install -q -e $(EXAMPLE_PLUGIN)

test: install-dev
	TRITON_INTERPRET=1 $(PYTHON) -m pytest -q -m "not gpu" --durations=15
	TRITON_INTERPRET=1 ssmbench check $(SMOKE)
	TRITON_INTERPRET=1 ssmbench check $(EXAMPLE_PLUGIN)/example.yaml

check: install
	ssmbench check $(SMOKE)

# On a CUDA machine: time the default sweep. Without one: verify the smoke sweep instead (sweep
# needs a GPU and says so).
sweep: install
	@mkdir -p results
	@if $(PYTHON) -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then \
	  ssmbench sweep $(SWEEP) -o results/$(notdir $(basename $(SWEEP))).json --markdown results/sweep.md; \
	else \
	  echo "no CUDA GPU here: running the correctness gate (ssmbench check $(SMOKE)) instead of timing"; \
	  ssmbench plan $(SWEEP) && TRITON_INTERPRET=1 ssmbench check $(SMOKE); \
	fi

lint: install-dev
	$(PYTHON) -m ruff check ssmbench kernels tests tools examples setup.py
