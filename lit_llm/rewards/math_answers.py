"""Verifiable math rewards for RL: score a response 1.0 when its final answer equals the record's reference answer
(GSM8K `#### 72`, MATH `\\boxed{\\frac{1}{2}}`, or a bare answer), else 0.0.

`extract_answer` reads the final answer of a text; `math_reward` compares answers with math-verify (equivalent forms
such as `0.5` and `\\frac{1}{2}` match), falling back to exact equality of the normalised strings. Answers whose
numbers or powers could stall sympy (`10^{10^{10}}`, `(x+1)^{2000}`) are compared as strings only. math-verify's
timeouts are signal based: they are kept in a process's main thread (a DataLoader worker's included) and disabled in
other threads, where nothing interrupts a slow comparison.
`math_format_reward` is an auxiliary reward for answering in `\\boxed{}`.
"""

from __future__ import annotations

import math
import os
import re
import threading
from typing import Any

TIMEOUT_S = 2  # math-verify's limit per parse and per comparison, in the main thread (whole seconds)
MAX_DIGITS = 10**6  # a numeric value with more digits than this is not handed to sympy
MAX_SYMBOLIC_POWER = 16  # nor a power above this of a compound symbolic base (expanding it can take minutes)

_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
_NUMBER = re.compile(r"(?:(?<![\w)\]}])-)?(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?|(?:(?<![\w)\]}])-)?\.\d+")
_THOUSANDS = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?")


def _last_boxed(text: str) -> str | None:
    """The content of the last complete, non-empty `\\boxed{...}` or `\\fbox{...}` (nested braces allowed)."""
    for match in reversed(list(_BOXED.finditer(text))):
        depth, start = 1, match.end()
        for i in range(start, len(text)):
            depth += 1 if text[i] == "{" else -1 if text[i] == "}" else 0
            if depth == 0:
                if content := text[start:i].strip():
                    return content
                break
    return None


def _normalise(answer: str) -> str:
    """`answer` stripped of spaces, surrounding `$` and a trailing `.`; thousands separators dropped from a number."""
    answer = answer.strip().strip("$").strip().rstrip(".").strip()
    return answer.replace(",", "") if _THOUSANDS.fullmatch(answer) else answer


def extract_answer(text: str, *, last_number: bool = True) -> str | None:
    """The final answer of `text`: the last `\\boxed{}`/`\\fbox{}` content, else the first line after the last
    GSM8K `####`, else (with `last_number`) the last number, `1,234` read as `1234`; None when there is none."""
    answer = _last_boxed(text)
    if answer is None and "####" in text:
        answer = (text.rsplit("####", 1)[1].strip().splitlines() or [""])[0]
    if answer is None and last_number:
        numbers = _NUMBER.findall(text)
        answer = numbers[-1] if numbers else None
    answer = _normalise(answer) if answer is not None else None
    return answer or None


def _math_verify() -> Any:
    try:
        import math_verify
    except ImportError:
        raise ImportError("math_reward needs the math-verify package: pip install 'lit_llm[math]'") from None
    return math_verify


def _log10_bound(expr: Any) -> float:
    """An upper bound on log10 |expr| of a sympy expression (a symbol counts as 10), inf beyond the limits above."""
    import sympy

    if isinstance(expr, sympy.Rational):
        return math.log10(max(abs(expr.p), abs(expr.q), 1))
    if isinstance(expr, sympy.Float):
        return math.log10(max(abs(float(expr)), 1.0))
    if not getattr(expr, "args", ()):
        return 1.0
    bounds = [_log10_bound(a) for a in expr.args]
    if isinstance(expr, sympy.Pow):
        (base, exp), numeric = bounds, expr.base.is_number
        # an exponent above a million, or a big power of a sum (sympy expands it)
        if exp > 6 or (not numeric and not expr.base.is_Symbol and exp > math.log10(MAX_SYMBOLIC_POWER)):
            return math.inf
        return max(base, 1.0) * 10**exp if numeric else 1.0
    if isinstance(expr, sympy.factorial):
        return math.inf if bounds[0] > 6 else 10 ** bounds[0] * max(bounds[0], 1.0)
    total = sum(bounds) if isinstance(expr, sympy.Mul) else max(bounds) + math.log10(len(bounds))
    return math.inf if total > MAX_DIGITS else total


def _parse(answer: str, timeout: int | None) -> list[Any]:
    """math-verify's readings of an extracted answer; none when one could stall sympy."""
    parsed = _math_verify().parse(f"\\boxed{{{answer}}}", parsing_timeout=timeout)
    try:
        tame = all(_log10_bound(p) <= MAX_DIGITS for p in parsed if not isinstance(p, str))
    except RecursionError:
        tame = False
    return parsed if tame else []


def math_reward(prompt: str, response: str, reference: str | None = None) -> float:
    """1.0 when the response's final answer equals the reference's, else 0.0 (also without an answer).

    The reference is the record's answer: a GSM8K solution ending in `#### 72`, a solution with a `\\boxed{}`, or
    the answer itself (`72`, `\\frac{1}{2}`). Raises ValueError without one, so the RL stage skips the rollout."""
    if reference is None or not reference.strip():
        raise ValueError(
            "math_reward needs the record's reference answer (math_reward(prompt, response, reference)); "
            "a reward function called with (prompt, response) alone cannot check the answer"
        )
    verifier = _math_verify()
    gold = extract_answer(reference, last_number=False) or _normalise(reference)
    pred = extract_answer(response)
    if pred is None:
        return 0.0
    if gold == pred:
        return 1.0
    main = os.name == "posix" and threading.current_thread() is threading.main_thread()
    timeout = TIMEOUT_S if main else None
    gold_parsed, pred_parsed = _parse(gold, timeout), _parse(pred, timeout)
    if not gold_parsed or not pred_parsed:
        return 0.0  # the strings differ and there is nothing to compare numerically
    return 1.0 if verifier.verify(gold_parsed, pred_parsed, timeout_seconds=timeout) else 0.0


def math_format_reward(prompt: str, response: str) -> float:
    """1.0 when the response gives its answer in a non-empty `\\boxed{}` (or `\\fbox{}`), else 0.0."""
    return 1.0 if _last_boxed(response) is not None else 0.0
