"""Preference stages: DPO's frozen reference (ln 2 at step 0, untouched, outside the optimizer), precomputed vs live
reference log-probs, resume, ORPO's loss, the reward model's metrics, scoring and normalization, and real gains on
the built-in tasks."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch import Callback, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint

from lit_llm.checkpoint import load_checkpoint, submodule_state
from lit_llm.data.preference import PreferenceDataModule
from lit_llm.errors import CheckpointError, ConfigError
from lit_llm.losses import next_token_loss, sequence_logps
from lit_llm.stages import DPOModule, ORPOModule, RewardModule
from lit_llm.stages.orpo import orpo_pair_step
from lit_llm.rewards import load_reward_model
from tests.stages.conftest import trainer


class StepLosses(Callback):
    """The training loss of every step, and the batches they were computed on."""

    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))


def data(**kwargs) -> PreferenceDataModule:
    defaults = dict(tasks=["upper", "add"], examples_per_task=24, val_examples_per_task=4, max_length=96, batch_size=4)
    return PreferenceDataModule(**{**defaults, **kwargs})


def metrics(fit) -> dict[str, float]:
    return {k: float(v) for k, v in fit.callback_metrics.items()}


# ---- DPO --------------------------------------------------------------------------------------------


def test_dpo_loss_is_ln2_at_step_0_and_the_reference_stays_frozen(tmp_path: Path, base_checkpoint: Path) -> None:
    seed_everything(0)
    module = DPOModule(init_from=str(base_checkpoint), learning_rate=1e-3, warmup_steps=0, eval_generations=0)
    dm = data()
    fit = trainer(tmp_path, 4, limit_val_batches=2, val_check_interval=4)
    fit.validate(module, dm)
    at_start = metrics(fit)
    # Policy == reference: every implicit reward is 0 and the sigmoid loss is ln 2.
    assert at_start["val/loss"] == pytest.approx(math.log(2), abs=1e-6)
    for name in ("val/rewards/chosen", "val/rewards/rejected", "val/rewards/margins"):
        assert at_start[name] == pytest.approx(0.0, abs=1e-6)

    initial = submodule_state(load_checkpoint(base_checkpoint)["state_dict"])
    steps = StepLosses()
    fit = trainer(tmp_path, 4, limit_val_batches=2, val_check_interval=4, callbacks=[steps], log_every_n_steps=1)
    fit.fit(module, dm)
    assert steps.losses[0] == pytest.approx(math.log(2), abs=1e-6)
    assert steps.losses[-1] < math.log(2)  # the policy moved towards the chosen responses
    # The reference: the initial weights, untouched, frozen, in eval mode, not in the optimizer.
    for name, tensor in module.reference.copy.state_dict().items():
        torch.testing.assert_close(tensor, initial[name], rtol=0, atol=0, msg=name)
    assert not any(p.requires_grad for p in module.reference.parameters())
    assert not module.reference.training and module.model.training
    optimized = {id(p) for group in fit.optimizers[0].param_groups for p in group["params"]}
    assert not optimized & {id(p) for p in module.reference.parameters()}
    assert optimized == {id(p) for p in module.model.parameters()}
    # Policy moved; the checkpoint holds the policy only.
    assert any(not torch.equal(p, initial[n]) for n, p in module.model.state_dict().items())
    fit.save_checkpoint(tmp_path / "dpo.ckpt")
    ckpt = load_checkpoint(tmp_path / "dpo.ckpt")
    assert not [k for k in ckpt["state_dict"] if k.startswith("reference.")]
    assert ckpt["lit_llm"]["stage"] == "dpo" and ckpt["lit_llm"]["prompt_style"]["class_path"].endswith("Alpaca")
    assert {"train/rewards/accuracies", "train/logps/chosen", "train/logits/rejected",
            "val/rewards/margins"} <= set(metrics(fit))  # fmt: skip


@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo"])
def test_precomputed_reference_gives_the_live_reference_losses(tmp_path: Path, base_checkpoint, loss_type) -> None:
    runs = {}
    for precompute in (False, True):
        seed_everything(0)
        module = DPOModule(init_from=str(base_checkpoint), loss_type=loss_type, precompute_reference=precompute,
                           learning_rate=1e-3, warmup_steps=0, eval_generations=0)  # fmt: skip
        steps = StepLosses()
        fit = trainer(tmp_path / str(precompute), 6, limit_val_batches=0, callbacks=[steps])
        fit.fit(module, dm := data())
        runs[precompute] = (steps.losses, module)
    live, pre = runs[False][0], runs[True][0]
    assert len(live) == 6 and live[0] != live[-1]
    torch.testing.assert_close(torch.tensor(pre), torch.tensor(live), atol=1e-5, rtol=1e-5)
    assert runs[True][1].reference.copy is None  # freed after the one scoring pass
    # Kept by the stage, one row per pair id (train, then val), not written into the data's records.
    assert runs[True][1].reference_table.shape == (len(dm.train_examples) + len(dm.val_examples), 2)
    assert not any(hasattr(p, "reference_logps") for p in dm.train_examples + dm.val_examples)


def test_dpo_resume_with_precomputed_reference_matches_a_continuous_run(tmp_path: Path, base_checkpoint) -> None:
    """The reference log-probs are recomputed from init_from on resume, so a resumed run continues exactly."""

    def run(ckpt_path: str | None = None, callbacks=()) -> list[float]:
        seed_everything(0)
        module = DPOModule(init_from=str(base_checkpoint), precompute_reference=True, learning_rate=1e-3,
                           warmup_steps=0, eval_generations=0)  # fmt: skip
        steps = StepLosses()
        fit = trainer(tmp_path, 8, limit_val_batches=0, callbacks=[steps, *callbacks], enable_checkpointing=True)
        fit.fit(module, data(), ckpt_path=ckpt_path, weights_only=True)
        return steps.losses

    every_3 = ModelCheckpoint(dirpath=tmp_path / "ckpt", filename="s{step}", auto_insert_metric_name=False,
                              every_n_train_steps=3, save_top_k=-1)  # fmt: skip
    continuous = run(callbacks=[every_3])
    resumed = run(ckpt_path=str(tmp_path / "ckpt" / "s3.ckpt"))
    assert len(continuous) == 8 and len(resumed) == 5
    assert resumed == pytest.approx(continuous[3:], abs=1e-6)


def test_dpo_rejects_bad_settings() -> None:
    with pytest.raises(ConfigError, match="init_from"):
        DPOModule()
    with pytest.raises(ConfigError, match="loss_type"):
        DPOModule(init_from="x.ckpt", loss_type="kto")
    with pytest.raises(ConfigError, match="beta"):
        DPOModule(init_from="x.ckpt", beta=0)


# ---- ORPO -------------------------------------------------------------------------------------------


def test_orpo_loss_is_chosen_nll_minus_beta_log_sigmoid_log_odds_ratio(tmp_path: Path, base_checkpoint) -> None:
    module = ORPOModule(init_from=str(base_checkpoint), beta=0.25, eval_generations=0)
    dm = data()
    fit = trainer(tmp_path, 1, limit_val_batches=1)
    fit.validate(module, dm)
    batch = next(iter(dm.val_dataloader()))
    with torch.no_grad():
        logits = module.model(batch["input_ids"])
    half = logits.size(0) // 2
    nll = next_token_loss(logits[:half], batch["targets"][:half])
    mean = sequence_logps(logits, batch["targets"], average=True)
    odds = [m - math.log1p(-math.exp(m)) for m in mean.tolist()]  # log(p / (1 - p)) per response
    ratio = [F.logsigmoid(torch.tensor(c - r)).item() for c, r in zip(odds[:half], odds[half:])]
    expected = nll.item() - 0.25 * sum(ratio) / half
    got = metrics(fit)
    assert got["val/loss"] == pytest.approx(expected, rel=1e-5)
    assert got["val/nll_loss"] == pytest.approx(nll.item(), rel=1e-5)
    assert got["val/log_odds_ratio"] == pytest.approx(sum(ratio) / half, rel=1e-5)
    assert got["val/rewards/chosen"] == pytest.approx(0.25 * mean[:half].mean().item(), rel=1e-5)
    # logps/...: per-token means, as in TRL's ORPOTrainer (not the sums DPO logs).
    assert got["val/logps/chosen"] == pytest.approx(mean[:half].mean().item(), rel=1e-5)
    assert got["val/logps/rejected"] == pytest.approx(mean[half:].mean().item(), rel=1e-5)


def test_orpo_logs_per_token_mean_logps_of_a_hand_made_batch() -> None:
    """Two pairs, 2-token vocabulary, logits = log-probs: each response's log-prob per token is known exactly."""
    X = -100  # no target
    targets = torch.tensor([[X, 0, 1, X], [X, 1, 1, 1],  # chosen: 2 and 3 response tokens
                            [X, X, X, 0], [X, 0, 0, X]])  # rejected: 1 and 2  # fmt: skip
    probs = [[0, 0.5, 0.25, 0], [0, 0.8, 0.6, 0.9], [0, 0, 0, 0.1], [0, 0.3, 0.2, 0]]  # of each target token
    logits = torch.zeros(4, 4, 2)
    for row, col in (targets != X).nonzero().tolist():
        p = probs[row][col]
        logits[row, col, targets[row, col]], logits[row, col, 1 - targets[row, col]] = math.log(p), math.log(1 - p)
    batch = {"input_ids": torch.zeros(4, 4, dtype=torch.long), "targets": targets}
    loss, got = orpo_pair_step(lambda input_ids: logits, batch, beta=0.5)

    per_row = [[math.log(p) for p in row if p] for row in probs]
    means = [sum(lp) / len(lp) for lp in per_row]  # sum / length, per response
    chosen, rejected = (means[0] + means[1]) / 2, (means[2] + means[3]) / 2  # then over the batch's pairs
    assert float(got["logps/chosen"]) == pytest.approx(chosen, rel=1e-6)
    assert float(got["logps/rejected"]) == pytest.approx(rejected, rel=1e-6)
    sums = [sum(lp) for lp in per_row]
    assert float(got["logps/chosen"]) != pytest.approx((sums[0] + sums[1]) / 2, rel=1e-3)  # not the sums
    assert float(got["rewards/chosen"]) == pytest.approx(0.5 * chosen, rel=1e-6)
    assert float(got["rewards/margins"]) == pytest.approx(0.5 * (chosen - rejected), rel=1e-6)
    # The odds ratio is taken on the same means.
    odds = [m - math.log1p(-math.exp(m)) for m in means]
    ratio = [F.logsigmoid(torch.tensor(odds[i] - odds[i + 2])).item() for i in range(2)]
    assert float(got["log_odds_chosen"]) == pytest.approx((odds[0] - odds[2] + odds[1] - odds[3]) / 2, rel=1e-6)
    assert float(got["log_odds_ratio"]) == pytest.approx(sum(ratio) / 2, rel=1e-6)
    nll = -(sum(per_row[0]) + sum(per_row[1])) / 5  # per chosen response token
    assert float(got["nll_loss"]) == pytest.approx(nll, rel=1e-6)
    assert float(loss) == pytest.approx(nll - 0.5 * sum(ratio) / 2, rel=1e-6)
    assert not {k for k in got if k.startswith("mean_logps")}


