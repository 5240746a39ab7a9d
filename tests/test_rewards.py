"""Reward sources for RL (`lit_llm.rewards`): importing a reward function by spec, calling it per rollout, turning
raw values into scores (skips, clips, counts, one warning per kind), and choosing a source from the config."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from lit_llm.tasks import task_records, verify
from lit_llm.errors import ConfigError
from lit_llm.rewards import FunctionReward, RewardCounts, Rollouts, check_scores, import_function, load_reward_source


def rollouts(conversations: list[list[dict]], responses: list[str]) -> Rollouts:
    """Rollouts with placeholder token ids (no reward here reads them)."""
    return Rollouts(conversations, responses, [[1]] * len(responses), [[2]] * len(responses))


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


# ---- import_function ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", ["lit_llm.tasks:verify", "lit_llm.tasks.verify"])
def test_import_function_accepts_colon_and_dot_specs(spec: str) -> None:
    assert import_function(spec) is verify


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no_such_package.rewards:score", r"'no_such_package\.rewards:score': cannot import 'no_such_package\.rewa"),
        ("no_such_package.score", r"'no_such_package\.score': cannot import 'no_such_package'"),
        ("lit_llm.tasks:nope", r"'lit_llm\.tasks:nope': module 'lit_llm\.tasks' has no function"),
        ("lit_llm.tasks.nope", r"module 'lit_llm\.tasks' has no function 'nope'"),
        ("lit_llm.tasks:TASKS", r"has no function 'TASKS'"),  # exists, but is not callable
        ("verify", r"'verify' must be 'package\.module:function'"),
        ("lit_llm.tasks:", r"must be 'package\.module:function'"),
    ],
)
def test_import_function_errors_name_the_spec(spec: str, message: str) -> None:
    """A missing module, a missing (or non-callable) attribute or a malformed spec is a ConfigError naming it."""
    with pytest.raises(ConfigError, match=message):
        import_function(spec)


# ---- Rollouts and FunctionReward ----------------------------------------------------------------------------


def test_rollout_prompts_are_the_last_user_message() -> None:
    """The prompt a function sees is the conversation's last user turn (none: the empty string)."""
    conversations = [
        user("first"),
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "q1"},
         {"role": "assistant", "content": "a1"}, {"role": "user", "content": "q2"}],
        [{"role": "system", "content": "only a system turn"}],
    ]  # fmt: skip
    assert rollouts(conversations, ["x", "y", "z"]).prompts == ["first", "q2", ""]


def test_function_reward_calls_the_function_per_response() -> None:
    """Each (last user message, response) pair is scored; an exception becomes the value, not a crash."""
    calls = []

    def score(prompt: str, response: str) -> float:
        calls.append((prompt, response))
        if response == "boom":
            raise RuntimeError("exploded on purpose")
        return len(prompt) + 0.5 * len(response)

    reward = FunctionReward(score)
    assert reward.name == "score" and reward.to("cpu") is reward
    convs = [user("ab"), [{"role": "system", "content": "sys"}, {"role": "user", "content": "abcd"}], user("z")]
    values = reward(rollouts(convs, ["xy", "boom", ""]))
    assert calls == [("ab", "xy"), ("abcd", "boom"), ("z", "")]
    assert values[0] == 3.0 and values[2] == 1.0
    assert isinstance(values[1], RuntimeError) and str(values[1]) == "exploded on purpose"


def test_function_reward_from_a_spec_scores_tasks() -> None:
    """"lit_llm.tasks.verify" gives 1.0 for the right answer and less for a wrong one."""
    reward = FunctionReward("lit_llm.tasks.verify")
    assert reward.name == "lit_llm.tasks.verify" and reward.fn is verify
    records = task_records("train", ["add", "reverse"], per_task=2, seed=3)
    right = reward(rollouts([user(r["instruction"]) for r in records], [r["output"] for r in records]))
    assert right == [1.0] * 4
    wrong = reward(rollouts([user(r["instruction"]) for r in records], ["no idea"] * 4))
    assert all(0.0 <= v < 1.0 for v in wrong)


# ---- check_scores -------------------------------------------------------------------------------------------


