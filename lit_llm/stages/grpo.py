"""GRPOModule: critic-free RL on verifiable rewards — GRPO and its fixes (Dr. GRPO, DAPO, GSPO), RLOO and REINFORCE++
as one stage, chosen by `advantage_estimator` and `loss_type`. The policy answers each prompt `num_generations`
times, rewards score the answers, and each answer's advantage is measured against its group (or the batch)."""

from __future__ import annotations

import math
import time
import zlib
from array import array
from collections.abc import Callable
from typing import Any, ClassVar, Literal

import torch

from lit_llm.errors import ConfigError
from lit_llm.rewards import FunctionReward, RewardCounts, RewardSet, Rollouts, check_reward_weights
from lit_llm.rl import entropy_from_logits, kl_estimate, masked_mean
from lit_llm.rlvr import (
    ADVANTAGE_ESTIMATORS,
    GROUP_ESTIMATORS,
    LOSS_TYPES,
    SCALE_REWARDS,
    aggregate,
    clipped_surrogate,
    group_mean_std,
    grpo_advantages,
    importance_log_ratio,
    overlong_penalty,
    reinforce_pp_advantages,
    rloo_advantages,
    sequence_advantages_to_tokens,
)
from lit_llm.rollout.layout import layout as rollout_layout
from lit_llm.rollout.layout import response_logps
from lit_llm.rollout.sampler import RolloutSampler
from lit_llm.stages.base import Stage
from lit_llm.stages.engine_sync import RolloutEngines
from lit_llm.stages.groups import GroupBuffer, Groups
from lit_llm.stages.reference import FrozenReference
from lit_llm.stages.rl_validation import RolloutValidation, check_can_generate, reduce_sum, write_rollouts


