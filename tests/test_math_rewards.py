"""Math-answer rewards (`lit_llm.rewards.math_answers`): reading final answers, comparing them with math-verify
(equivalent forms, GSM8K references), the format reward, and calls from threads and DataLoader workers."""

from __future__ import annotations

import sys
import threading
import time

import pytest

from lit_llm.rewards.math_answers import extract_answer, math_format_reward, math_reward

pytest.importorskip("math_verify")

GSM8K_REFERENCE = "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips.\n#### 72"


# ---- extract_answer ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        (r"so \boxed{\frac{1}{2}}", r"\frac{1}{2}"),
        (r"first \boxed{3}, then \boxed{\sqrt{\frac{a}{b}}} instead", r"\sqrt{\frac{a}{b}}"),
        (r"\fbox{7}", "7"),
        (r"\boxed{5} and a cut-off \boxed{6", "5"),
        (r"\boxed{1,234}", "1234"),
        ("She pays 5 + 7.\n#### 1,234\nextra line", "1234"),
        ("#### 72.", "72"),
        ("so she has 18 apples.", "18"),
        ("She has 1,234,567 grains, not 12", "12"),
        ("It cost 1,234,567.", "1234567"),
        ("the temperature fell to -3.5 degrees", "-3.5"),
        ("the value is .25", ".25"),
        ("from 10-3 we get", "3"),
    ],
)
def test_extract_answer(text: str, answer: str) -> None:
    assert extract_answer(text) == answer


@pytest.mark.parametrize("text", ["", "no digits here", r"\boxed{}", r"\boxed{  }"])
def test_extract_answer_none(text: str) -> None:
    assert extract_answer(text) is None


def test_extract_answer_without_last_number() -> None:
    assert extract_answer("she has 18 apples", last_number=False) is None
    assert extract_answer("#### 18", last_number=False) == "18"


# ---- math_reward ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("response", "reference", "reward"),
    [
        (r"The answer is \boxed{72}", GSM8K_REFERENCE, 1.0),
        ("48 + 24 = 72, so she sold 71", GSM8K_REFERENCE, 0.0),
        ("48 + 24 = 72. She sold 72 clips.", GSM8K_REFERENCE, 1.0),
        (r"\boxed{72}", "72", 1.0),
        (r"\boxed{72.0}", "72", 1.0),
        (r"\boxed{1,234}", "#### 1234", 1.0),
        (r"\boxed{0.5}", r"\frac{1}{2}", 1.0),  # math-verify reads 0.5 as the rational 1/2
        (r"\boxed{\frac{2}{4}}", r"\frac{1}{2}", 1.0),
        (r"\boxed{\dfrac{1}{2}}", r"\boxed{\frac{1}{2}}", 1.0),
        (r"\boxed{\frac{1}{3}}", r"\boxed{\frac{1}{2}}", 0.0),
        (r"\boxed{0.33}", r"\frac{1}{3}", 0.0),
        (r"\boxed{(x+1)^2}", r"x^2+2x+1", 1.0),
        (r"\boxed{\text{Evelyn}}", r"The winner is \boxed{\text{Evelyn}}.", 1.0),
        (r"\boxed{\text{Bob}}", r"\text{Evelyn}", 0.0),
        ("I do not know.", "72", 0.0),
        (r"\boxed{}", "72", 0.0),
    ],
)
def test_math_reward(response: str, reference: str, reward: float) -> None:
    assert math_reward("a question", response, reference) == reward


@pytest.mark.parametrize("reference", [None, "", "  "])
def test_math_reward_without_reference_raises(reference: str | None) -> None:
    with pytest.raises(ValueError, match="math_reward needs the record's reference answer"):
        math_reward("a question", r"\boxed{72}", reference)


def test_math_reward_called_as_a_reward_function_raises() -> None:
    with pytest.raises(ValueError, match="reference answer"):
        math_reward("a question", r"\boxed{72}")


def test_math_reward_needs_math_verify(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "math_verify", None)  # makes `import math_verify` raise ImportError
    with pytest.raises(ImportError, match=r"pip install 'lit_llm\[math\]'"):
        math_reward("a question", r"\boxed{72}", "72")


def in_thread(*args: str) -> tuple[float | None, Exception | None, float]:
    """(reward, exception, seconds) of math_reward(*args) run in a daemon thread, given 60 s at most (a sympy stall
    inside one C call holds the GIL, so this limit does not end it: the size guard is what keeps the test finite)."""
    result: list[float] = []
    error: list[Exception] = []

    def target() -> None:
        try:
            result.append(math_reward(*args))
        except Exception as exc:
            error.append(exc)

    start = time.monotonic()
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(60)
    assert not thread.is_alive(), "math_reward did not return within 60 s in a thread"
    return (result[0] if result else None), (error[0] if error else None), time.monotonic() - start


def test_math_reward_in_a_thread() -> None:
    # both cases go through math-verify's parse and verify, whose signal-based timeouts fail outside the main thread
    assert in_thread("q", r"\boxed{0.5}", r"\frac{1}{2}")[:2] == (1.0, None)
    assert in_thread("q", r"\boxed{71}", GSM8K_REFERENCE)[:2] == (0.0, None)


@pytest.mark.parametrize("response", [r"\boxed{10^{10^{10}}}", r"\boxed{9^{9^{9}}}", r"\boxed{99999999!}",
                                      r"\boxed{(x+1)^{2000}}"])  # fmt: skip
def test_math_reward_does_not_stall_on_huge_answers(response: str) -> None:
    # without a timeout sympy takes minutes on each of these; in a thread nothing would interrupt it
    reward, error, seconds = in_thread("q", response, r"\frac{1}{2}")
    assert (reward, error) == (0.0, None) and seconds < 20
    assert math_reward("q", response, response) == 1.0  # the same string still matches


def test_math_reward_in_a_dataloader_worker() -> None:
    torch = pytest.importorskip("torch")

    class Pairs(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 2

        def __getitem__(self, i: int) -> float:
            return math_reward("q", [r"\boxed{0.5}", r"\boxed{0.25}"][i], r"\frac{1}{2}")

    loader = torch.utils.data.DataLoader(Pairs(), batch_size=None, num_workers=1)
    assert [float(x) for x in loader] == [1.0, 0.0]


# ---- math_format_reward --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("response", "reward"),
    [(r"so \boxed{3}", 1.0), (r"\fbox{x}", 1.0), ("so 3", 0.0), (r"\boxed{}", 0.0), (r"cut off \boxed{3", 0.0)],
)
def test_math_format_reward(response: str, reward: float) -> None:
    assert math_format_reward("a question", response) == reward