def test_check_scores_skips_clips_and_counts() -> None:
    """Exceptions and non-numbers are skipped (score 0, not valid); values beyond +-clip are clipped; counts add up."""
    error = ValueError("bad response")
    values = [1.0, float("nan"), error, 50.0, float("-inf"), "abc", 0.25]
    prompts = [f"prompt number {i}" for i in range(7)]
    batch = rollouts([user(p) for p in prompts], ["r"] * 7)
    counts = RewardCounts()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        scores, valid = check_scores(values, batch, clip=10.0, counts=counts, source="my_fn")

    assert scores.dtype == torch.float32 and valid.dtype == torch.bool
    assert scores.tolist() == [1.0, 0.0, 0.0, 10.0, -10.0, 0.0, 0.25]
    assert valid.tolist() == [True, False, False, True, True, False, True]
    assert (counts.responses, counts.raised, counts.not_a_number, counts.clipped) == (7, 1, 2, 2)
    assert counts.skipped == 3 == counts.raised + counts.not_a_number == int((~valid).sum())

    # The first of each kind is kept, naming the source and the prompt.
    assert counts.first == {
        "not_a_number": "my_fn on prompt 'prompt number 1' returned nan, not a number",
        "raised": "my_fn on prompt 'prompt number 2' raised ValueError: bad response",
        "clipped": "my_fn on prompt 'prompt number 3' returned 50.0, beyond the clip of +-10.0",
    }
    # One warning per kind, not per rollout: the second non-number ("abc") and clip (-inf) are only counted.
    messages = [str(w.message) for w in caught]
    assert all(issubclass(w.category, UserWarning) for w in caught)
    assert len(messages) == 3
    assert messages[0].startswith(counts.first["not_a_number"]) and "the rollout is skipped" in messages[0]
    assert messages[1].startswith(counts.first["raised"]) and "the rollout is skipped" in messages[1]
    assert messages[2].startswith(counts.first["clipped"]) and "the rollout is clipped" in messages[2]


def test_check_scores_keeps_counting_across_batches_without_new_warnings() -> None:
    """The same counts over a later batch accumulate; kinds already reported are not reported again."""
    counts = RewardCounts()
    with pytest.warns(UserWarning, match="returned 'abc', not a number"):
        check_scores(["abc"], rollouts([user("p")], ["r"]), 5.0, counts)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        scores, valid = check_scores([None, 3, "2.5", -7], rollouts([user("q")] * 4, ["r"] * 4), 5.0, counts)
    assert scores.tolist() == [0.0, 3.0, 2.5, -5.0] and valid.tolist() == [False, True, True, True]
    assert (counts.responses, counts.not_a_number, counts.clipped, counts.raised) == (5, 2, 1, 0)
    assert counts.first["not_a_number"] == "reward on prompt 'p' returned 'abc', not a number"
    only = "reward on prompt 'q' returned -7.0, beyond the clip of +-5.0"
    assert [str(w.message).split(";")[0] for w in caught] == [only]


def test_check_scores_shortens_long_prompts_in_messages() -> None:
    counts = RewardCounts()
    long_prompt = "x" * 100
    with pytest.warns(UserWarning):
        check_scores([math.nan], rollouts([user(long_prompt)], ["r"]), 1.0, counts)
    assert counts.first["not_a_number"] == f"reward on prompt {'x' * 60!r} returned nan, not a number"


def test_check_scores_clips_an_integer_too_large_for_a_float() -> None:
    """A function returning a huge Python int is beyond any clip and should be clipped, not crash the run."""
    counts = RewardCounts()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scores, valid = check_scores([10**400], rollouts([user("p")], ["r"]), 10.0, counts)
    assert scores.tolist() == [10.0] and valid.tolist() == [True] and counts.clipped == 1


# ---- load_reward_source -------------------------------------------------------------------------------------


def test_load_reward_source_needs_exactly_one_source() -> None:
    with pytest.raises(ConfigError, match="set exactly one of model.reward_model"):
        load_reward_source(None, None)
    with pytest.raises(ConfigError, match="set exactly one of model.reward_model"):
        load_reward_source("reward.ckpt", "lit_llm.tasks:verify")
    source = load_reward_source(None, "lit_llm.tasks:verify")
    assert isinstance(source, FunctionReward) and source.fn is verify
    with pytest.raises(ConfigError, match="cannot import"):
        load_reward_source(None, "no_such_package:fn")