# ---- reward model -----------------------------------------------------------------------------------


def test_reward_model_learns_pairs_scores_and_normalizes(tmp_path: Path, base_checkpoint: Path) -> None:
    seed_everything(0)
    module = RewardModule(init_from=str(base_checkpoint), learning_rate=2e-3, warmup_steps=5)
    dm = data(tasks=["upper"], examples_per_task=160, val_examples_per_task=40, batch_size=8)
    fit = trainer(tmp_path, 60, val_check_interval=60, check_val_every_n_epoch=None)
    fit.fit(module, dm)
    got = metrics(fit)
    # Held-out pairs (the tasks' val split): the verified answer is ranked above the wrong one.
    assert got["val/accuracy"] >= 0.9
    assert got["val/margin"] > 0 and got["val/reward_min"] <= got["val/reward_mean"] <= got["val/reward_max"]
    fit.save_checkpoint(tmp_path / "rm.ckpt")
    mean, std = module.normalization
    assert mean == pytest.approx(got["val/reward_mean"], rel=1e-5) and std == pytest.approx(got["val/reward_std"])

    loaded = load_reward_model(tmp_path / "rm.ckpt")
    prompts = ["Write in capital letters: red fox", [{"role": "user", "content": "Write in capital letters: big sun"}]]
    raw = loaded.score(prompts * 2, ["RED FOX", "BIG SUN", "red fox", "big Sun"], normalize=False)
    assert raw.shape == (4,) and bool((raw[:2] > raw[2:]).all())
    torch.testing.assert_close(loaded.score(prompts * 2, ["RED FOX", "BIG SUN", "red fox", "big Sun"]),
                               (raw - mean) / std)  # fmt: skip
    # The same as the module that trained it.
    answers = ["RED FOX", "BIG SUN"]
    torch.testing.assert_close(module.score(prompts, answers), loaded.score(prompts, answers))
    with pytest.raises(CheckpointError, match="not a reward model"):
        load_reward_model(base_checkpoint)


