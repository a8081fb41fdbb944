"""Per-benchmark metrics from per-sample verdicts: avg@k, unbiased pass@k, maj@k, len@k, and bootstrap CIs.

Pure functions on plain lists; nothing here knows about models or files. Every metric is first computed per
problem, then averaged over problems, and its 95% confidence interval is a percentile bootstrap over problems
(problems resampled with replacement; the k samples of a problem stay together).

- avg@k: mean accuracy of the k samples (the paper's Acc@16).
- pass@k: the unbiased estimator 1 - C(n-c, k) / C(n, k) from n samples with c correct (Chen et al. 2021),
  for k <= n.
- maj@k: the most frequent extracted answer among the first k samples is correct (samples without an answer do
  not vote; ties go to the answer seen first). Answers are grouped by their canonical spelling
  (`harness.core.answers.answer_key`), so two equivalent answers written differently (0.5 and \\frac{1}{2})
  vote separately: a stated simplification (maj@k is not in the paper).
- len@k: mean response length in tokens (the paper's Len@16).
- truncated, no_answer: shares of samples cut at the generation limit and of samples with no extractable answer.
Rates are in percent, lengths in tokens.
"""
from __future__ import annotations

import zlib
from collections import Counter
from typing import Sequence

import numpy as np

from harness.core.answers import answer_key


def pass_at_k_curve(n: Sequence[int] | np.ndarray, c: Sequence[int] | np.ndarray, k_max: int) -> np.ndarray:
    """Unbiased pass@k = 1 - C(n-c, k) / C(n, k) for k = 1..k_max, per problem -> [P, k_max] (fractions).

    n, c [P]: samples and correct samples per problem. C(n-c, k) / C(n, k) = prod_{i<k} (n-c-i) / (n-i), so a
    running product gives every k at once; a factor reaches 0 when fewer than k samples are wrong. Needs
    0 <= c <= n and k_max <= min(n).
    """
    n, c = np.asarray(n, dtype=float), np.asarray(c, dtype=float)  # [P]
    if n.size and (k_max < 1 or k_max > n.min() or (c < 0).any() or (c > n).any()):
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got k={k_max}, "
                         f"n in [{n.min():g}, {n.max():g}], c in [{c.min():g}, {c.max():g}]")
    i = np.arange(k_max)  # [K]
    ratio = np.clip((n - c)[:, None] - i, 0, None) / (n[:, None] - i)  # [P, K]
    return 1.0 - np.cumprod(ratio, axis=1)  # [P, K]


def pass_at_k(n: int, c: int, k: int) -> float:
    """pass@k of one problem with n samples of which c are correct (`pass_at_k_curve` at one k)."""
    return float(pass_at_k_curve([n], [c], k)[0, k - 1])


def majority_correct(extracted: Sequence[str | None], correct: Sequence[bool]) -> bool:
    """True when the most frequent answer (by normalised text, ties: first seen) is a correct one."""
    keys = [None if e is None else answer_key(e) for e in extracted]
    votes = Counter(k for k in keys if k is not None)
    if not votes:
        return False
    top = max(votes.values())
    winner = next(k for k in keys if k is not None and votes[k] == top)
    return bool(next(c for k, c in zip(keys, correct) if k == winner))


def rng_for(seed: int, *key: object) -> np.random.Generator:
    """A generator seeded by (seed, key), stable across runs and independent of call order."""
    return np.random.default_rng([seed, zlib.crc32(repr(key).encode())])


class Resampler:
    """Percentile bootstrap over problems: B x P count matrices, cached per (P, stream).

    The resampling weights depend only on (seed, stream, number of problems); the stream names the benchmark, so
    every comparison over one benchmark reuses one matrix (each is still a valid bootstrap and results do not
    depend on the order of computation), a resample mean is one matrix product, and two benchmarks of equal size
    are still resampled independently.
    """

    def __init__(self, n_boot: int = 2000, seed: int = 0):
        self.n_boot, self.seed = n_boot, seed
        self._counts: dict[tuple[int, object], np.ndarray] = {}

    def counts(self, p: int, stream: object = 0) -> np.ndarray:
        """[B, P] how often each problem is drawn in each resample (rows sum to P)."""
        if (p, stream) not in self._counts:
            idx = rng_for(self.seed, "problems", p, stream).integers(0, p, size=(self.n_boot, p))  # [B, P]
            flat = (idx + np.arange(self.n_boot)[:, None] * p).ravel()
            self._counts[(p, stream)] = np.bincount(flat, minlength=self.n_boot * p).reshape(
                self.n_boot, p).astype(float)
        return self._counts[(p, stream)]

    def means(self, x: np.ndarray, stream: object = 0) -> np.ndarray:
        """Means of the B resamples of x [P] -> [B]."""
        return self.counts(len(x), stream) @ x / len(x)


def percentile_ci(reps: np.ndarray, alpha: float) -> tuple[float, float]:
    """The (alpha/2, 1 - alpha/2) percentiles of bootstrap replicates."""
    lo, hi = np.quantile(reps, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def bootstrap_ci(values: Sequence[float], iters: int = 2000, confidence: float = 0.95,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of per-problem `values` (resampling problems)."""
    v = np.asarray(values, dtype=float)  # [P]
    if v.size == 0:
        return float("nan"), float("nan")
    if v.size == 1 or iters <= 0:
        return float(v.mean()), float(v.mean())
    return percentile_ci(Resampler(iters, seed).means(v), 1.0 - confidence)


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
    ks = [k for k in ks if k <= n_samples]
    if ks:
        curve = pass_at_k_curve([n_samples] * len(correct), [sum(c) for c in correct], max(ks))  # [P, K]
        for k in ks:
            out[("pass@k", k)] = curve[:, k - 1].tolist()
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
