"""CausalLM: the pretraining stage — next-token prediction with warmup + cosine AdamW."""

from __future__ import annotations

from typing import Any

import torch
from lightning.fabric.utilities.throughput import measure_flops
from lightning.pytorch import LightningModule

from lit_llm.checkpoint import (
    META_KEY,
    checkpoint_meta,
    load_checkpoint,
    load_weights,
    model_state,
    resolve_checkpoint_path,
)
from lit_llm.data.templates import PromptStyle, style_to_dict
from lit_llm.data.tokenizer import Tokenizer
from lit_llm.errors import ConfigError
from lit_llm.lora import LoRAConfig, apply_lora, frozen_parameter_names, state_fingerprint
from lit_llm.losses import next_token_loss, prefix_lm_targets
from lit_llm.metrics import LanguageModelMetrics
from lit_llm.model import GPT, Config
from lit_llm.stages.base import build_adamw, total_grad_norm, warmup_cosine_scheduler


class CausalLM(LightningModule):
    """Pretrain a GPT on next-token prediction.

    Args:
        model: name of a preset in `lit_llm.model.PRESETS` (tiny, gpt2-124m, llama-125m, ...).
        model_config: fields of `lit_llm.model.Config` that override the preset, e.g. {n_layer: 2}.
        vocab_size: model vocabulary; None takes it from the data module's token files.
        learning_rate: peak learning rate, reached at the end of warmup.
        min_lr: floor the cosine decays to.
        warmup_steps: optimizer steps of linear warmup.
        lr_decay_steps: step at which the cosine reaches `min_lr`; None uses the Trainer's max_steps.
        weight_decay: AdamW decay of matrices (norms, biases and embeddings are never decayed).
        betas: AdamW betas.
        prefix_length: positions at the start of each window that carry no loss (prefix-LM); 0 = all.
        init_from: a lit_llm checkpoint (file or run folder) whose weights and model config to start from.
        compile: compile the model with torch.compile.
        lora: low-rank adapters instead of full fine-tuning, e.g. {r: 8, alpha: 16, dropout: 0.05, targets: [qkv,
            attn_proj]} (targets among qkv, attn_proj, fc, mlp_proj, lm_head); needs `init_from`. Only the adapters
            (and any new head) train and are saved; the checkpoint names its base, `init_from`.
    """

    stage_name = "causal_lm"
    # Parameters (name prefixes inside `self.model`) that stay trainable beside LoRA adapters.
    lora_trainable: tuple[str, ...] = ()

    def __init__(
        self,
        model: str = "tiny",
        model_config: dict[str, Any] | None = None,
        vocab_size: int | None = None,
        learning_rate: float = 6e-4,
        min_lr: float = 6e-5,
        warmup_steps: int = 2000,
        lr_decay_steps: int | None = None,
        weight_decay: float = 0.1,
        betas: tuple[float, float] = (0.9, 0.95),
        prefix_length: int = 0,
        init_from: str | None = None,
        compile: bool = False,
        lora: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if min_lr > learning_rate:
            raise ConfigError(f"model.min_lr ({min_lr}) is above model.learning_rate ({learning_rate})")
        self.lora_config = LoRAConfig.from_dict(lora) if lora is not None else None
        if self.lora_config is not None and not init_from:
            raise ConfigError("model.lora needs model.init_from: adapters train on top of a checkpoint's weights")
        # Built now so a bad preset name or config key fails before any data is touched.
        self.config = Config.from_name(model, **(model_config or {}))
        if vocab_size is not None:
            self.config = self.config.replace(vocab_size=vocab_size)
        self.model: GPT | None = None
        self.tokenizer: Tokenizer | None = None
        # The data module's prompt style (SFT and later stages), saved in checkpoints for generation.
        self.prompt_style: PromptStyle | None = None
        self.val_metrics: LanguageModelMetrics | None = None
        self._init_state: dict[str, torch.Tensor] | None = None
        self._base_fingerprint: float | None = None  # with LoRA: checksum of the init_from weights
        # Read by ThroughputMonitor for FLOP/s and MFU; measured in on_fit_start.
        self.flops_per_batch: int | None = None

    # ---- building ----------------------------------------------------------------------------------

    def setup(self, stage: str) -> None:
        if self.model is not None:
            return
        hp = self.hparams
        dm = self.trainer.datamodule if self._trainer is not None else None
        if hp.init_from:
            ckpt = load_checkpoint(hp.init_from)
            meta = checkpoint_meta(ckpt, hp.init_from)
            if meta.get("stage") == "reward" and self.stage_name != "reward":
                raise ConfigError(
                    f"model.init_from: {hp.init_from} is a reward-model checkpoint (a score head, no language-model "
                    f"head), so the {self.stage_name} stage cannot start from it; use a pretraining or SFT checkpoint "
                    "(a reward model is given to PPO as its reward source)"
                )
            self.config = Config.from_dict(meta["model_config"], **(hp.model_config or {}))
            self._init_state = model_state(ckpt, hp.init_from)
            if self.lora_config is not None:
                self._base_fingerprint = state_fingerprint(self._init_state)
            if meta.get("tokenizer"):
                self.tokenizer = Tokenizer(json_str=meta["tokenizer"])
        if dm is not None and getattr(dm, "tokenizer", None) is not None:
            self.tokenizer = dm.tokenizer
        if getattr(dm, "prompt_style", None) is not None:
            self.prompt_style = dm.prompt_style
        data_vocab = getattr(dm, "vocab_size", None)
        if data_vocab is not None:
            if hp.get("vocab_size") is None and not hp.init_from:
                self.config = self.config.replace(vocab_size=data_vocab)
            elif data_vocab > self.config.vocab_size:
                raise ConfigError(
                    f"the data's vocabulary ({data_vocab} tokens) is larger than the model's vocab_size "
                    f"({self.config.vocab_size})"
                )
        block = getattr(dm, "block_size", None)
        if block is not None and block > self.config.block_size:
            raise ConfigError(f"data.block_size ({block}) exceeds the model's block_size ({self.config.block_size})")
        token_bytes = None
        if self.tokenizer is not None and self.tokenizer.vocab_size <= self.config.padded_vocab_size:
            lengths = self.tokenizer.token_byte_lengths()
            lengths += [0] * (self.config.padded_vocab_size - len(lengths))
            token_bytes = torch.tensor(lengths)
        self.val_metrics = LanguageModelMetrics(token_bytes)

    def configure_model(self) -> None:
        if self.model is not None:
            return
        if self.lora_config is not None and self._sharded():
            raise ConfigError("model.lora runs on one device or with DDP; LoRA under FSDP is not supported")
        self.model = self._build_model(self._fsdp_wrap())
        self._init_state = None
        if self.lora_config is not None:
            apply_lora(self.model, self.lora_config, trainable=self.lora_trainable)
        if self.hparams.compile:
            self.model.compile()

    def _build_model(self, wrap: Any = None) -> torch.nn.Module:
        """The stage's network, with the `init_from` weights; under FSDP each Block, then the root, is wrapped."""
        model = GPT(self.config, wrap=wrap)
        if self._init_state is not None:
            load_weights(model, self._init_state, source=self.hparams.init_from)
        return wrap(model) if wrap is not None else model

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

    def on_fit_start(self) -> None:
        dm = self.trainer.datamodule
        if hasattr(dm, "batch_shape"):
            batch, block = dm.batch_shape or (None, None)  # None: batches vary in shape, no fixed FLOP count
        else:
            batch, block = getattr(dm, "batch_size", None), getattr(dm, "block_size", None)
        if batch and block:
            # FLOPs of one micro-batch's forward + backward, counted on the meta device (no memory, no time).
            with torch.device("meta"):
                meta_model = GPT(self.config)
                x = torch.zeros(batch, block, dtype=torch.long)
            self.flops_per_batch = measure_flops(meta_model, lambda: meta_model(x), lambda y: y.sum())

    # ---- steps ------------------------------------------------------------------------------------

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids)

    def _logging_step(self) -> bool:
        """Whether loggers write this step; a self.log call costs ~0.5 ms, wasted on other steps."""
        connector = getattr(self.trainer, "_logger_connector", None)
        return connector is None or connector.should_update_logs

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        logits = self.model(batch["input_ids"])
        loss = next_token_loss(logits, prefix_lm_targets(batch["targets"], self.hparams.prefix_length))
        logging_step = self._logging_step()
        if logging_step or self.trainer.progress_bar_callback is not None:
            self.log("train/loss", loss, prog_bar=True)
        if logging_step:
            self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"])
        return loss

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        if self._logging_step():
            norm = total_grad_norm(self.model.parameters())
            if self._sharded():  # each rank holds a shard of the gradients
                norm = self.trainer.strategy.reduce(norm.pow(2).to(self.device), reduce_op="sum").sqrt()
            self.log("train/grad_norm", norm)

    def _eval_step(self, batch: dict[str, torch.Tensor]) -> None:
        logits = self.model(batch["input_ids"])
        targets = prefix_lm_targets(batch["targets"], self.hparams.prefix_length)
        self.val_metrics.update(next_token_loss(logits, targets, reduction="sum"), targets)

    def _eval_epoch_end(self, prefix: str) -> None:
        values = self.val_metrics.compute()
        self.val_metrics.reset()
        self.log_dict({f"{prefix}/{k}": v for k, v in values.items()}, prog_bar=prefix == "val")

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch)

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch)

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")

    # ---- checkpoints ----------------------------------------------------------------------------

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[META_KEY] = {
            "stage": self.stage_name,
            "model_config": self.config.to_dict(),
            "tokenizer": self.tokenizer.to_json() if self.tokenizer is not None else None,
        }
        if self.prompt_style is not None:
            checkpoint[META_KEY]["prompt_style"] = style_to_dict(self.prompt_style)
        if self.lora_config is not None:
            # Adapters only: the frozen base weights are the `init_from` checkpoint's, named here.
            checkpoint[META_KEY]["lora"] = self.lora_config.to_dict()
            checkpoint[META_KEY]["lora_base"] = str(resolve_checkpoint_path(self.hparams.init_from).resolve())
            checkpoint[META_KEY]["lora_base_given"] = str(self.hparams.init_from)
            checkpoint[META_KEY]["lora_base_fingerprint"] = self._base_fingerprint
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