# ---- gains on the built-in tasks ----------------------------------------------------------------------


@pytest.mark.parametrize("stage", [DPOModule, ORPOModule])
def test_preference_stages_learn_the_held_out_preferences(tmp_path: Path, base_checkpoint: Path, stage) -> None:
    seed_everything(0)
    module = stage(init_from=str(base_checkpoint), learning_rate=3e-3, warmup_steps=5, eval_generations=40,
                   max_new_tokens=8)  # fmt: skip
    dm = data(tasks=["upper"], examples_per_task=160, val_examples_per_task=40, batch_size=8)
    fit = trainer(tmp_path, 100, val_check_interval=100, check_val_every_n_epoch=None)
    fit.validate(module, dm)
    before = metrics(fit)
    fit.fit(module, dm)
    after = metrics(fit)
    # Held-out pairs of the tasks' val split: from chance (ties or worse) to every verified answer preferred.
    assert before["val/rewards/accuracies"] <= 0.5 and after["val/rewards/accuracies"] >= 0.9
    assert after["val/rewards/margins"] > before["val/rewards/margins"] + 0.2
    if stage is DPOModule:
        # Summed response log-probs: the verified answers became far more likely; the wrong ones did not.
        assert after["val/logps/chosen"] > before["val/logps/chosen"] + 20
        assert after["val/logps/rejected"] < after["val/logps/chosen"] - 20
    else:
        # ORPO logs per-token means (TRL's meaning): measured at seed 0, chosen -6.25 -> -2.70 nats/token,
        # rejected -6.24 -> -6.50, their gap -0.01 -> 3.80. An untrained model stays near -ln(vocab) for both.
        assert after["val/rewards/chosen"] == pytest.approx(0.1 * after["val/logps/chosen"], rel=1e-5)  # means
        before_margin = before["val/logps/chosen"] - before["val/logps/rejected"]
        after_margin = after["val/logps/chosen"] - after["val/logps/rejected"]
        assert after["val/logps/chosen"] > before["val/logps/chosen"] + 1.5
        assert after_margin > 1.5 and after_margin > before_margin + 1.5


