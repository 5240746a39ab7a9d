"""PPOModule: RLHF with PPO. The policy answers prompts, a reward source scores the answers, and clipped
policy-gradient updates raise the score while a per-token KL penalty keeps the policy near where it started."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from lit_llm.checkpoint import checkpoint_meta, load_checkpoint, model_state
from lit_llm.errors import CheckpointError, ConfigError
from lit_llm.generation import padded_positions_and_mask
from lit_llm.lora import apply_lora
from lit_llm.model import Config, RewardModel
from lit_llm.rewards import RewardCounts, Rollouts, check_reward_spec, check_scores, load_reward_source
from lit_llm.rl import (
    KL_ESTIMATORS,
    adaptive_kl_coef,
    entropy_from_logits,
    gae,
    kl_estimate,
    masked_mean,
    masked_whiten,
    ppo_policy_loss,
    ppo_value_loss,
)
from lit_llm.rollout.layout import response_logps
from lit_llm.rollout.sampler import RolloutSampler
from lit_llm.stages.base import Stage
from lit_llm.stages.engine_sync import RolloutEngines
from lit_llm.stages.reference import FrozenReference
from lit_llm.stages.rl_validation import RolloutValidation, check_can_generate, reduce_sum, write_rollouts


class PPOModule(Stage):
    """Align a policy with PPO against a reward model or a reward function (manual optimization).

    Each training step takes a batch of prompts and
      1. samples a response to each with the policy (KV cache, batched; temperature, top-k, top-p; stops at the
         prompt style's stop tokens, EOS, or `stop_strings`);
      2. scores the responses with the reward source (`reward_model` or `reward_function`), minus
         `missing_eos_penalty` for responses that never stopped; a source that raises or returns NaN skips that
         rollout, an out-of-range value is clipped to +-`reward_clip`, and both are counted;
      3. computes the policy's and the frozen reference's log-probs of the response tokens at the sampling
         temperature, and the values; per-token rewards are -kl_coef * KL (k1 or k3) with the score added at the
         last token; advantages by GAE (gamma, lam), whitened across all ranks;
      4. runs `num_ppo_epochs` passes over `num_mini_batches` shuffled minibatches: clipped policy loss +
         vf_coef * clipped value loss - entropy_coef * entropy, one optimizer step (after gradient-norm clipping)
         per minibatch.
    So `trainer.max_steps` counts optimizer steps: a rollout batch makes num_ppo_epochs * num_mini_batches.
    Loggers record one row per rollout batch with TRL's names (objective/kl, objective/scores, policy/clipfrac_avg,
    loss/value_avg, val/ratio, ...), the seconds spent generating, scoring and training, and a table of samples.
    Validation answers the held-out prompts greedily: val/score (the reward source), and for the built-in tasks
    val/reward and val/exact_match (the verifiers).

    Args:
        reward_model: a RewardModule checkpoint to score responses with (same tokenizer as the policy).
        reward_function: or a Python function `f(prompt, response) -> float` as "package.module:function";
            `lit_llm.tasks.verify` scores the built-in tasks (1 if right, else up to 0.5 by similarity). From
            Python, the function itself may be passed.
        value_model: "critic", a separate value network initialized from `critic_init_from`, or "head", a linear
            value head on the policy's backbone (one network, cheaper; value and policy gradients share it).
        critic_init_from: checkpoint the critic starts from; None: `reward_model` if set, else `init_from`.
        temperature: sampling temperature (> 0); log-probs are computed at the same temperature.
        top_k: sample from the k most likely tokens only (None: all).
        top_p: nucleus sampling mass.
        stop_strings: texts that end a response besides the stop tokens (matched on the decoded text).
        samples_per_prompt: responses sampled for each prompt of a batch (a rollout batch is data.batch_size x
            samples_per_prompt): several answers to one prompt let the advantages compare them.
        missing_eos_penalty: subtracted from the score of a response that never stopped; None: no penalty.
        reward_clip: scores are clipped to +-reward_clip.
        kl_coef: weight of the per-token KL penalty (the starting value when adaptive).
        kl_estimator: "k1" (log-ratio) or "k3" (non-negative, lower variance).
        kl_target: adapt kl_coef so the KL per response tracks this value (Ziegler et al.); None keeps it fixed.
        kl_horizon: the adaptive controller's horizon in rollouts.
        gamma: discount factor of GAE.
        lam: lambda of GAE.
        whiten_rewards: whiten the per-token rewards (keeping their mean) before GAE.
        cliprange: policy ratio clip epsilon.
        cliprange_value: value clip epsilon.
        vf_coef: weight of the value loss.
        entropy_coef: weight of the entropy bonus (0: none).
        num_ppo_epochs: passes over each rollout batch.
        num_mini_batches: optimizer steps per pass; must divide the data's batch_size.
        micro_batch_size: rows per forward/backward inside a minibatch (gradients accumulate); None: the minibatch.
        forward_batch_size: rows per no-grad forward pass while scoring rollouts.
        max_grad_norm: clip the gradient norm of each optimizer step to this; None: no clipping.
        sample_generations: rollouts (and validation answers) written to the samples table each time.
        samples_every_n_steps: rollout batches between two sample tables.
        sampling_seed: seed of the sampling and of the minibatch order (with the step and rank, so runs resume exactly).
        rollout_engine: "native" (lit_llm's KV-cache sampler on the policy) or "vllm" (a colocated vLLM engine,
            `lit_llm.rollout.engines.VLLMEngine`, reloaded with the policy's weights before it generates once
            `sync_every` optimizer steps have passed).
        vllm: the vLLM engine's options: gpu_memory_utilization, max_model_len, enforce_eager, sleep, dtype.
        sync_every: optimizer steps between two weight syncs into the vLLM engine (1: every rollout sees the latest).
        tis_cap: with the vLLM engine, truncated importance sampling: each token's policy-gradient term is weighted
            by min(pi_train / pi_vllm, tis_cap) of the token it sampled (verl's tis_imp_ratio_cap; 2 is usual);
            logged as rollout/tis_weight_mean and rollout/tis_truncated_frac. None: off.
        **kwargs: the options every stage takes (`lit_llm.stages.base.Stage`); `init_from` (usually SFT) is
            required: the policy and the reference start from it; `max_new_tokens` is the longest response and
            `eval_generations` the held-out prompts answered at each validation run (the rest of the val set is
            unused). With `lora`, adapters go on the policy and the critic (whose value head trains in full) and the
            reference is the policy with its adapters disabled, so no copy is held. This stage's defaults are
            learning_rate 3e-6, min_lr 3e-7, warmup_steps 0, eval_generations 200, max_new_tokens 32.
    """

    stage_name = "ppo"

    defaults: ClassVar[dict[str, Any]] = {**Stage.defaults, "learning_rate": 3e-6, "min_lr": 3e-7,
                                          "eval_generations": 200}  # fmt: skip

    def __init__(
        self,
        reward_model: str | None = None,
        reward_function: str | Callable[[str, str], float] | None = None,
        value_model: Literal["critic", "head"] = "critic",
        critic_init_from: str | None = None,
        temperature: float = 0.7,
        top_k: int | None = None,
        top_p: float = 1.0,
        stop_strings: list[str] | None = None,
        samples_per_prompt: int = 1,
        missing_eos_penalty: float | None = None,
        reward_clip: float = 10.0,
        kl_coef: float = 0.05,
        kl_estimator: Literal["k1", "k3"] = "k1",
        kl_target: float | None = None,
        kl_horizon: int = 10000,
        gamma: float = 1.0,
        lam: float = 0.95,
        whiten_rewards: bool = False,
        cliprange: float = 0.2,
        cliprange_value: float = 0.2,
        vf_coef: float = 0.1,
        entropy_coef: float = 0.0,
        num_ppo_epochs: int = 4,
        num_mini_batches: int = 1,
        micro_batch_size: int | None = None,
        forward_batch_size: int = 64,
        max_grad_norm: float | None = 1.0,
        samples_every_n_steps: int = 10,
        sampling_seed: int = 0,
        rollout_engine: Literal["native", "vllm"] = "native",
        vllm: dict[str, Any] | None = None,
        sync_every: int = 1,
        tis_cap: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if self.hparams.init_from is None:
            raise ConfigError("model.init_from is required: PPO starts the policy and its reference from a checkpoint")
        check_reward_spec(reward_model, reward_function)  # a bad name fails now, not after the models are built
        checks = {
            "value_model must be 'critic' or 'head'": value_model in ("critic", "head"),
            f"kl_estimator must be one of {', '.join(KL_ESTIMATORS)}": kl_estimator in KL_ESTIMATORS,
            "temperature must be > 0 (PPO samples its rollouts)": temperature > 0,
            "samples_per_prompt, num_ppo_epochs, num_mini_batches and forward_batch_size must be >= 1":
            min(samples_per_prompt, num_ppo_epochs, num_mini_batches, forward_batch_size) >= 1,
            "micro_batch_size must be >= 1 or null": micro_batch_size is None or micro_batch_size >= 1,
            "kl_coef, vf_coef and entropy_coef must be >= 0": min(kl_coef, vf_coef, entropy_coef) >= 0,
            "kl_target must be > 0 or null, kl_horizon >= 1": (kl_target is None or kl_target > 0) and kl_horizon >= 1,
            "cliprange and cliprange_value must be > 0, reward_clip > 0": min(cliprange, cliprange_value, reward_clip)
            > 0,
            "gamma and lam must be in [0, 1]": 0 <= gamma <= 1 and 0 <= lam <= 1,
            "top_p must be in (0, 1]": 0 < top_p <= 1,
        }
        failed = [message for message, ok in checks.items() if not ok]
        if failed:
            raise ConfigError("model." + "; model.".join(failed))
        self._reward_function = reward_function
        self.automatic_optimization = False
        self.reference: FrozenReference | None = None
        self.value_head: nn.Linear | None = None
        self.critic: RewardModel | None = None
        self.reward_source: Any = None  # a plain object, so a reward model is neither trained nor saved
        self.sampler: RolloutSampler | None = None
        self.validation = RolloutValidation(self.hparams.eval_generations, self.hparams.sample_generations)
        self.rollout_engines = RolloutEngines(rollout_engine, vllm, sync_every, tis_cap)
        self.kl_coef = kl_coef
        self.reward_counts = RewardCounts()
        self.episodes = 0

    # ---- building ---------------------------------------------------------------------------------

    def setup(self, stage: str) -> None:
        if self.model is not None:
            return
        super().setup(stage)
        check_can_generate(self, "PPO")
        hp = self.hparams
        if self.reward_source is None:
            self.reward_source = load_reward_source(
                hp.reward_model, self._reward_function, self.tokenizer, self.prompt_style
            )
        batch_size = self.data_info.batch_size if self.data_info is not None else None
        if batch_size is not None and batch_size * hp.samples_per_prompt % hp.num_mini_batches:
            raise ConfigError(
                f"data.batch_size x model.samples_per_prompt ({batch_size} x {hp.samples_per_prompt}) must be a "
                "multiple of model.num_mini_batches"
            )
        pad_id = self.tokenizer.pad_id if self.tokenizer.pad_id is not None else 0
        self.sampler = RolloutSampler.for_style(
            self.tokenizer, self.prompt_style, hp.max_new_tokens, temperature=hp.temperature, top_k=hp.top_k,
            top_p=hp.top_p, stop_strings=hp.stop_strings, pad_id=pad_id, engine=self.rollout_engines.engine,
        )  # fmt: skip

    def configure_components(self, wrap: Any = None) -> None:
        """The frozen reference (a copy of the starting weights, or under LoRA the policy with adapters off), then
        the value head or the critic."""
        self.reference = FrozenReference.of_stage(self, wrap)
        n_embd = self.config.n_embd
        if self.hparams.value_model == "head":
            self.value_head = nn.Linear(n_embd, 1, bias=False)
            nn.init.normal_(self.value_head.weight, std=1.0 / math.sqrt(n_embd + 1))
            if wrap is not None:  # under FSDP every trained module is sharded (its gradients reduced) too
                self.value_head = wrap(self.value_head)
        else:
            self.critic = self._build_critic(self.policy.state, wrap)

    def _build_critic(self, init_state: dict[str, torch.Tensor] | None, wrap: Any = None) -> RewardModel:
        hp = self.hparams
        path = hp.critic_init_from or hp.reward_model or hp.init_from
        if path == hp.init_from and init_state is not None:
            config, state = self.config, init_state
        else:
            ckpt = load_checkpoint(path)
            meta = checkpoint_meta(ckpt, path)
            if self.tokenizer is not None and meta.get("tokenizer") not in (None, self.tokenizer.to_json()):
                raise CheckpointError(f"critic checkpoint {path} uses a different tokenizer than the policy")
            config, state = Config.from_dict(meta["model_config"]), model_state(ckpt, path)
        critic = RewardModel(config, wrap=wrap)
        if wrap is not None:  # under FSDP the weights load through the wrapped root (see Policy.build)
            critic = wrap(critic)
        RewardModel.load_language_model(critic, state, source=path)
        if self.lora_config is not None:  # the critic gets its own adapters; its value head trains in full
            apply_lora(critic, self.lora_config, trainable=RewardModel.heads)
        return critic

    def _trained(self) -> nn.Module:
        return nn.ModuleList([m for m in (self.model, self.value_head, self.critic) if m is not None])

    def on_fit_start(self) -> None:
        super().on_fit_start()
        self.reward_source.to(self.device)
        self.rollout_engines.start()

    # ---- forward passes ---------------------------------------------------------------------------

    def _response_outputs(
        self, net: nn.Module, ids: torch.Tensor, valid: torch.Tensor, P: int, values: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """`response_logps` at the sampling temperature, and with `values` the value before each response token."""
        logps, logits, hidden = response_logps(net, ids, valid, P, self.config.vocab_size, self.hparams.temperature)
        value = None
        if values and self.value_head is not None:
            value = self.value_head(hidden).squeeze(-1).float()
        elif values:
            position_ids, mask = padded_positions_and_mask(valid)
            value = self.critic(ids, position_ids=position_ids, attention_mask=mask, every_position=True)[:, P - 1 : -1]
        return logps, logits, value

    # ---- rollouts ---------------------------------------------------------------------------------

    def _seed(self, salt: int) -> int:
        """A seed for this rollout batch and rank, restored with the loop on resume."""
        step = self.trainer.fit_loop.epoch_loop._batches_that_stepped if self._trainer is not None else 0
        return (self.hparams.sampling_seed * 1_000_003 + step * 1009 + self.global_rank * 31 + salt) % (2**62)

    def _rollout(self, prompts: list[list[int]], greedy: bool = False) -> tuple[dict[str, Any], list[list[int]]]:
        """The sampler's responses to `prompts` and their layout, seeded by the rollout batch and rank."""
        layout, responses = self.sampler.sample(self.model, prompts, self._seed(0), self.device, greedy=greedy)
        gap = self.rollout_engines.logprob_gap(self.model, prompts, responses, self.sampler.pad_id,
                                               self.hparams.temperature)
        if gap and not greedy:
            self.log_dict(gap, on_step=True, on_epoch=False)
        return layout, responses

    def _score(self, batch: dict[str, Any], responses: list[list[int]], counts: RewardCounts) -> tuple[Any, ...]:
        """(scores, valid) of the responses from the reward source, and their texts."""
        texts = [self.tokenizer.decode(r) for r in responses]
        rollouts = Rollouts(batch["messages"], texts, batch["prompt_ids"], responses)
        source = self.reward_source
        scores, valid = check_scores(source(rollouts), rollouts, self.hparams.reward_clip, counts, source.name)
        return scores.to(self.device), valid.to(self.device), texts

    def _reduce_sum(self, x: torch.Tensor) -> torch.Tensor:
        return reduce_sum(self, x)

    @torch.no_grad()
    def _experience(self, batch: dict[str, Any]) -> dict[str, Any]:
        """One batch of rollouts with everything the update needs: old log-probs and values, advantages, returns."""
        hp = self.hparams
        start = time.perf_counter()
        layout, responses = self._rollout(batch["prompt_ids"])
        engine_logps = self.rollout_engines.last_logps(len(responses))
        generated = time.perf_counter()
        ids, valid, P = layout["ids"], layout["valid"], layout["P"]
        was_training = self.model.training
        self._trained().eval()
        logps, ref_logps, values, entropy = [], [], [], []
        for rows in torch.arange(ids.size(0), device=self.device).split(hp.forward_batch_size):
            lp, logits, v = self._response_outputs(self.model, ids[rows], valid[rows], P, values=True)
            logps.append(lp), values.append(v), entropy.append(entropy_from_logits(logits))
            with self.reference.network() as reference:
                ref_logps.append(self._response_outputs(reference, ids[rows], valid[rows], P)[0])
        self._trained().train(was_training)
        logps, ref_logps, values, entropy = (torch.cat(x) for x in (logps, ref_logps, values, entropy))

        scores, scored, texts = self._score(batch, responses, self.reward_counts)
        if hp.missing_eos_penalty is not None:
            scores = torch.where(layout["ended"], scores, scores - hp.missing_eos_penalty)
        mask = valid[:, P:] & scored[:, None]  # a skipped rollout (bad reward) takes no part in the update
        kl = kl_estimate(logps, ref_logps, hp.kl_estimator) * mask
        non_score = -self.kl_coef * kl
        rewards = non_score.clone()
        last = valid[:, P:].sum(1) - 1
        rewards[torch.arange(ids.size(0), device=self.device), last] += scores * scored
        if hp.whiten_rewards:
            rewards = masked_whiten(rewards, mask, shift_mean=False, reduce=self._reduce_sum)
        advantages, returns = gae(rewards, values, mask, hp.gamma, hp.lam)
        advantages = masked_whiten(advantages, mask, reduce=self._reduce_sum)
        rows = scored.float()
        tis_weights, tis_stats = self.rollout_engines.tis_weights(logps, engine_logps, mask)
        return {
            **layout, "mask": mask, "logps": logps, "values": values, "advantages": advantages, "returns": returns,
            "scores": scores, "scored": scored, "texts": texts, "tis_weights": tis_weights,
            "stats": {
                **tis_stats,
                "objective/kl": masked_mean(kl.sum(1), scored),
                "objective/entropy": masked_mean((entropy * mask).sum(1), scored),
                "objective/non_score_reward": masked_mean(non_score.sum(1), scored),
                "objective/rlhf_reward": masked_mean(scores + non_score.sum(1), scored),
                "objective/scores": masked_mean(scores, scored),
                "objective/skipped": (1 - rows).sum(),
                "val/num_eos_tokens": layout["ended"].float().sum(),
                "completions/mean_length": valid[:, P:].sum(1).float().mean(),
                "time/generate": torch.tensor(generated - start),
                "time/score": torch.tensor(time.perf_counter() - generated),
            },
        }  # fmt: skip

    # ---- the update -------------------------------------------------------------------------------

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        k = self.hparams.samples_per_prompt
        batch = {key: [value for value in values for _ in range(k)] for key, values in batch.items()}
        exp = self._experience(batch)
        start = time.perf_counter()
        stats = self._update(exp)
        stats["time/train"] = torch.tensor(time.perf_counter() - start)
        stats.update(exp["stats"])
        total = stats["time/generate"] + stats["time/score"] + stats["time/train"]
        stats["time/generate_fraction"] = stats["time/generate"] / total
        stats["objective/kl_coef"] = torch.tensor(self.kl_coef)
        world_rollouts = len(batch["prompt_ids"]) * self.trainer.world_size
        self.episodes += world_rollouts
        stats["episode"] = torch.tensor(float(self.episodes))
        stats["lr"] = torch.tensor(self.optimizers().param_groups[0]["lr"])
        stats = {k: v.float().to(self.device) for k, v in stats.items()}
        for key in ("objective/skipped", "val/num_eos_tokens"):
            stats[key] = self._reduce_sum(stats[key])  # totals over ranks; the rest are means
        sync = self.trainer.world_size > 1
        self.log("objective/scores", stats.pop("objective/scores"), prog_bar=True, sync_dist=sync)
        self.log_dict(stats, sync_dist=sync)
        if self.hparams.kl_target is not None:
            kl = float(self.all_gather(stats["objective/kl"]).mean()) if self.trainer.world_size > 1 else float(
                stats["objective/kl"])
            self.kl_coef = adaptive_kl_coef(self.kl_coef, kl, self.hparams.kl_target, self.hparams.kl_horizon,
                                            world_rollouts)  # fmt: skip
        if batch_idx % self.hparams.samples_every_n_steps == 0:
            write_rollouts(self, batch, exp, self.hparams.sample_generations)

    def _update(self, exp: dict[str, Any]) -> dict[str, torch.Tensor]:
        """`num_ppo_epochs` passes of clipped PPO over shuffled minibatches; the mean statistics of all passes."""
        hp = self.hparams
        optimizer, scheduler = self.optimizers(), self.lr_schedulers()
        B = exp["ids"].size(0)
        size = math.ceil(B / hp.num_mini_batches)  # a last, smaller batch of the epoch still splits
        generator = torch.Generator().manual_seed(self._seed(1))
        sums: dict[str, float] = {}
        n = 0
        for _ in range(hp.num_ppo_epochs):
            order = torch.randperm(B, generator=generator).to(self.device)
            for minibatch in order.split(size):
                chunks = minibatch.split(hp.micro_batch_size or size)
                for rows in chunks:
                    loss, stats = self._loss(exp, rows)
                    self.manual_backward(loss / len(chunks))
                    for k, v in stats.items():
                        sums[k] = sums.get(k, 0.0) + float(v)
                    n += 1
                if hp.max_grad_norm is not None:
                    self.clip_grad_norm(optimizer, hp.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                self.rollout_engines.after_step()
                if scheduler is not None:
                    scheduler.step()
        return {k: torch.tensor(v / max(n, 1)) for k, v in sums.items()}

    def _loss(self, exp: dict[str, Any], rows: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        hp = self.hparams
        logps, logits, values = self._response_outputs(
            self.model, exp["ids"][rows], exp["valid"][rows], exp["P"], values=True
        )
        mask = exp["mask"][rows]
        weights = exp["tis_weights"][rows] if exp["tis_weights"] is not None else None
        pg_loss, pg = ppo_policy_loss(logps, exp["logps"][rows], exp["advantages"][rows], mask, hp.cliprange, weights)
        vf_loss, vf_clipfrac = ppo_value_loss(
            values, exp["values"][rows], exp["returns"][rows], mask, hp.cliprange_value
        )
        with torch.set_grad_enabled(hp.entropy_coef > 0):
            entropy = masked_mean(entropy_from_logits(logits), mask)
        loss = pg_loss + hp.vf_coef * vf_loss - hp.entropy_coef * entropy
        stats = {
            "policy/approxkl_avg": pg["approxkl"], "policy/clipfrac_avg": pg["clipfrac"],
            "policy/entropy_avg": entropy.detach(), "loss/policy_avg": pg_loss.detach(),
            "loss/value_avg": vf_loss.detach(), "val/clipfrac_avg": vf_clipfrac, "val/ratio": pg["ratio"],
            "val/ratio_var": pg["ratio_var"],
        }  # fmt: skip
        return loss, stats

    # ---- validation -------------------------------------------------------------------------------

    def on_validation_epoch_start(self) -> None:
        self.validation.start(self.device)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self.validation.step(self, batch, batch_idx, lambda prompts: self._rollout(prompts, greedy=True)[1],
                             self._score)  # fmt: skip

    def on_validation_epoch_end(self) -> None:
        self.validation.end(self, self._reduce_sum)

    # ---- checkpoints ------------------------------------------------------------------------------

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        FrozenReference.strip(checkpoint)
        checkpoint["ppo"] = {"kl_coef": self.kl_coef, "episodes": self.episodes,
                             "reward_counts": self.reward_counts.state()}  # fmt: skip

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        if self.reference is not None:
            self.reference.fill(checkpoint)
        state = checkpoint.get("ppo")
        if state:
            self.kl_coef, self.episodes = float(state["kl_coef"]), int(state["episodes"])
            self.reward_counts.load(state["reward_counts"])