class GRPOModule(Stage):
    """Critic-free policy optimization on verifiable rewards (manual optimization).

    Each training step
      1. answers each of the batch's prompts `num_generations` times (the group) with the policy — temperature,
         top-k, top-p, the prompt style's stop tokens and `stop_strings`, at most `max_completion_length` tokens. A
         group is generated on one rank, and every answer is seeded by (sampling_seed, generation batch, its prompt,
         its index in the group), so N ranks sample what one process samples at the same global batch;
      2. scores every answer with the rewards (`reward_functions` and `reward_models`, weighted by
         `reward_weights`); an answer a reward skips (it raised, or returned NaN) takes no part, and is counted;
         DAPO's `overlong_buffer` penalty is added, and with `mask_truncated_completions` answers that hit the
         length limit carry no loss;
      3. with `dynamic_sampling`, drops groups whose rewards are all equal (they carry no signal), counts them, and
         generates from further prompt batches until `data.batch_size` informative groups per rank are held or
         `max_generation_batches` batches were tried; `trainer.max_steps` counts optimizer steps, not batches;
      4. computes advantages with `advantage_estimator`:
           grpo                   (r - group mean) / group std (`scale_rewards: group`), / batch std (`batch`),
                                  or unscaled (`none`, Dr. GRPO);
           rloo                   r minus the mean of the other answers of its group;
           reinforce_pp           REINFORCE++: per-token rewards -beta * KL(k1) plus the score at the end, returns
                                  whitened over the batch (all ranks);
           reinforce_pp_baseline  the same after subtracting the group's mean score;
      5. takes `num_iterations` passes over `num_mini_batches` minibatches of whole groups, with the
         log-probs of the sampling policy kept as the old ones: the clipped surrogate with clip range
         [1 - epsilon_low, 1 + epsilon_high] (clip-higher when epsilon_high > epsilon_low), an optional dual clip
         `delta`, token or sequence (GSPO) importance ratios, plus beta * k3 KL to the reference for the estimators
         that keep KL out of the reward, aggregated by `loss_type` (grpo, bnpo, dr_grpo, dapo;
         `lit_llm.rlvr.aggregate`). One optimizer step per minibatch.
    `beta: 0` builds no reference model at all. Loggers get TRL's names: reward, reward_std, rewards/<name>/mean,
    frac_reward_zero_std, kl, entropy, clip_ratio/low_mean, clip_ratio/high_mean, clip_ratio/region_mean,
    completions/mean_length, completions/clipped_ratio, completions/mean_terminated_length; with time/generate,
    time/score and time/train (seconds per step), and tables of rollouts and validation answers. Validation answers
    held-out prompts greedily: val/score (the weighted reward), and for the built-in tasks val/reward and
    val/exact_match (the verifiers).

    Args:
        reward_functions: Python functions `f(prompt, response) -> float` as "package.module:function" (a
            function with a `reference` parameter also gets the record's reference answer): `lit_llm.tasks.verify`
            for the built-in tasks, `lit_llm.rewards.math_answers.math_reward` for math answers.
        reward_models: RewardModule checkpoints (same tokenizer as the policy).
        reward_weights: one weight per reward, functions first; None: all 1.
        advantage_estimator: grpo, rloo, reinforce_pp or reinforce_pp_baseline (above).
        num_generations: answers per prompt (the group); >= 2 for grpo, rloo and reinforce_pp_baseline.
        scale_rewards: for grpo: group, batch or none.
        loss_type: grpo, bnpo, dr_grpo or dapo.
        epsilon_low: lower clip range of the ratio.
        epsilon_high: upper clip range; None: epsilon_low (DAPO uses 0.28 with 0.2).
        delta: dual-clip bound (> 1) on the loss of negative advantages; None: off.
        importance_sampling_level: "token" or "sequence" (GSPO).
        num_iterations: passes over each rollout batch (GRPO's mu); the old log-probs are those of the sampler.
        num_mini_batches: optimizer steps per pass; must divide data.batch_size (minibatches hold whole groups).
        micro_batch_size: answers per forward/backward inside a minibatch; None: the minibatch.
        beta: weight of the KL to the reference (k3 in the loss; k1 in the reward for reinforce_pp*); 0: no
            reference model is loaded.
        temperature: sampling temperature (> 0); log-probs are taken at the same temperature.
        top_k: sample from the k most likely tokens only (None: all).
        top_p: nucleus sampling mass.
        stop_strings: texts that end an answer besides the stop tokens.
        max_completion_length: the longest answer in tokens (prompts that leave no room for it are skipped and
            counted by the data module).
        mask_truncated_completions: answers that hit max_completion_length carry no loss (DAPO).
        overlong_buffer: DAPO's soft overlong punishment over the last this many tokens before the limit (0: off).
        overlong_penalty_factor: the penalty at the limit.
        dynamic_sampling: drop groups of equal rewards and sample more prompts (DAPO).
        max_generation_batches: with dynamic sampling, generation batches tried per optimizer step at most.
        reward_clip: each reward is clipped to +-reward_clip.
        forward_batch_size: answers per no-grad forward pass (old and reference log-probs).
        max_grad_norm: clip the gradient norm of each optimizer step; None: no clipping.
        samples_every_n_steps: optimizer steps between two rollout tables.
        sampling_seed: seed of the sampling.
        rollout_engine: "native" (lit_llm's KV-cache sampler on the policy) or "vllm" (a colocated vLLM engine,
            `lit_llm.rollout.engines.VLLMEngine`, reloaded with the policy's weights before it generates once
            `sync_every` optimizer steps have passed).
        vllm: the vLLM engine's options: gpu_memory_utilization, max_model_len, enforce_eager, sleep, dtype.
        sync_every: optimizer steps between two weight syncs into the vLLM engine (1: every rollout sees the latest).
        tis_cap: with the vLLM engine, truncated importance sampling: each token's policy-gradient term is weighted
            by min(pi_train / pi_vllm, tis_cap) of the token it sampled (verl's tis_imp_ratio_cap; 2 is usual);
            logged as rollout/tis_weight_mean and rollout/tis_truncated_frac. None: off.
        **kwargs: the options every stage takes (`lit_llm.stages.base.Stage`); `init_from` (usually SFT) is
            required. This stage's defaults: learning_rate 1e-6, min_lr 1e-7, eval_generations 200. Use
            max_completion_length, not max_new_tokens.
    """

    stage_name = "grpo"

    defaults: ClassVar[dict[str, Any]] = {**Stage.defaults, "learning_rate": 1e-6, "min_lr": 1e-7,
                                          "eval_generations": 200}  # fmt: skip

    def __init__(
        self,
        reward_functions: list[str | Callable[..., float]] | None = None,
        reward_models: list[str] | None = None,
        reward_weights: list[float] | None = None,
        advantage_estimator: Literal["grpo", "rloo", "reinforce_pp", "reinforce_pp_baseline"] = "grpo",
        num_generations: int = 8,
        scale_rewards: Literal["group", "batch", "none"] = "group",
        loss_type: Literal["grpo", "bnpo", "dr_grpo", "dapo"] = "dapo",
        epsilon_low: float = 0.2,
        epsilon_high: float | None = None,
        delta: float | None = None,
        importance_sampling_level: Literal["token", "sequence"] = "token",
        num_iterations: int = 1,
        num_mini_batches: int = 1,
        micro_batch_size: int | None = None,
        beta: float = 0.0,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float = 1.0,
        stop_strings: list[str] | None = None,
        max_completion_length: int = 32,
        mask_truncated_completions: bool = False,
        overlong_buffer: int = 0,
        overlong_penalty_factor: float = 1.0,
        dynamic_sampling: bool = False,
        max_generation_batches: int = 4,
        reward_clip: float = 10.0,
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
        if kwargs.get("max_new_tokens") is not None:
            raise ConfigError("model.max_new_tokens: this stage calls it model.max_completion_length; set that")
        super().__init__(max_new_tokens=max_completion_length, **kwargs)
        if self.hparams.init_from is None:
            raise ConfigError("model.init_from is required: the policy (and its reference) start from a checkpoint")
        check_options(self.hparams)
        self._reward_functions = list(reward_functions or [])
        # A bad function name, signature or weight count fails now, not after the models are built.
        check_reward_weights(len(self._reward_functions), len(reward_models or []), reward_weights)
        for i, fn in enumerate(self._reward_functions):
            FunctionReward(fn, f"model.reward_functions[{i}]")
        self.automatic_optimization = False
        self.epsilon_high = epsilon_low if epsilon_high is None else epsilon_high
        self.reference: FrozenReference | None = None
        self.rewards: RewardSet | None = None  # a plain object: a reward model is neither trained nor saved
        self.sampler: RolloutSampler | None = None
        self.buffer: GroupBuffer | None = None
        self.validation = RolloutValidation(self.hparams.eval_generations, self.hparams.sample_generations)
        self.rollout_engines = RolloutEngines(rollout_engine, vllm, sync_every, tis_cap)
        self.generation_batches = 0
        self.episodes = 0
        self._seconds = [0.0, 0.0]  # generating and scoring since the last update

    # ---- building ---------------------------------------------------------------------------------

    def setup(self, stage: str) -> None:
        if self.model is not None:
            return
        super().setup(stage)
        check_can_generate(self, "GRPO")
        hp = self.hparams
        if self.rewards is None:
            self.rewards = RewardSet(self._reward_functions, hp.reward_models or [], hp.reward_weights,
                                     self.tokenizer, self.prompt_style)  # fmt: skip
        batch_size = self.data_info.batch_size if self.data_info is not None else None
        if batch_size is not None and batch_size % hp.num_mini_batches:
            raise ConfigError(
                f"data.batch_size ({batch_size} prompts, so {batch_size * hp.num_generations} answers in groups of "
                f"model.num_generations={hp.num_generations}) must be a multiple of model.num_mini_batches "
                f"({hp.num_mini_batches}), so every minibatch holds whole groups"
            )
        self.buffer = GroupBuffer(batch_size or 1, hp.max_generation_batches if hp.dynamic_sampling else 1,
                                  drop=hp.dynamic_sampling)  # fmt: skip
        pad_id = self.tokenizer.pad_id if self.tokenizer.pad_id is not None else 0
        self.sampler = RolloutSampler.for_style(
            self.tokenizer, self.prompt_style, hp.max_completion_length, temperature=hp.temperature,
            top_k=hp.top_k, top_p=hp.top_p, stop_strings=hp.stop_strings, pad_id=pad_id,
            engine=self.rollout_engines.engine,
        )  # fmt: skip

    def configure_components(self, wrap: Any = None) -> None:
        """The frozen reference, only when beta > 0 (under LoRA: the policy with its adapters off)."""
        if self.hparams.beta == 0:
            return
        self.reference = FrozenReference.of_stage(self, wrap)

    def on_fit_start(self) -> None:
        super().on_fit_start()
        self.rewards.to(self.device)
        self.rollout_engines.start()

    @property
    def kl_in_reward(self) -> bool:
        return self.hparams.advantage_estimator.startswith("reinforce_pp")

    # ---- generating and scoring groups ------------------------------------------------------------

    def _row_seeds(self, prompts: list[list[int]]) -> list[int]:
        """One seed per answer from (sampling_seed, generation batch, the prompt's tokens, its index in the group)."""
        G, base = self.hparams.num_generations, self.hparams.sampling_seed * 1_000_003 + self.generation_batches * 1009
        seeds = []
        for i, prompt in enumerate(prompts):
            digest = zlib.crc32(array("q", prompt).tobytes())
            seeds.append((base + digest * 7919 + i % G) % (2**62))
        return seeds

    @torch.no_grad()
    def _generate(self, batch: dict[str, Any]) -> Groups:
        """The batch's prompts answered `num_generations` times each, scored."""
        G = self.hparams.num_generations
        start = time.perf_counter()
        prompts = [p for p in batch["prompt_ids"] for _ in range(G)]
        responses, ended = self.sampler.responses(self.model, prompts, None, row_seeds=self._row_seeds(prompts))
        gap = self.rollout_engines.logprob_gap(self.model, prompts, responses, self.sampler.pad_id,
                                               self.hparams.temperature)
        if gap:
            self.log_dict(gap, on_step=True, on_epoch=False)
        self.generation_batches += 1
        generated = time.perf_counter()
        self._seconds[0] += generated - start
        groups = Groups(G, prompts, responses, ended)
        groups.engine_logps = self.rollout_engines.last_logps(len(responses))
        for key in ("messages", "tasks", "references"):
            setattr(groups, key, [value for value in batch[key] for _ in range(G)])
        groups.texts = [self.tokenizer.decode(r) for r in responses]
        rollouts = Rollouts(groups.messages, groups.texts, prompts, responses, groups.references)
        groups.scores, groups.valid, groups.per_source = self.rewards.score(rollouts, self.hparams.reward_clip)
        if self.hparams.overlong_buffer > 0:
            lengths = torch.tensor([len(r) for r in responses])
            penalty = overlong_penalty(lengths, self.hparams.max_completion_length, self.hparams.overlong_buffer,
                                       self.hparams.overlong_penalty_factor)  # fmt: skip
            groups.scores = torch.where(groups.valid, groups.scores + penalty, groups.scores)
        self._seconds[1] += time.perf_counter() - generated
        return groups

    def _score(self, batch: dict[str, Any], responses: list[list[int]], counts: RewardCounts) -> tuple[Any, ...]:
        """Validation: (scores, valid, texts) of greedy answers under the weighted rewards."""
        texts = [self.tokenizer.decode(r) for r in responses]
        rollouts = Rollouts(batch["messages"], texts, batch["prompt_ids"], responses, batch.get("references"))
        scores, valid, _ = self.rewards.score(rollouts, self.hparams.reward_clip)
        counts.responses += len(texts)
        return scores.to(self.device), valid.to(self.device), texts

    def _reduce_sum(self, x: torch.Tensor) -> torch.Tensor:
        return reduce_sum(self, x)

    def _all_ranks_ready(self) -> bool:
        """Whether every rank holds a full batch of informative groups, or the generation limit is reached (the
        same on every rank: they generate in step)."""
        if self.buffer.limit_reached():
            return True
        held = torch.tensor(float(self.buffer.held_count >= self.buffer.target), device=self.device)
        if self.trainer.world_size > 1:
            held = self.trainer.strategy.reduce(held, reduce_op="min")
        return bool(held)

    # ---- the experience: log-probs and advantages -------------------------------------------------

    def _log_probs(self, net: torch.nn.Module, exp: dict[str, Any]) -> torch.Tensor:
        out = []
        for rows in torch.arange(exp["ids"].size(0), device=self.device).split(self.hparams.forward_batch_size):
            out.append(response_logps(net, exp["ids"][rows], exp["valid"][rows], exp["P"], self.config.vocab_size,
                                      self.hparams.temperature)[0])  # fmt: skip
        return torch.cat(out)

    @torch.no_grad()
    def _experience(self, groups: Groups) -> dict[str, Any]:
        hp = self.hparams
        exp = rollout_layout(groups.prompts, groups.responses, self.sampler.pad_id, self.device)
        valid, P = exp["valid"], exp["P"]
        scores, scored = groups.scores.to(self.device), groups.valid.to(self.device)
        ended = torch.tensor(groups.ended, device=self.device)
        mask = valid[:, P:] & scored[:, None]
        if hp.mask_truncated_completions:
            mask = mask & ended[:, None]
        self.model.eval()
        # The sampler's log-probs: the old ones of the ratio when the policy moves before the last update (else
        # the policy is still the sampler, ratio 1), and REINFORCE++'s side of the KL in the reward.
        keeps_old = hp.num_iterations > 1 or hp.num_mini_batches > 1
        kl_in_reward = self.kl_in_reward and self.reference is not None
        if keeps_old or kl_in_reward or hp.tis_cap is not None:
            sampler_logps = self._log_probs(self.model, exp)
            if keeps_old:
                exp["old_logps"] = sampler_logps
            exp["tis_weights"], exp["tis_stats"] = self.rollout_engines.tis_weights(sampler_logps,
                                                                                  groups.engine_logps, mask)
        if self.reference is not None:
            with self.reference.network() as reference:
                exp["ref_logps"] = self._log_probs(reference, exp)
        self.model.train()
        G = hp.num_generations
        if hp.advantage_estimator == "grpo":
            advantages = sequence_advantages_to_tokens(
                grpo_advantages(scores, G, hp.scale_rewards, scored, self._reduce_sum), mask)
        elif hp.advantage_estimator == "rloo":
            advantages = sequence_advantages_to_tokens(rloo_advantages(scores, G, scored), mask)
        else:
            if kl_in_reward:
                token_kl = kl_estimate(sampler_logps, exp["ref_logps"], "k1")
            else:
                token_kl = torch.zeros_like(mask, dtype=torch.float32)
            baseline = G if hp.advantage_estimator == "reinforce_pp_baseline" else None
            advantages = reinforce_pp_advantages(scores, token_kl, mask, hp.beta, baseline, scored, self._reduce_sum)
        exp.update(mask=mask, advantages=advantages, scores=scores, scored=scored, ended=ended, texts=groups.texts)
        return exp

    # ---- the update -------------------------------------------------------------------------------

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        groups = self._generate(batch)
        self.buffer.add(groups)
        self._batch_stats = self._group_stats(groups)  # of every generated group, before any is dropped
        if not self._all_ranks_ready():
            return None  # dynamic sampling: the next prompt batch tops the buffer up
        train_groups = self.buffer.pop()
        start = time.perf_counter()
        exp = self._experience(train_groups)
        stats = self._update(exp)
        stats["time/train"] = torch.tensor(time.perf_counter() - start)
        stats["time/generate"], stats["time/score"] = (torch.tensor(t) for t in self._seconds)
        self._seconds = [0.0, 0.0]
        stats.update(self._batch_stats)
        stats.update(self._answer_stats(train_groups, exp))
        stats.update(exp.get("tis_stats") or {})
        self.episodes += len(train_groups.prompts) * self.trainer.world_size
        stats["episode"] = torch.tensor(float(self.episodes))
        stats["lr"] = torch.tensor(self.optimizers().param_groups[0]["lr"])
        if self.hparams.dynamic_sampling:
            stats["dynamic_sampling/dropped_groups"] = torch.tensor(float(self.buffer.dropped))
            stats["dynamic_sampling/generated_groups"] = torch.tensor(float(self.buffer.generated))
            stats["dynamic_sampling/trained_groups"] = torch.tensor(float(train_groups.count))
        stats = {k: v.float().to(self.device) for k, v in stats.items()}
        sync = self.trainer.world_size > 1
        self.log("reward", stats.pop("reward"), prog_bar=True, sync_dist=sync)
        self.log_dict(stats, sync_dist=sync)
        if (self.global_step - 1) % self.hparams.samples_every_n_steps == 0:
            write_rollouts(self, {"messages": train_groups.messages}, exp, self.hparams.sample_generations)

    def _group_stats(self, groups: Groups) -> dict[str, torch.Tensor]:
        """TRL's reward statistics of a generation batch."""
        G, scored = self.hparams.num_generations, groups.valid
        _, std, _ = group_mean_std(groups.scores, G, scored)
        stats = {
            "reward": masked_mean(groups.scores, scored),
            "reward_std": std.view(-1, G)[:, 0].mean(),
            "frac_reward_zero_std": (~groups.informative()).float().mean(),
            "skipped": (~scored).float().sum(),
        }
        for name, values in groups.per_source.items():
            stats[f"rewards/{name}/mean"] = masked_mean(values, scored)
        return stats

    def _answer_stats(self, groups: Groups, exp: dict[str, Any]) -> dict[str, torch.Tensor]:
        lengths = torch.tensor([len(r) for r in groups.responses], dtype=torch.float32)
        ended = torch.tensor(groups.ended)
        return {
            "completions/mean_length": lengths.mean(),
            "completions/min_length": lengths.min(),
            "completions/max_length": lengths.max(),
            "completions/clipped_ratio": (~ended).float().mean(),
            "completions/mean_terminated_length": masked_mean(lengths, ended),
        }

    def _normalizer(self, exp: dict[str, Any], rows: torch.Tensor) -> float:
        """What `aggregate` divides a minibatch's summed loss by (`lit_llm.rlvr.aggregate`)."""
        hp = self.hparams
        tokens = exp["mask"][rows].sum().float()
        if hp.loss_type == "grpo":
            return float(len(rows))
        if hp.loss_type == "bnpo":
            return float(tokens.clamp(min=1))
        if hp.loss_type == "dr_grpo":
            return float(len(rows) * hp.max_completion_length)
        world = self.trainer.world_size
        return float(self._reduce_sum(tokens).clamp(min=1)) / world  # dapo: every rank's tokens; DDP averages

    def _update(self, exp: dict[str, Any]) -> dict[str, torch.Tensor]:
        hp = self.hparams
        optimizer, scheduler = self.optimizers(), self.lr_schedulers()
        G, n_groups = hp.num_generations, exp["ids"].size(0) // hp.num_generations
        # Minibatches take whole groups in the (shuffled) order of the prompt loader, so with N ranks the k-th
        # minibatches of all ranks together hold the k-th minibatch of one process at the same global batch.
        per_minibatch = math.ceil(n_groups / hp.num_mini_batches)
        sums: dict[str, float] = {}
        n = losses = steps = 0
        for _ in range(hp.num_iterations):
            for minibatch_groups in torch.arange(n_groups).split(per_minibatch):
                minibatch = (minibatch_groups[:, None] * G + torch.arange(G)).flatten().to(self.device)
                normalizer = self._normalizer(exp, minibatch)
                for rows in minibatch.split(hp.micro_batch_size or len(minibatch)):
                    loss, stats = self._loss(exp, rows, normalizer)
                    self.manual_backward(loss)
                    losses += float(loss.detach())
                    for k, v in stats.items():
                        sums[k] = sums.get(k, 0.0) + float(v)
                    n += 1
                if hp.max_grad_norm is not None:
                    self.clip_grad_norm(optimizer, hp.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                self.rollout_engines.after_step()
                steps += 1
                if scheduler is not None:
                    scheduler.step()
        return {"loss": torch.tensor(losses / steps), **{k: torch.tensor(v / max(n, 1)) for k, v in sums.items()}}

    def _loss(self, exp: dict[str, Any], rows: torch.Tensor, normalizer: float) -> tuple[torch.Tensor, dict]:
        hp = self.hparams
        logps, logits, _ = response_logps(self.model, exp["ids"][rows], exp["valid"][rows], exp["P"],
                                          self.config.vocab_size, hp.temperature)  # fmt: skip
        mask = exp["mask"][rows]
        old = exp["old_logps"][rows] if "old_logps" in exp else logps.detach()
        log_ratio = importance_log_ratio(logps, old, mask, hp.importance_sampling_level)
        per_token, clip = clipped_surrogate(log_ratio, exp["advantages"][rows], hp.epsilon_low, self.epsilon_high,
                                            hp.delta)  # fmt: skip
        if exp.get("tis_weights") is not None:
            per_token = per_token * exp["tis_weights"][rows]
        stats = {}
        if "ref_logps" in exp:
            kl = kl_estimate(logps, exp["ref_logps"][rows], "k3")
            if not self.kl_in_reward:
                per_token = per_token + hp.beta * kl
            stats["kl"] = masked_mean(kl.detach(), mask)
        loss = aggregate(per_token, mask, hp.loss_type, normalizer)
        with torch.no_grad():
            stats.update({
                "entropy": masked_mean(entropy_from_logits(logits), mask),
                "clip_ratio/low_mean": masked_mean(clip["low"].float(), mask),
                "clip_ratio/high_mean": masked_mean(clip["high"].float(), mask),
                "clip_ratio/region_mean": masked_mean((clip["low"] | clip["high"]).float(), mask),
            })  # fmt: skip
            if hp.delta is not None:
                stats["clip_ratio/dual_mean"] = masked_mean(clip["dual"].float(), mask)
        return loss, stats

    # ---- validation -------------------------------------------------------------------------------

    def on_validation_epoch_start(self) -> None:
        self.validation.start(self.device)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        def answer(prompts: list[list[int]]) -> list:
            return self.sampler.generate(self.model, prompts, None, greedy=True)

        self.validation.step(self, batch, batch_idx, answer, self._score)

    def on_validation_epoch_end(self) -> None:
        self.validation.end(self, self._reduce_sum)

    # ---- checkpoints ------------------------------------------------------------------------------

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        FrozenReference.strip(checkpoint)
        checkpoint["grpo"] = {
            "generation_batches": self.generation_batches, "episodes": self.episodes,
            "buffer": self.buffer.state() if self.buffer is not None else None,
            "reward_counts": [c.state() for c in self.rewards.counts] if self.rewards is not None else None,
        }  # fmt: skip

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        if self.reference is not None:
            self.reference.fill(checkpoint)
        state = checkpoint.get("grpo")
        if state:
            self.generation_batches, self.episodes = int(state["generation_batches"]), int(state["episodes"])
            if state["buffer"] is not None and self.buffer is not None:
                self.buffer.load(state["buffer"])
            if state.get("reward_counts") and self.rewards is not None:
                for counts, saved in zip(self.rewards.counts, state["reward_counts"]):
                    counts.load(saved)


def check_options(hp: Any) -> None:
    """One ConfigError listing every impossible option, each named."""
    eh = hp.epsilon_low if hp.epsilon_high is None else hp.epsilon_high
    checks = {
        f"advantage_estimator must be one of {', '.join(ADVANTAGE_ESTIMATORS)}":
            hp.advantage_estimator in ADVANTAGE_ESTIMATORS,
        f"loss_type must be one of {', '.join(LOSS_TYPES)}": hp.loss_type in LOSS_TYPES,
        f"scale_rewards must be one of {', '.join(SCALE_REWARDS)}": hp.scale_rewards in SCALE_REWARDS,
        "importance_sampling_level must be 'token' or 'sequence'": hp.importance_sampling_level in ("token",
                                                                                                    "sequence"),
        f"num_generations must be >= 2 for advantage_estimator {hp.advantage_estimator!r} (its baseline is the "
        f"group), got {hp.num_generations}": hp.num_generations >= 2
        or (hp.advantage_estimator not in GROUP_ESTIMATORS and hp.num_generations >= 1),
        f"epsilon_high ({eh}) must be >= epsilon_low ({hp.epsilon_low})": eh >= hp.epsilon_low,
        "epsilon_low must be in (0, 1)": 0 < hp.epsilon_low < 1,
        f"delta (dual clip) must be > 1 + epsilon_high, got {hp.delta}": hp.delta is None or hp.delta > 1 + eh,
        "num_iterations, num_mini_batches, forward_batch_size and max_generation_batches must be >= 1":
            min(hp.num_iterations, hp.num_mini_batches, hp.forward_batch_size, hp.max_generation_batches) >= 1,
        "micro_batch_size must be >= 1 or null": hp.micro_batch_size is None or hp.micro_batch_size >= 1,
        "beta must be >= 0": hp.beta >= 0,
        "temperature must be > 0 (the stage samples its answers)": hp.temperature > 0,
        "top_p must be in (0, 1]": 0 < hp.top_p <= 1,
        "overlong_buffer must be in [0, max_completion_length)": 0 <= hp.overlong_buffer < hp.max_completion_length,
        "reward_clip must be > 0": hp.reward_clip > 0,
        "samples_every_n_steps must be >= 1": hp.samples_every_n_steps >= 1,
    }  # fmt: skip
    failed = [message for message, ok in checks.items() if not ok]
    if failed:
        raise ConfigError("model." + "; model.".join(failed))