def test_pairs_are_asked_in_the_init_from_checkpoints_prompt_style(tmp_path: Path, base_checkpoint: Path) -> None:
    ckpt = torch.load(base_checkpoint, weights_only=True)
    ckpt["lit_llm"]["prompt_style"] = {"class_path": "lit_llm.text.templates.Chat", "init_args": {}}
    torch.save(ckpt, tmp_path / "chat.ckpt")
    module = ORPOModule(init_from=str(tmp_path / "chat.ckpt"), eval_generations=0)
    dm = data()
    trainer(tmp_path, 1, limit_val_batches=1).validate(module, dm)
    assert type(dm.prompt_style).__name__ == "Chat" and module.prompt_style is dm.prompt_style
    first = dm.val_examples[0]
    assert dm.tokenizer.decode(first.chosen_ids.tolist(), skip_special_tokens=False).startswith("<|user|>\n")


def test_pairs_command_writes_verified_pairs_from_a_checkpoint(tmp_path: Path, base_checkpoint: Path, capsys) -> None:
    from lit_llm.cli.commands import main
    from lit_llm.tasks import verify

    out = tmp_path / "pairs" / "train.jsonl"
    main(["pairs", "--checkpoint", str(base_checkpoint), "--output", str(out), "--tasks", "[upper,add]",
          "--per_task", "3", "--samples", "2", "--max_new_tokens", "6", "--device", "cpu"])  # fmt: skip
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    stats = json.loads(Path(f"{out}.stats.json").read_text())
    assert len(rows) == stats["prompts"] == 6 and stats["samples"] == 12
    assert stats["chosen_from_model"] + stats["chosen_reference"] == 6
    assert stats["rejected_from_model"] + stats["rejected_synthetic"] == 6
    # An untrained model is never right: chosen is the reference answer, rejected its own wrong sample.
    assert stats["chosen_reference"] == 6 and stats["rejected_from_model"] >= 5
    for row in rows:
        assert verify(row["prompt"], row["chosen"]) == 1.0 and verify(row["prompt"], row["rejected"]) < 1.0
    assert "6 pairs for 6 prompts from 12 samples" in capsys.readouterr().out

    # Several pairs per prompt: one per distinct wrong sample, the counts still adding up.
    main(["pairs", "--checkpoint", str(base_checkpoint), "--output", str(out), "--tasks", "[upper]",
          "--per_task", "4", "--samples", "3", "--pairs_per_prompt", "3", "--max_new_tokens", "6",
          "--device", "cpu", "--overwrite", "true"])  # fmt: skip
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    stats = json.loads(Path(f"{out}.stats.json").read_text())
    assert stats["prompts"] == 4 and 4 < len(rows) == stats["pairs"] <= 12
    assert stats["chosen_from_model"] + stats["chosen_reference"] == stats["pairs"]
    by_prompt = {}
    for row in rows:
        by_prompt.setdefault(row["prompt"], []).append(row["rejected"])
    assert all(len(set(bad)) == len(bad) for bad in by_prompt.values())
