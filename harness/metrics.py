"""Per-benchmark metrics from per-sample verdicts: avg@k, unbiased pass@k, maj@k, len@k, and bootstrap CIs.

Pure functions on plain lists; nothing here knows about models or files. Every metric is first computed per
problem, then averaged over problems, and its 95% confidence interval is a percentile bootstrap over problems
(problems resampled with replacement; the k samples of a problem stay together).

- avg@k: mean accuracy of the k samples (the paper's Acc@16).
- pass@k: the unbiased estimator 1 - C(n-c, k) / C(n, k) from n samples with c correct (Chen et al. 2021),
  for k <= n.
- maj@k: the most frequent extracted answer among the first k samples is correct (samples without an answer do
  not vote; ties go to the answer seen first). Answers are grouped by their normalised text
  (`harness.core.scoring.normalize_answer`), so two equivalent answers written differently vote separately: a
  stated simplification (maj@k is not in the paper).
- len@k: mean response length in tokens (the paper's Len@16).
- truncated, no_answer: shares of samples cut at the generation limit and of samples with no extractable answer.
Rates are in percent, lengths in tokens.
"""
from __future__ import annotations

import math
from collections import Counter
from typing import Sequence

import numpy as np

from harness.core.scoring import normalize_answer


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k = 1 - C(n-c, k) / C(n, k) for one problem with n samples of which c are correct."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass_at_k needs 0 <= c <= n and 1 <= k <= n, got n={n} c={c} k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def majority_correct(extracted: Sequence[str | None], correct: Sequence[bool]) -> bool:
    """True when the most frequent answer (by normalised text, ties: first seen) is a correct one."""
    keys = [None if e is None else normalize_answer(e) for e in extracted]
    votes = Counter(k for k in keys if k is not None)
    if not votes:
        return False
    top = max(votes.values())
    winner = next(k for k in keys if k is not None and votes[k] == top)
    return bool(next(c for k, c in zip(keys, correct) if k == winner))


def bootstrap_ci(values: Sequence[float], iters: int = 2000, confidence: float = 0.95,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of per-problem `values` (resampling problems)."""
    v = np.asarray(values, dtype=float)  # [P]
    if v.size == 0:
        return float("nan"), float("nan")
    if v.size == 1 or iters <= 0:
        return float(v.mean()), float(v.mean())
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, v.size, size=(iters, v.size))  # [iters, P]
    means = v[idx].mean(axis=1)  # [iters]
    alpha = (1.0 - confidence) / 2
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def per_problem_metrics(correct: Sequence[Sequence[bool]], extracted: Sequence[Sequence[str | None]],
                        lengths: Sequence[Sequence[int]], truncated: Sequence[Sequence[bool]] | None,
                        ks: Sequence[int]) -> dict[tuple[str, int], list[float]]:
    """(metric, k) -> one value per problem. `correct[p][s]` etc. are per problem p and sample s; rates in
    [0, 1] here (scaled to percent by `summarize`). `truncated=None` (unknown, e.g. replayed outputs without
    a generation limit) leaves the truncated share out."""
    n = {len(c) for c in correct}
    if len(n) != 1:
        raise ValueError(f"every problem needs the same number of samples, got counts {sorted(n)}")
    n_samples = n.pop()
    out: dict[tuple[str, int], list[float]] = {}
    out[("avg@k", n_samples)] = [sum(c) / n_samples for c in correct]
    for k in ks:
        if k > n_samples:
            continue
        out[("pass@k", k)] = [pass_at_k(n_samples, int(sum(c)), k) for c in correct]
    out[("maj@k", n_samples)] = [float(majority_correct(e, c)) for e, c in zip(extracted, correct)]
    out[("len@k", n_samples)] = [float(np.mean(l)) for l in lengths]
    if truncated is not None:
        out[("truncated", n_samples)] = [float(np.mean(t)) for t in truncated]
    out[("no_answer", n_samples)] = [sum(e is None for e in ex) / n_samples for ex in extracted]
    return out


def summarize(correct: Sequence[Sequence[bool]], extracted: Sequence[Sequence[str | None]],
              lengths: Sequence[Sequence[int]], truncated: Sequence[Sequence[bool]] | None,
              ks: Sequence[int] = (1, 2, 4, 8, 16), iters: int = 2000, confidence: float = 0.95,
              seed: int = 0) -> list[dict]:
    """Rows `metric, k, value, ci_low, ci_high, n_problems, n_samples` (rates in percent, lengths in tokens)."""
    if not correct:
        raise ValueError("summarize: no problems")
    rows = []
    for (metric, k), vals in per_problem_metrics(correct, extracted, lengths, truncated, ks).items():
        scale = 1.0 if metric == "len@k" else 100.0
        lo, hi = bootstrap_ci(vals, iters=iters, confidence=confidence, seed=seed)
        rows.append({"metric": metric, "k": k, "value": scale * float(np.mean(vals)), "ci_low": scale * lo,
                     "ci_high": scale * hi, "n_problems": len(vals), "n_samples": len(correct[0])})
    return rows
