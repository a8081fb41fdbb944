"""Coverage of the report's intervals for a difference of two variants, by simulation (docs/report.md).

Two arms with no true difference, n runs (seeds) each, P problems shared by both: score = 50 + run offset
(sd `seed_sd`) + problem effect (sd 20, shared) + arm x problem (sd `x_sd`) + noise (sd `noise_sd`). For each case
it prints how often the nominal 95% interval holds 0, for:
- run_interval (harness/reporting/stats.py: seeds and problems as crossed random effects, t with Satterthwaite df);
- a two-level percentile bootstrap (resample runs, then problems within each run; B = 400);
- the pooled paired bootstrap over problems (the report's interval before issue 17: runs held fixed).

    .venv/bin/python benchmarks/interval_coverage.py [--reps 400]
"""
from __future__ import annotations

import argparse

import numpy as np

from harness.reporting import stats

CASES = [  # (label, n, seed_sd, x_sd, noise_sd)
    ("runs dominate", 3, 5.0, 0.5, 2.0),
    ("runs dominate", 5, 5.0, 0.5, 2.0),
    ("mixed (mini-like)", 3, 2.3, 3.0, 10.0),
    ("mixed (mini-like)", 6, 2.3, 3.0, 10.0),
    ("no run variance", 3, 0.0, 3.0, 10.0),
    ("no run variance", 6, 0.0, 3.0, 10.0),
]


def arms(rng, n, p, seed_sd, x_sd, noise_sd):
    prob = rng.normal(0, 20.0, p)  # [P] shared by both arms
    return [50 + rng.normal(0, seed_sd, (n, 1)) + prob + rng.normal(0, x_sd, p) + rng.normal(0, noise_sd, (n, p))
            for _ in range(2)]  # 2 x [n, P]


def two_level(rng, ys, b=400, alpha=0.05):
    reps = np.zeros(b)
    for sign, y in zip((1, -1), ys):
        n, p = y.shape
        s = rng.integers(0, n, (b, n))  # [B, n] runs
        q = rng.integers(0, p, (b, n, p))  # [B, n, P] problems within each drawn run
        reps += sign * y[s[:, :, None], q].mean(axis=(1, 2))
    return np.quantile(reps, [alpha / 2, 1 - alpha / 2])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=400)
    ap.add_argument("--problems", type=int, default=200)
    a = ap.parse_args()
    rs = stats.Resampler(n_boot=400, seed=0)
    print(f"| case | seeds | run_interval | two-level bootstrap | pooled bootstrap over problems |")
    print("| --- | --- | --- | --- | --- |")
    for label, n, seed_sd, x_sd, noise_sd in CASES:
        rng = np.random.default_rng(0)
        hits = np.zeros(3)
        for _ in range(a.reps):
            ya, yb = arms(rng, n, a.problems, seed_sd, x_sd, noise_sd)
            r = stats.run_interval([[ya], [yb]], [1.0, -1.0], 0.05)
            lo, hi = two_level(rng, [ya, yb])
            pb = stats.paired_bootstrap([ya.mean(0) - yb.mean(0)], 0.05, rs)
            hits += [r.ci_low <= 0 <= r.ci_high, lo <= 0 <= hi, pb.ci_low <= 0 <= pb.ci_high]
        cov = hits / a.reps
        print(f"| {label} (run sd {seed_sd:g}) | {n} | {cov[0]:.3f} | {cov[1]:.3f} | {cov[2]:.3f} |")
    print(f"\n{a.reps} simulated datasets per case, {a.problems} problems; Monte Carlo se ~"
          f"{np.sqrt(0.95 * 0.05 / a.reps):.3f} at 95%.")


if __name__ == "__main__":
    main()
