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

The training run (seed) is the unit of inference (`run_interval`). Two training runs of the same variant differ
by about as much as top-20% differs from full, so an interval that holds the trained models fixed and resamples
only problems (the paired bootstrap above) is far too narrow for a claim about the variant: two honest reruns can
then carry opposite significant verdicts. `run_interval` treats seeds and problems as crossed random effects,
    y[a][b][s, p] = mu_a + seed_{a,s} + problem_{b,p} + (arm x problem)_{a,b,p} + residual_{a,b,s,p},
and estimates the variance of a contrast of arm means by moments (the two-way ANOVA estimators): the variance
of the per-seed values over seeds (n_a - 1 df per arm) plus the variance of the seed-averaged per-problem
contrast over problems (P_b - 1 df), minus the residual counted in both (two-way residual mean square,
(n_a - 1)(P_b - 1) df). The interval is Student-t with Welch-Satterthwaite degrees of freedom.
Why not a two-level bootstrap (seeds, then problems within each seed): with the 3-8 seeds a grid can afford, a
bootstrap over seeds shrinks the seed variance by (n-1)/n and uses normal quantiles where t(n-1) ones are due,
while resampling problems within seeds counts the residual twice. Simulated (benchmarks/interval_coverage.py,
docs/report.md: a difference of two arms, 200 problems): when seeds dominate, its nominal 95% interval covered
81% of the time at 3 seeds and 89% at 5 (this interval: 97%, 96%); with no seed variance 100% (too wide; this
interval: 99%, 95%); the pooled paired bootstrap over problems covered 4-5% when seeds dominate.
With zero seed variance this interval reduces to the paired t over problems; with zero problem variance, to
Welch's t over seeds (tests/test_report.py checks both by hand and its coverage by simulation).
Arms are independent: seed s of one variant and seed s of another share the seed number, not a design
(different masks give different trajectories from the first update), so no pairing by seed is assumed.
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


@dataclass(frozen=True)
class RunInterval:
    """A contrast of arm means with seeds and problems both random (run_interval)."""
    value: float
    ci_low: float
    ci_high: float
    se: float
    df: float
    p_value: float              # two-sided, H0: the contrast is 0
    n_seeds: tuple[int, ...]    # per arm
    n_problems: int             # summed over benchmarks
    parts: dict[str, float]     # variance parts: seeds, problems, residual (counted in both, subtracted)


def _residual_ms(y: np.ndarray) -> float:
    """Two-way (seed x problem) residual mean square of y [n, P] (one observation per cell)."""
    r = y - y.mean(axis=1, keepdims=True) - y.mean(axis=0, keepdims=True) + y.mean()  # [n, P]
    return float((r * r).sum() / ((y.shape[0] - 1) * (y.shape[1] - 1)))


def t_interval(value: float, se: float, df: float, alpha: float) -> tuple[float, float]:
    """value +- t(1 - alpha/2, df) se."""
    from scipy.special import stdtrit

    if se == 0:
        return value, value
    half = float(stdtrit(df, 1 - alpha / 2)) * se
    return value - half, value + half


def run_interval(arms: Sequence[Sequence[np.ndarray]], coefs: Sequence[float], alpha: float) -> RunInterval | None:
    """sum_a coefs[a] * (mean over benchmarks of arm a's mean score), with seeds and problems both random.

    arms[a][b]: [n_a, P_b] per-problem scores of arm a's seeds (rows: cells, the same cells in every benchmark)
    on benchmark b; benchmark b's problems in the same order for every arm. One arm with coefs [1]: a variant's
    value; two with [1, -1]: a difference. Benchmarks weigh equally (the paper's Avg). None when an arm has
    fewer than two seeds (the variance between training runs cannot be estimated). A benchmark with one problem
    (or summary values only, passed as [n, 1]) contributes no problem part: the interval is then Welch's t over
    seeds. Variance V = seeds + problems - residual (module docstring); should sampling noise make that smaller
    than either the seed part or the problem part alone (each of which V exceeds in expectation), the larger
    part alone is used, with its own degrees of freedom.
    """
    from scipy.special import stdtr

    m = len(arms[0])
    ns = tuple(int(arm[0].shape[0]) for arm in arms)
    if min(ns) < 2:
        return None
    seeds, problems, residual = [], [], []  # (variance contribution, degrees of freedom)
    for arm, c in zip(arms, coefs):
        z = np.mean([y.mean(axis=1) for y in arm], axis=0)  # [n_a] each seed's value (mean over benchmarks)
        seeds.append((c * c * float(z.var(ddof=1)) / len(z), len(z) - 1))
    for b in range(m):
        p = arms[0][b].shape[1]
        if p < 2:
            continue
        w = sum(c * arm[b].mean(axis=0) for arm, c in zip(arms, coefs))  # [P_b] seed-averaged contrast
        problems.append((float(w.var(ddof=1)) / (m * m * p), p - 1))
        for arm, c in zip(arms, coefs):
            n = arm[b].shape[0]
            residual.append((-c * c * _residual_ms(arm[b]) / (m * m * n * p), (n - 1) * (p - 1)))
    candidates = [seeds + problems + residual, seeds, problems]
    parts = max((cand for cand in candidates if cand), key=lambda cand: sum(g for g, _ in cand))
    var = max(0.0, sum(g for g, _ in parts))
    value = float(sum(c * np.mean([y.mean() for y in arm]) for arm, c in zip(arms, coefs)))
    den = sum(g * g / d for g, d in parts)
    df = var * var / den if den > 0 else math.inf
    se = math.sqrt(var)
    lo, hi = t_interval(value, se, df, alpha)
    if se == 0:
        p_value = 1.0 if value == 0 else 0.0
    else:
        p_value = float(2 * stdtr(df, -abs(value) / se))
    return RunInterval(value, lo, hi, se, df, min(1.0, p_value), ns,
                       int(sum(arms[0][b].shape[1] for b in range(m))),
                       {"seeds": sum(g for g, _ in seeds), "problems": sum(g for g, _ in problems),
                        "residual": sum(g for g, _ in residual)})


EQUIVALENT, DIFFERENT, INCONCLUSIVE = "equivalent", "different", "inconclusive"


def equivalence_verdict(ci_low: float, ci_high: float, margin: float) -> str:
    """TOST-style verdict from a (1 - 2 alpha) interval of a difference and a margin > 0.

    equivalent: the interval lies inside (-margin, +margin) (both one-sided tests of |d| >= margin reject at alpha);
    different: it lies entirely beyond one side of the margin (the difference exceeds the margin, one-sided at
    alpha); inconclusive: otherwise, including a NaN interval.
    """
    if math.isnan(ci_low) or math.isnan(ci_high):
        return INCONCLUSIVE
    if -margin < ci_low and ci_high < margin:
        return EQUIVALENT
    if ci_low > margin or ci_high < -margin:
        return DIFFERENT
    return INCONCLUSIVE
