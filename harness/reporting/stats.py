"""Pure statistics for the report: bootstrap CIs over benchmarks, the paired bootstrap, seed intervals.

pass@k and the problem-level bootstrap (`Resampler`) live in harness/metrics.py, shared with the evaluation.

No I/O here. Conventions: scores are percentages (0-100) per problem; a "problem score" is the mean over that
problem's sampled responses (so the mean over problems is avg@k, the paper's Acc@k, an estimate of pass@1).

Choices (not specified by the paper, which prints point estimates only):
- Percentile bootstrap over problems, B resamples (default 2000), one stream per benchmark
  (`harness.metrics.Resampler`).
- Paired bootstrap of variant minus reference on the same problems. Two-sided p-value from the same resamples
  as the percentile CI: p = min(1, 2 min(1 + #{d*_b <= 0}, 1 + #{d*_b >= 0}) / (B + 1)), so p < alpha exactly
  when (up to the +1) zero lies outside the (1 - alpha) percentile interval: the table's CI and its * agree.
- An average over benchmarks (the paper's "Avg") resamples each benchmark's problems independently and averages
  the per-benchmark resampled means, so each benchmark keeps its equal weight as in the paper.
- Across seeds: mean and Student-t interval of the per-seed values (no interval with one seed).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from harness.metrics import Resampler, percentile_ci


@dataclass(frozen=True)
class Interval:
    value: float
    ci_low: float
    ci_high: float


def bootstrap_ci(per_benchmark: Sequence[np.ndarray], alpha: float, rs: Resampler,
                 streams: Sequence[object] | None = None) -> Interval:
    """Mean over benchmarks of the mean problem score, with a percentile bootstrap CI.

    per_benchmark: one array of problem scores [P_b] per benchmark (one benchmark: an ordinary bootstrap);
    streams: one resampling stream per benchmark (its name), default their positions.
    """
    streams = list(streams) if streams is not None else list(range(len(per_benchmark)))
    reps = np.mean([rs.means(x, st) for x, st in zip(per_benchmark, streams)], axis=0)  # [B]
    value = float(np.mean([x.mean() for x in per_benchmark]))
    return Interval(value, *percentile_ci(reps, alpha))


@dataclass(frozen=True)
class PairedResult:
    diff: float
    ci_low: float
    ci_high: float
    p_value: float
    n_problems: int


def paired_bootstrap(diffs: Sequence[np.ndarray], alpha: float, rs: Resampler,
                     streams: Sequence[object] | None = None) -> PairedResult:
    """Paired bootstrap of per-problem differences (variant - reference), one array [P_b] per benchmark.

    Returns the mean difference (averaged over benchmarks), its percentile CI and the centred two-sided p-value.
    """
    streams = list(streams) if streams is not None else list(range(len(diffs)))
    reps = np.mean([rs.means(x, st) for x, st in zip(diffs, streams)], axis=0)  # [B]
    d = float(np.mean([x.mean() for x in diffs]))
    below, above = int((reps <= 0).sum()), int((reps >= 0).sum())
    p = 2 * (1 + min(below, above)) / (len(reps) + 1)
    return PairedResult(d, *percentile_ci(reps, alpha), p_value=min(1.0, p),
                        n_problems=int(sum(len(x) for x in diffs)))


def seed_interval(values: Sequence[float], alpha: float) -> tuple[float, float, float, float]:
    """(mean, sd, ci_low, ci_high) over seeds, Student-t; sd and CI are NaN with fewer than two seeds."""
    v = np.asarray([x for x in values if not math.isnan(x)], dtype=float)
    if len(v) == 0:
        return (math.nan,) * 4
    mean = float(v.mean())
    if len(v) < 2:
        return mean, math.nan, math.nan, math.nan
    from scipy.special import stdtrit  # Student-t quantile; scipy.special imports much faster than scipy.stats

    sd = float(v.std(ddof=1))
    half = float(stdtrit(len(v) - 1, 1 - alpha / 2)) * sd / math.sqrt(len(v))
    return mean, sd, mean - half, mean + half


def combine_cis(cis: Sequence[tuple[float, float]], alpha: float) -> float:
    """Half-width of a mean of independent estimates from their CIs (normal approximation).

    Each CI gives se = (hi - lo) / (2 z); the mean of m estimates has se = sqrt(sum se^2) / m.
    Returns NaN if any CI is missing.
    """
    from statistics import NormalDist

    z = NormalDist().inv_cdf(1 - alpha / 2)
    ses = [(hi - lo) / (2 * z) for lo, hi in cis]
    if not ses or any(math.isnan(s) for s in ses):
        return math.nan
    return z * math.sqrt(sum(s * s for s in ses)) / len(ses)
