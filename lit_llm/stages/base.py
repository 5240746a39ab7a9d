"""`Stage`: the one base every training stage extends. It holds what they all share and nothing else: the options
every stage takes (declared and documented once, here), the policy built from `init_from` (or a preset), LoRA,
compile and FSDP wrapping, AdamW groups with the warmup + cosine schedule, gradient-norm logging, the checkpoint
metadata that chains stages, and answering held-out prompts at validation. Everything else is a component a stage
holds (`Policy`, `FrozenReference`, a reward source, `RolloutValidation`) or a loss function.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from lightning.fabric.utilities.throughput import measure_flops
from lightning.pytorch import LightningModule
from lightning.pytorch.utilities import rank_zero_info

from lit_llm.checkpoint import META_KEY, resolve_checkpoint_path
from lit_llm.data.connect import DataInfo, DataSpec
from lit_llm.errors import ConfigError
from lit_llm.lora import LoRAConfig, apply_lora, frozen_parameter_names
from lit_llm.model import GPT
from lit_llm.stages.optim import build_adamw, clip_sharded_grad_norm, total_grad_norm, warmup_cosine_scheduler
from lit_llm.stages.policy import Policy
from lit_llm.text.templates import style_to_dict

# The shared options whose default depends on the stage (each stage's `defaults`); the rest default alike.
_STAGE_DEFAULTS = ("learning_rate", "min_lr", "warmup_steps", "weight_decay", "eval_generations", "max_new_tokens")


class Stage(LightningModule):
    """Options every stage takes (a stage's own options come first in its signature; these reach the base through
    `**kwargs`, so LightningCLI and `--help` show them for every stage).

    Args:
        init_from: a lit_llm checkpoint (file or run folder) to start from: weights, model config, tokenizer and the
            prompt style it was trained with. None builds the `model` preset from scratch.
        model: name of a preset in `lit_llm.model.PRESETS` (tiny, gpt2-124m, llama-125m, ...), used only without
            `init_from`.
        model_config: fields of `lit_llm.model.Config` that override the preset's or the checkpoint's (e.g.
            {dropout: 0.1}).
        learning_rate: peak learning rate, reached at the end of warmup; null: the stage's default (its `defaults`).
        min_lr: floor the cosine decays to; null: the stage's default.
        warmup_steps: optimizer steps of linear warmup; null: the stage's default.
        lr_decay_steps: step at which the cosine reaches `min_lr`; None uses the Trainer's max_steps.
        weight_decay: AdamW decay of matrices (norms, biases and embeddings are never decayed); null: the stage's
            default.
        betas: AdamW betas.
        compile: compile the model with torch.compile.
        lora: low-rank adapters instead of full fine-tuning, e.g. {r: 8, alpha: 16, dropout: 0.05, targets: [qkv,
            attn_proj]} (targets among qkv, attn_proj, fc, mlp_proj, lm_head); needs `init_from`. Only the adapters
            (and any new head) train and are saved; the checkpoint names its base, `init_from`.
        eval_generations: validation prompts answered greedily at each validation run; for prompts of the built-in
            tasks the verifiers' exact match and reward are logged (val/exact_match, val/exact_match/<task>,
            val/reward). 0 turns it off; null: the stage's default. Unused by pretraining and the reward model.
        sample_generations: how many of those answers are printed and logged as text.
        max_new_tokens: longest generated answer; null: the stage's default.
    """

    stage_name: ClassVar[str] = "stage"
    # The stage's defaults for the options in _STAGE_DEFAULTS, overridden by each stage.
    defaults: ClassVar[dict[str, Any]] = {
        "learning_rate": 3e-4, "min_lr": 3e-5, "warmup_steps": 0, "weight_decay": 0.0, "eval_generations": 0,
        "max_new_tokens": 32,
    }  # fmt: skip
    # Parameters (name prefixes inside `self.model`) that stay trainable beside LoRA adapters.
    lora_trainable: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        init_from: str | None = None,
        model: str = "tiny",
        model_config: dict[str, Any] | None = None,
        learning_rate: float | None = None,
        min_lr: float | None = None,
        warmup_steps: int | None = None,
        lr_decay_steps: int | None = None,
        weight_decay: float | None = None,
        betas: tuple[float, float] = (0.9, 0.95),
        compile: bool = False,
        lora: dict[str, Any] | None = None,
        eval_generations: int | None = None,
        sample_generations: int = 4,
        max_new_tokens: int | None = None,
    ) -> None:
        super().__init__()
        given = {"learning_rate": learning_rate, "min_lr": min_lr, "warmup_steps": warmup_steps,
                 "weight_decay": weight_decay, "eval_generations": eval_generations, "max_new_tokens": max_new_tokens}
        resolved = {k: (self.defaults[k] if v is None else v) for k, v in given.items()}
        # Every init argument of the stage (its own and these), with the stage's defaults filled in; a function
        # given from Python (or in a list) is saved by name (a function object would make checkpoints unloadable with
        # weights_only=True).
        self.save_hyperparameters()
        for hparams in (self.hparams, self._hparams_initial):
            hparams.update(resolved)
            for key, value in list(hparams.items()):
                if isinstance(value, (list, tuple)):
                    hparams[key] = [_by_name(v) for v in value]
                else:
                    hparams[key] = _by_name(value)
        hp = self.hparams
        if hp.min_lr > hp.learning_rate:
            raise ConfigError(f"model.min_lr ({hp.min_lr}) is above model.learning_rate ({hp.learning_rate})")
        if hp.eval_generations < 0 or sample_generations < 0 or hp.max_new_tokens < 1:
            raise ConfigError("model.eval_generations and sample_generations must be >= 0, max_new_tokens >= 1")
        self.lora_config = LoRAConfig.from_dict(lora) if lora is not None else None
        if self.lora_config is not None and not init_from:
            raise ConfigError("model.lora needs model.init_from: adapters train on top of a checkpoint's weights")
        # The policy's description; the checkpoint is read in setup, a bad preset or config key fails now.
        self.policy = Policy.from_preset(model, model_config)
        self.model: torch.nn.Module | None = None
        self.data_info: DataInfo | None = None
        # Read by ThroughputMonitor for FLOP/s and MFU; measured in on_fit_start by the stages that count them.
        self.flops_per_batch: int | None = None

    # ---- what the policy is (read by stages, callbacks, tests) ------------------------------------

    @property
    def config(self) -> Any:
        return self.policy.config

    @property
    def tokenizer(self) -> Any:
        return self.policy.tokenizer

    @property
    def prompt_style(self) -> Any:
        return self.policy.prompt_style

    # ---- building ----------------------------------------------------------------------------------

    def setup(self, stage: str) -> None:
        if self.model is not None:
            return
        hp = self.hparams
        if hp.init_from:
            self.policy = Policy.from_checkpoint(hp.init_from, hp.model_config, stage=self.stage_name,
                                                 keep_fingerprint=self.lora_config is not None)  # fmt: skip
        dm = self.trainer.datamodule if self._trainer is not None else None
        if dm is not None and hasattr(dm, "connect"):
            self.data_info = dm.connect(self.data_spec())
            self.policy.adopt_data(self.data_info, sized_by_data=self._sized_by_data())

    def data_spec(self) -> DataSpec:
        """What the data module needs from this stage: the policy's tokenizer, the prompt style stored with it, the
        context length and the room kept for generated answers."""
        return DataSpec(tokenizer=self.tokenizer, prompt_style=self.policy.stored_style,
                        block_size=self.config.block_size, max_new_tokens=self.hparams.max_new_tokens)  # fmt: skip

    def _sized_by_data(self) -> bool:
        """Whether the model's vocabulary is taken from the data (pretraining from scratch)."""
        return False

    def configure_model(self) -> None:
        if self.model is not None:
            return
        if self.lora_config is not None and self._sharded():
            raise ConfigError("model.lora runs on one device or with DDP; LoRA under FSDP is not supported")
        wrap = self._fsdp_wrap()
        self.model = self._build_network(wrap)
        if self.lora_config is not None:
            apply_lora(self.model, self.lora_config, trainable=self.lora_trainable)
        if self.hparams.compile:
            self.model.compile()
        self.configure_components(wrap)
        self.policy.release()

    def _build_network(self, wrap: Any = None) -> torch.nn.Module:
        """The trained network with the `init_from` weights; under FSDP each Block, then the root, is wrapped."""
        return self.policy.build(GPT, wrap)

    def configure_components(self, wrap: Any = None) -> None:
        """Build the networks a stage holds beside the policy (a frozen reference, a critic, a value head), after
        the policy and while its starting weights are still held; `wrap` is FSDP's, or None."""

    def _fsdp_wrap(self) -> Any:
        """FSDP's `wrap` under an FSDPStrategy, else None. Lightning calls configure_model inside FSDP's wrap
        context: each Block is sharded as it is built, then the root (embeddings, head), so no rank ever holds
        the whole model unsharded."""
        if not self._sharded():
            return None
        from torch.distributed.fsdp.wrap import wrap

        return wrap

    def _sharded(self) -> bool:
        from lightning.pytorch.strategies import FSDPStrategy

        return self._trainer is not None and isinstance(self.trainer.strategy, FSDPStrategy)

    def on_fit_start(self) -> None:
        self.flops_per_batch = flops_per_batch(self)

    # ---- optimization ------------------------------------------------------------------------------

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        optimizer = build_adamw(self._trained(), hp.learning_rate, hp.weight_decay, tuple(hp.betas))
        decay = hp.lr_decay_steps
        if decay is None:
            trainer = self.trainer
            decay = trainer.max_steps if trainer.max_steps > 0 else int(trainer.estimated_stepping_batches)
        scheduler = warmup_cosine_scheduler(optimizer, hp.learning_rate, hp.min_lr, hp.warmup_steps, decay)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def _trained(self) -> torch.nn.Module:
        """The modules the optimizer updates."""
        return self.model

    def _logging_step(self) -> bool:
        """Whether loggers write this step; a self.log call costs ~0.5 ms, wasted on other steps."""
        connector = getattr(self.trainer, "_logger_connector", None)
        return connector is None or connector.should_update_logs

    def log_train_step(self, loss: torch.Tensor, metrics: dict[str, torch.Tensor] | None = None) -> None:
        """`train/loss` (also on the progress bar), and on logging steps `metrics` under train/ and `train/lr`."""
        logging_step = self._logging_step()
        if logging_step or self.trainer.progress_bar_callback is not None:
            self.log("train/loss", loss, prog_bar=True)
        if logging_step:
            if metrics:
                self.log_dict({f"train/{k}": v for k, v in metrics.items()})
            self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"])

    def clip_grad_norm(self, optimizer: torch.optim.Optimizer, max_norm: float) -> None:
        """Clip the trained modules' gradient norm to `max_norm`; under FSDP the norm of all ranks' shards together
        (Lightning's own norm clipping refuses FSDP)."""
        if not self._sharded():
            self.clip_gradients(optimizer, gradient_clip_val=max_norm, gradient_clip_algorithm="norm")
            return
        clip_sharded_grad_norm(self._trained().parameters(), max_norm,
                               lambda x: self.trainer.strategy.reduce(x, reduce_op="sum"))

    def configure_gradient_clipping(self, optimizer: torch.optim.Optimizer, gradient_clip_val: float | None = None,
                                    gradient_clip_algorithm: str | None = None) -> None:
        """`trainer.gradient_clip_val` by norm works under FSDP too (see `clip_grad_norm`)."""
        if gradient_clip_val and self._sharded() and gradient_clip_algorithm in (None, "norm"):
            self.clip_grad_norm(optimizer, gradient_clip_val)
            return
        self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        if self._logging_step():
            norm = total_grad_norm(self.model.parameters())
            if self._sharded():  # each rank holds a shard of the gradients
                norm = self.trainer.strategy.reduce(norm.pow(2).to(self.device), reduce_op="sum").sqrt()
            self.log("train/grad_norm", norm)

    # ---- answering held-out prompts at validation -------------------------------------------------

    def answer_eval_prompts(self) -> None:
        """Answer `eval_generations` of the data module's validation prompts greedily and log the verifiers'
        scores per task; print and log the first `sample_generations` answers."""
        dm = self.trainer.datamodule
        limit = self.hparams.eval_generations
        if not limit or self.tokenizer is None or self.prompt_style is None or not hasattr(dm, "eval_prompts"):
            return
        if type(self.model).__name__ == "FullyShardedDataParallel":
            return  # decoding calls blocks outside the root forward, which FSDP forbids
        from lit_llm.rollout.answers import score_answers

        items = dm.eval_prompts(limit)
        conversations = [messages for messages, _, _ in items]
        result = score_answers(
            self.model, self.tokenizer, self.prompt_style, conversations, [task for _, _, task in items],
            max_new_tokens=self.hparams.max_new_tokens,
        )
        for task, scores in result.scores.items():
            name = "val/exact_match" if task == "all" else f"val/exact_match/{task}"
            self.log(name, scores["exact_match"])
            if task == "all":
                self.log("val/reward", scores["reward"])
        log_dir = self.trainer.log_dir  # a collective under DDP: every rank asks
        if self.trainer.is_global_zero:
            self._report_samples(items, result.responses, log_dir)

    def _report_samples(self, items: list, responses: list[str], log_dir: str | None) -> None:
        from lit_llm.callbacks import write_samples

        shown = list(zip(items, responses))[: self.hparams.sample_generations]
        if not shown:
            return
        step = self.trainer.global_step
        rank_zero_info(f"answers at step {step}:")
        rows = []
        for (messages, reference, _), response in shown:
            prompt = messages[-1]["content"]
            rank_zero_info(f"  {prompt!r} -> {response!r} (reference {reference!r})")
            rows.append([step, prompt, response, reference])
        write_samples(self.trainer, log_dir, ["step", "prompt", "response", "reference"], rows)

    # ---- checkpoints ------------------------------------------------------------------------------

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        meta = {
            "stage": self.stage_name,
            "model_config": self.config.to_dict(),
            "tokenizer": self.tokenizer.to_json() if self.tokenizer is not None else None,
        }
        if self.prompt_style is not None:
            meta["prompt_style"] = style_to_dict(self.prompt_style)
        checkpoint[META_KEY] = meta
        if self.lora_config is not None:
            # Adapters only: the frozen base weights are the `init_from` checkpoint's, named here.
            meta["lora"] = self.lora_config.to_dict()
            meta["lora_base"] = str(resolve_checkpoint_path(self.hparams.init_from).resolve())
            meta["lora_base_given"] = str(self.hparams.init_from)
            meta["lora_base_fingerprint"] = self.policy.fingerprint
            state = checkpoint["state_dict"]
            for key in frozen_parameter_names(self):
                state.pop(key, None)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        if self.lora_config is not None and self.model is not None:
            # A LoRA checkpoint leaves out the frozen base weights: the live ones, rebuilt from init_from, fill in.
            state = checkpoint["state_dict"]
            live = self.state_dict()
            for key in frozen_parameter_names(self):
                if key not in state and key in live:
                    state[key] = live[key]


def _by_name(value: Any) -> Any:
    """A function as "module:qualname" (how hyperparameters store it); anything else as it is."""
    if callable(value) and not isinstance(value, type):
        return f"{value.__module__}:{value.__qualname__}"
    return value


def flops_per_batch(stage: Stage) -> int | None:
    """FLOPs of one micro-batch's forward + backward, counted on the meta device (no memory, no time), when the
    data's batches have a fixed shape; None otherwise."""
    shape = stage.data_info.batch_shape if stage.data_info is not None else None
    if not shape:
        return None
    batch, block = shape
    with torch.device("meta"):
        meta_model = GPT(stage.config)
        x = torch.zeros(batch, block, dtype=torch.long)
    return measure_flops(meta_model, lambda: meta_model(x), lambda y: y.sum())
