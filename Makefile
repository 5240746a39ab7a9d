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

demo: setup
	$(VENV)/bin/lit-llm prepare --config configs/data/demo.yaml
	$(VENV)/bin/lit-llm fit --config configs/pretrain/tiny.yaml
	$(VENV)/bin/lit-llm generate --checkpoint runs/pretrain/tiny --prompt "Once upon a time," --max_new_tokens 60 --num_samples 2
	$(VENV)/bin/lit-llm fit --config configs/sft/tiny.yaml
	$(VENV)/bin/lit-llm generate --checkpoint runs/sft/tiny --prompt "How many times does the letter o appear in moon?" --temperature 0
	$(VENV)/bin/lit-llm pairs --checkpoint runs/sft/tiny --output data/pairs/train.jsonl --per_task 400 --temperature 0.7 --pairs_per_prompt 4
	$(VENV)/bin/lit-llm pairs --checkpoint runs/sft/tiny --output data/pairs/val.jsonl --split val --per_task 50 --temperature 0.7
	$(VENV)/bin/lit-llm fit --config configs/reward/tiny.yaml
	$(VENV)/bin/lit-llm fit --config configs/dpo/tiny.yaml
	$(VENV)/bin/lit-llm fit --config configs/orpo/tiny.yaml
	$(VENV)/bin/lit-llm fit --config configs/ppo/tiny.yaml
	$(VENV)/bin/lit-llm evaluate --checkpoints '[runs/sft/tiny,runs/ppo/tiny]' --split test --per_task 100 --temperature 0.7 --samples 2
	$(VENV)/bin/lit-llm evaluate --checkpoints '[runs/pretrain/tiny,runs/sft/tiny,runs/dpo/tiny,runs/orpo/tiny,runs/ppo/tiny]' --split test --per_task 100
	$(VENV)/bin/lit-llm compare --checkpoints '[runs/sft/tiny,runs/dpo/tiny,runs/orpo/tiny,runs/ppo/tiny]' --reward_model runs/reward/tiny --per_task 50 --examples 3 --output reports/compare
	$(VENV)/bin/lit-llm report --runs '[runs/pretrain/tiny,runs/sft/tiny,runs/reward/tiny,runs/dpo/tiny,runs/orpo/tiny,runs/ppo/tiny]' --output reports/demo

test: setup
	$(PY) -m pytest -q $(PYTEST_ARGS)

bench: setup
	$(PY) benchmarks/pretrain_throughput.py
	$(PY) benchmarks/data_pipeline.py
	$(PY) benchmarks/sft_packing.py
	$(PY) benchmarks/dpo_reference.py
	$(PY) benchmarks/generation_kv_cache.py
	$(PY) benchmarks/ppo_step.py

clean:
	rm -rf $(VENV) runs data/pretrain data/demo data/pairs lightning_logs reports
