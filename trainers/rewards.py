"""Reward functions in TRL's signature: `reward(completions, answer, **kw) -> list[float]`.

- `math_reward`: 1.0 if the last `\\boxed{}` of the completion is mathematically equivalent to the reference
  answer, else 0.0 (`harness.core.scoring.score_math`: harness.core.equivalence in worker processes with CPU
  budgets, so no completion can hang or crash scoring). As in the paper (DAPO's rule reward, but 1/0 rather
  than DAPO's +1/-1; the group-normalised advantage is the same for both).
- `overlong_penalty` / `overlong_reward`: DAPO's soft overlong punishment (DAPO paper Eq. 13): 0 up to
  `max_len - buffer` tokens, then a linear ramp to `-factor` at `max_len`; `-factor` beyond.
- `digit_fraction_reward`: the fraction of characters of the completion that are digits. A continuous toy
  objective for smoke tests of random tiny models (math rewards are all zero there), not a paper component.
"""
from __future__ import annotations

from typing import Any, Callable


def _text(completion: Any) -> str:
    """A completion as text: TRL passes strings, or message lists for conversational prompts."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        return str(completion[-1].get("content", ""))
    return str(completion)


def math_reward(completions: list, answer: list, timeout_s: float = 5.0, **kw) -> list[float]:
    """1.0 when the last \\boxed{} answer is equivalent to `answer` (harness.core.equivalence), else 0.0; never
    raises on model output."""
    from harness.core.scoring import score_math

    scores = score_math([_text(c) for c in completions], [str(a) for a in answer], timeout_s=timeout_s)
    return [1.0 if s.correct else 0.0 for s in scores]


def digit_fraction_reward(completions: list, **kw) -> list[float]:
    """Fraction of the completion's characters that are ASCII digits (0.0 for an empty completion)."""
    out = []
    for c in completions:
        t = _text(c)
        out.append(sum(ch in "0123456789" for ch in t) / len(t) if t else 0.0)
    return out


def overlong_penalty(lengths: list[int], max_len: int, buffer: int, factor: float = 1.0) -> list[float]:
    """DAPO soft overlong punishment for completions of `lengths` tokens.

    With L_max = max_len and L_cache = buffer: 0 if L <= L_max - L_cache; (L_max - L_cache - L) / L_cache * factor
    if L_max - L_cache < L <= L_max; -factor if L > L_max.
    """
    if buffer <= 0 or buffer > max_len:
        raise ValueError(f"overlong buffer must be in (0, max_len={max_len}], got {buffer}")
    start = max_len - buffer
    out = []
    for n in lengths:
        if n <= start:
            out.append(0.0)
        elif n <= max_len:
            out.append((start - n) / buffer * factor)
        else:
            out.append(-factor)
    return out


def overlong_reward(max_len: int, buffer: int, factor: float = 1.0) -> Callable[..., list[float]]:
    """A TRL reward function (named `overlong_penalty`) adding the soft overlong penalty to the task reward."""
    overlong_penalty([0], max_len, buffer, factor)  # validate now, not at the first rollout

    def reward(completions: list, completion_ids: list, **kw) -> list[float]:
        return overlong_penalty([len(ids) for ids in completion_ids], max_len, buffer, factor)

    reward.__name__ = "overlong_penalty"
    return reward
