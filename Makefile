# `make demo` and `make test` set up .venv on first use, then run.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# On a machine without an NVIDIA GPU, torch is pinned to this CPU build. Point TORCH_INDEX at
# https://download.pytorch.org/whl/cpu where the registry would otherwise pull a CUDA build.
TORCH_VERSION ?= 2.13.0
TORCH_INDEX   ?=
PYTEST_ARGS   ?=

.PHONY: setup demo test bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv --system-site-packages $(VENV)
	@# Reuse a torch that is already installed; otherwise CPU build unless a GPU is present.
	@if $(PY) -c "import torch" 2>/dev/null; then \
		echo "using installed torch $$($(PY) -c 'import torch; print(torch.__version__)')"; \
	elif command -v nvidia-smi >/dev/null 2>&1; then \
		$(PY) -m pip install --quiet torch; \
	else \
		$(PY) -m pip install --quiet "torch==$(TORCH_VERSION)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)); \
	fi
	$(PY) -m pip install --quiet -e ".[dev]"
	@touch $@

# The whole pipeline on built-in data (configs/pipeline/demo.yaml); a rerun skips the steps that are up to date.
demo: setup
	$(VENV)/bin/lit-llm pipeline --config configs/pipeline/demo.yaml

test: setup
	$(PY) -m pytest -q $(PYTEST_ARGS)

bench: setup
	$(PY) benchmarks/pretrain_throughput.py
	$(PY) benchmarks/data_pipeline.py
	$(PY) benchmarks/sft_packing.py
	$(PY) benchmarks/dpo_reference.py
	$(PY) benchmarks/generation_kv_cache.py
	$(PY) benchmarks/ppo_step.py
	$(PY) benchmarks/grpo_step.py
	$(PY) benchmarks/hf_convert.py
	$(PY) benchmarks/lora_step.py

clean:
	rm -rf $(VENV) runs data/pretrain data/demo data/pairs lightning_logs reports
