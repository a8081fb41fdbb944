"""Tables in the layout of the paper's Table 2, significance against `full`, and the published comparison.

Pure functions of DataFrames (plus per-problem scores); rendering to Markdown / LaTeX / CSV is text only.

How a table value is made (the paper prints point estimates from one run each). The training run (seed) is
the unit of inference: every interval of a variant or of a difference printed with two or more seeds holds the
variance between training runs (stats.run_interval: seeds and problems as crossed random effects, Student-t with
Welch-Satterthwaite df).
- value: mean over seeds (cells) of each cell's summary value at its table step (avg@k for Acc, len@k for Len);
- CI: two or more seeds -> stats.run_interval over the per-problem scores of every seed (summary values only:
  t over seeds); one seed -> the evaluation's own CI, which covers problem sampling only (marked "one run");
- "Avg": mean over the benchmarks in `average_over` present in the grid (the paper's six), each benchmark
  weighing equally; a row missing one of them has no Avg; with two or more seeds its CI is run_interval over all
  of them at once (seeds of the per-cell Avg, problems per benchmark), with one seed the benchmark CIs combined;
- difference to the reference variant (`full`) of the same model: run_interval of variant minus reference (arms
  independent, problems paired); with one seed in an arm, the paired bootstrap over problems (problems only).
  A difference is tested (`*`, verdict higher / lower / inconclusive) only when each arm has at least
  `min_seeds` seeds; otherwise its verdict is "too few seeds" and it is marked `†`;
- equivalence (the paper's "top-20% matches full"): for `equivalence_variant`, the (1 - 2 alpha) interval of the
  difference against +-`equivalence_margin`: equivalent / different / inconclusive (stats.equivalence_verdict).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from harness.metrics import pass_at_k_curve
from harness.reporting import stats
from harness.reporting.load import ProblemScores

PAPER_BENCHMARKS = {"aime2024": "AIME24", "aime2025": "AIME25", "amc23": "AMC23", "math500": "MATH500",
                    "minerva": "Minerva", "olympiadbench": "OlympiadBench"}
AVG = "Avg"
PAPER_AVG = "Average6"
PAPER_METRICS = {"Acc": "avg@k", "Len": "len@k"}  # published "Acc@16" -> our avg@k with k = 16


@dataclass
class Options:
    reference: str = "full"
    variant_order: Sequence[str] = ("base", "full", "top10", "top20", "top50", "bottom80", "random20")
    benchmark_names: dict[str, str] = field(default_factory=lambda: dict(PAPER_BENCHMARKS))
    average_over: Sequence[str] = tuple(PAPER_BENCHMARKS)
    metrics: dict[str, str] = field(default_factory=lambda: dict(PAPER_METRICS))  # label -> metric family
    k: int | None = None          # None: the largest k in the data, per metric family
    n_boot: int = 2000
    alpha: float = 0.05
    seed: int = 0
    min_seeds: int = 5            # seeds per arm a difference needs before it is tested (configs/report.yaml)
    equivalence_variant: str | None = "top20"   # tested for equivalence with the reference
    equivalence_margin: float = 2.0             # points of the metric (configs/report.yaml: the justification)
    equivalence_metric: str = "avg@k"           # the metric family the margin is stated in (Acc)


# ---------------------------------------------------------------- selecting and ordering

def table_rows(summary: pd.DataFrame, cells: pd.DataFrame) -> pd.DataFrame:
    """Summary rows that enter the tables (`in_table`, set by load: each complete cell at its table step, and one
    base evaluation per model, see load.base_sources), with the model size."""
    sizes = cells.drop_duplicates("model").set_index("model")["model_size_b"]
    out = summary[summary["in_table"].astype(bool)].copy()
    out["model_size_b"] = out["model"].map(sizes)
    return out


def choose_k(rows: pd.DataFrame, metric: str, k: int | None) -> int | None:
    ks = rows.loc[rows["metric"] == metric, "k"].dropna()
    if k is not None:
        return k if (ks == k).any() else None
    return int(ks.max()) if len(ks) else None


def benchmark_order(benchmarks: Sequence[str], opts: Options) -> list[str]:
    """Paper benchmarks in the paper's order, then the others alphabetically (extra columns after Avg)."""
    paper = [b for b in opts.benchmark_names if b in benchmarks]
    return paper + sorted(set(benchmarks) - set(paper))


def variant_order(variants: Sequence[str], opts: Options) -> list[str]:
    known = [v for v in opts.variant_order if v in variants]
    return known + sorted(set(variants) - set(known))


def model_order(rows: pd.DataFrame) -> list[str]:
    m = rows.drop_duplicates("model")[["model", "model_size_b"]]
    return list(m.assign(s=m["model_size_b"].fillna(np.inf)).sort_values(["s", "model"])["model"])


# ---------------------------------------------------------------- aggregation

SampleLookup = Callable[[str, str, str], "ProblemScores | None"]  # (cell_id, eval, benchmark) -> scores


def _scores(ps: ProblemScores, metric: str) -> np.ndarray | None:
    x = ps.length if metric.startswith("len") else ps.acc
    return None if np.isnan(x).any() else x


def align(parts: Sequence[tuple[list[str], np.ndarray]]) -> tuple[list[str], np.ndarray] | None:
    """Stack per-problem arrays on the problems all parts share, in the first part's order -> keys, [U, P]."""
    k0 = parts[0][0]
    if all(k == k0 for k, _ in parts[1:]):  # the usual case: same problems, same order
        return k0, np.stack([x for _, x in parts])
    common = set(k0).intersection(*(k for k, _ in parts[1:]))
    keys = [k for k in k0 if k in common]
    if not keys:
        return None
    rows = []
    for ks, x in parts:
        pos = {k: i for i, k in enumerate(ks)}
        rows.append(x[[pos[k] for k in keys]])
    return keys, np.stack(rows)


def stacked(units: Sequence[tuple[str, str]], benchmark: str, metric: str,
            lookup: SampleLookup) -> tuple[list[str], np.ndarray] | None:
    """Per-problem scores of each unit (seed), on the problems all units share -> keys, [n_units, P];
    None without samples."""
    parts = []
    for cell_id, ev in units:
        ps = lookup(cell_id, ev, benchmark)
        x = None if ps is None else _scores(ps, metric)
        if x is None:
            return None
        parts.append((ps.keys, x))
    return align(parts)


@dataclass(frozen=True)
class Unit:
    """One cell's result for one benchmark (a seed, for pooling)."""
    cell_id: str
    eval: str
    value: float
    ci_low: float
    ci_high: float
    n_problems: float


def index_rows(rows: pd.DataFrame) -> dict[tuple, list[Unit]]:
    """(metric, k, model, variant, benchmark) -> units, one per (cell, eval), in row order."""
    idx: dict[tuple, dict[tuple, Unit]] = {}
    for r in rows[["metric", "k", "model", "variant", "benchmark", "cell_id", "eval", "value", "ci_low", "ci_high",
                   "n_problems"]].itertuples(index=False):
        key = (r.metric, r.k, r.model, r.variant, r.benchmark)
        idx.setdefault(key, {}).setdefault((r.cell_id, r.eval), Unit(r.cell_id, r.eval, float(r.value),
                                                                      float(r.ci_low), float(r.ci_high),
                                                                      float(r.n_problems)))
    return {k: sorted(v.values(), key=lambda u: (u.cell_id, u.eval)) for k, v in idx.items()}


class _Ctx:
    """What the aggregation helpers share: options, resampler, samples and a cache of stacked scores."""

    def __init__(self, lookup: SampleLookup, opts: Options):
        self.lookup, self.opts = lookup, opts
        self.rs = stats.Resampler(opts.n_boot, opts.seed)
        self._stacked: dict[tuple, tuple[list[str], np.ndarray] | None] = {}

    def stacked(self, units: Sequence[Unit], benchmark: str, metric: str):
        """keys, [n_units, P] (see `stacked`), cached."""
        key = (tuple((u.cell_id, u.eval) for u in units), benchmark, metric)
        if key not in self._stacked:
            self._stacked[key] = stacked(key[0], benchmark, metric, self.lookup)
        return self._stacked[key]

    def pooled(self, units: Sequence[Unit], benchmark: str, metric: str):
        """keys, [P] per-problem score averaged over the units."""
        st = self.stacked(units, benchmark, metric)
        return None if st is None else (st[0], st[1].mean(axis=0))

    def arm(self, units: dict[str, list[Unit]], benchmarks: Sequence[str],
            metric: str) -> list[tuple[list[str], np.ndarray]] | None:
        """One arm for stats.run_interval: (keys, [n, P_b]) per benchmark, rows the same cells in every benchmark;
        None without samples or when the benchmarks were not all evaluated on the same cells."""
        cells = [(u.cell_id, u.eval) for u in units[benchmarks[0]]]
        if any([(u.cell_id, u.eval) for u in units[b]] != cells for b in benchmarks):
            return None
        out = []
        for b in benchmarks:
            st = self.stacked(units[b], b, metric)
            if st is None:
                return None
            out.append(st)
        return out


def aggregate(rows: pd.DataFrame, lookup: SampleLookup, opts: Options) -> pd.DataFrame:
    """Long table: one row per model x variant x metric x benchmark (and Avg) with CI and difference to reference."""
    ctx = _Ctx(lookup, opts)
    idx = index_rows(rows)
    out = []
    benchmarks = benchmark_order(rows["benchmark"].unique(), opts)
    avg_set = [b for b in opts.average_over if b in benchmarks] or benchmarks
    info = rows.drop_duplicates(["model", "variant"]).set_index(["model", "variant"])[["model_size_b", "rho"]]
    for label, metric in opts.metrics.items():
        k = choose_k(rows, metric, opts.k)
        if k is None:
            continue
        mrows = rows[(rows["metric"] == metric) & (rows["k"] == k)]
        for model in model_order(mrows):
            ref = {b: idx.get((metric, k, model, opts.reference, b), []) for b in benchmarks}
            ref_avg = float(np.mean([_mean(ref[b]) for b in avg_set]))  # NaN unless the reference has them all
            for variant in variant_order(mrows.loc[mrows["model"] == model, "variant"].unique(), opts):
                size, rho = info.loc[(model, variant)]
                base = dict(label=label, model=model, model_size_b=size, variant=variant, rho=rho, metric=metric, k=k)
                units = {b: idx[key] for b in benchmarks if (key := (metric, k, model, variant, b)) in idx}
                vals = {}
                for b, us in units.items():
                    vals[b] = _cell_value({b: us}, [b], metric, ctx)
                    out.append(dict(base, benchmark=b, **vals[b],
                                    **_delta(variant, {b: us}, ref, [b], metric, ctx, vals[b]["value"],
                                             _mean(ref[b]))))
                if not all(b in vals for b in avg_set):
                    continue
                v = _cell_value(units, avg_set, metric, ctx)
                if v["n_seeds"] < 2:  # one run: the benchmark CIs combined (problems only)
                    half = stats.combine_cis([(vals[b]["ci_low"], vals[b]["ci_high"]) for b in avg_set], opts.alpha)
                    v.update(ci_low=v["value"] - half, ci_high=v["value"] + half, ci_method=ONE_RUN + " (combined)")
                out.append(dict(base, benchmark=AVG, **dict(v, avg_of=" ".join(avg_set)),
                                **_delta(variant, units, ref, avg_set, metric, ctx, v["value"], ref_avg)))
    return pd.DataFrame(out, columns=LONG_COLUMNS)


LONG_COLUMNS = ["label", "model", "model_size_b", "variant", "rho", "benchmark", "metric", "k", "value", "ci_low",
                "ci_high", "n_seeds", "n_problems", "ci_method", "avg_of", "reference", "delta", "delta_ci_low",
                "delta_ci_high", "p_value", "delta_df", "n_seeds_ref", "n_paired", "delta_method", "verdict",
                "eq_margin", "eq_ci_low", "eq_ci_high", "eq_verdict"]
ONE_RUN = "one run: problems only"
RUNS = "runs + problems"
RUNS_NO_SAMPLES = "t over runs (no samples)"
TOO_FEW = "too few seeds"


def _units(df: pd.DataFrame) -> list[tuple[str, str]]:
    return list(dict.fromkeys(zip(df["cell_id"], df["eval"])))


def _mean(units: Sequence[Unit]) -> float:
    return float(np.mean([u.value for u in units])) if units else math.nan


def _per_run(units: dict[str, list[Unit]], benchmarks: Sequence[str]) -> np.ndarray | None:
    """[n, 1] each cell's value averaged over the benchmarks (summary values, no samples); None if the benchmarks
    were not evaluated on the same cells."""
    by_cell = [{(u.cell_id, u.eval): u.value for u in units[b]} for b in benchmarks]
    if any(set(d) != set(by_cell[0]) for d in by_cell):
        return None
    return np.array([[np.mean([d[c] for d in by_cell])] for c in sorted(by_cell[0])])


def _aligned_arms(ctx: _Ctx, arms_units: Sequence[dict[str, list[Unit]]], benchmarks: Sequence[str],
                  metric: str) -> list[list[np.ndarray]] | None:
    """arms for stats.run_interval, each benchmark's problems aligned across arms; None without samples."""
    arms = [ctx.arm(u, benchmarks, metric) for u in arms_units]
    if any(a is None for a in arms):
        return None
    out: list[list[np.ndarray]] = [[] for _ in arms]
    for b in range(len(benchmarks)):
        al = align([(a[b][0], np.arange(len(a[b][0]))) for a in arms])  # problem positions per arm
        if al is None:
            return None
        for i, a in enumerate(arms):
            out[i].append(a[b][1][:, al[1][i]])  # [n_i, P_common]
    return out


def _cell_value(units: dict[str, list[Unit]], benchmarks: Sequence[str], metric: str, ctx: _Ctx) -> dict:
    """Value and CI of one variant over `benchmarks` (one, or the Avg set), seeds as the unit."""
    us = units[benchmarks[0]]
    n = min(len(units[b]) for b in benchmarks)
    value = float(np.mean([_mean(units[b]) for b in benchmarks]))
    n_problems = sum(max(u.n_problems for u in units[b]) for b in benchmarks)
    rec = dict(value=value, ci_low=math.nan, ci_high=math.nan, n_seeds=n, n_problems=n_problems,
               ci_method=ONE_RUN, avg_of="")
    if n < 2:
        if len(benchmarks) == 1:
            rec.update(ci_low=us[0].ci_low, ci_high=us[0].ci_high)
        return rec
    arms = _aligned_arms(ctx, [units], benchmarks, metric)
    if arms is not None:
        r = stats.run_interval(arms, [1.0], ctx.opts.alpha)
        method = RUNS
    else:
        runs = _per_run(units, benchmarks)
        r = None if runs is None else stats.run_interval([[runs]], [1.0], ctx.opts.alpha)
        method = RUNS_NO_SAMPLES
    if r is None:
        return dict(rec, ci_method="")
    return dict(rec, ci_low=r.ci_low, ci_high=r.ci_high, n_problems=r.n_problems if arms else n_problems,
                ci_method=method)


_NO_DELTA = dict(reference="", delta=math.nan, delta_ci_low=math.nan, delta_ci_high=math.nan, p_value=math.nan,
                 delta_df=math.nan, n_seeds_ref=0, n_paired=0, delta_method="", verdict="", eq_margin=math.nan,
                 eq_ci_low=math.nan, eq_ci_high=math.nan, eq_verdict="")


def _paired(variant_units: dict, ref_units: dict, benchmarks: Sequence[str], metric: str,
            ctx: _Ctx) -> stats.PairedResult | None:
    diffs = []
    for b in benchmarks:
        pv, pr = ctx.pooled(variant_units[b], b, metric), ctx.pooled(ref_units[b], b, metric)
        if pv is None or pr is None:
            return None
        al = align([pv, pr])
        if al is None:
            return None
        diffs.append(al[1][0] - al[1][1])  # [P_b] variant - reference per problem
    return stats.paired_bootstrap(diffs, ctx.opts.alpha, ctx.rs, list(benchmarks))


def _delta(variant: str, units: dict, ref_units: dict, benchmarks: Sequence[str], metric: str, ctx: _Ctx,
           value: float, ref_value: float) -> dict:
    """Difference to the reference variant over `benchmarks` (one, or the Avg set), seeds as the unit."""
    opts = ctx.opts
    if variant in (opts.reference, "base") or math.isnan(ref_value) or any(not ref_units[b] for b in benchmarks):
        return dict(_NO_DELTA)
    nv, nr = min(len(units[b]) for b in benchmarks), min(len(ref_units[b]) for b in benchmarks)
    rec = dict(_NO_DELTA, reference=opts.reference, delta=value - ref_value, n_seeds_ref=nr,
               verdict=TOO_FEW if min(nv, nr) < opts.min_seeds else "")
    eq = variant == opts.equivalence_variant and metric == opts.equivalence_metric
    if eq:
        rec.update(eq_margin=opts.equivalence_margin, eq_verdict=TOO_FEW)
    if min(nv, nr) < 2:  # one run in an arm: problems only, never tested
        res = _paired(units, ref_units, benchmarks, metric, ctx)
        if res is None:
            return dict(rec, delta_method="no samples: difference only")
        return dict(rec, delta_ci_low=res.ci_low, delta_ci_high=res.ci_high, p_value=res.p_value,
                    n_paired=res.n_problems, delta_method="one run: paired bootstrap over problems only")
    arms = _aligned_arms(ctx, [units, ref_units], benchmarks, metric)
    if arms is not None:
        r, method = stats.run_interval(arms, [1.0, -1.0], opts.alpha), RUNS
    else:
        runs = [_per_run(units, benchmarks), _per_run(ref_units, benchmarks)]
        r = None if any(x is None for x in runs) else stats.run_interval([[runs[0]], [runs[1]]], [1.0, -1.0],
                                                                         opts.alpha)
        method = RUNS_NO_SAMPLES
    if r is None:
        return dict(rec, delta_method="difference only (cells differ between benchmarks)")
    rec.update(delta_ci_low=r.ci_low, delta_ci_high=r.ci_high, p_value=r.p_value, delta_df=r.df,
               n_paired=r.n_problems if arms is not None else 0, delta_method=method)
    if min(nv, nr) >= opts.min_seeds:
        rec["verdict"] = ("higher" if r.value > 0 else "lower") if r.p_value < opts.alpha else "inconclusive"
    if eq:
        lo, hi = stats.t_interval(r.value, r.se, r.df, 2 * opts.alpha)
        rec.update(eq_ci_low=lo, eq_ci_high=hi)
        if min(nv, nr) >= opts.min_seeds:
            rec["eq_verdict"] = stats.equivalence_verdict(lo, hi, opts.equivalence_margin)
    return rec


def seed_table(rows: pd.DataFrame, opts: Options) -> pd.DataFrame:
    """Across seeds: per model x variant x benchmark x metric, the per-seed values, mean, sd and t-interval."""
    out = []
    rows = rows[rows["metric"].isin(list(opts.metrics.values()))]
    rows = rows.drop_duplicates(["model", "variant", "benchmark", "metric", "k", "cell_id", "eval"])
    for (model, variant, b, metric, k), g in rows.sort_values("cell_id").groupby(
            ["model", "variant", "benchmark", "metric", "k"], sort=True, dropna=False):
        mean, sd, lo, hi = stats.seed_interval(list(g["value"]), opts.alpha)
        out.append(dict(model=model, variant=variant, benchmark=b, metric=metric, k=k, n_seeds=len(g), mean=mean,
                        sd=sd, ci_low=lo, ci_high=hi,
                        values=" ".join(f"{c}:{v:.2f}" for c, v in zip(g["cell_id"], g["value"]))))
    return pd.DataFrame(out, columns=["model", "variant", "benchmark", "metric", "k", "n_seeds", "mean", "sd",
                                      "ci_low", "ci_high", "values"])


def significance_table(long: pd.DataFrame) -> pd.DataFrame:
    s = long[long["reference"].ne("") & long["delta"].notna()]
    return s[["model", "variant", "reference", "benchmark", "metric", "k", "delta", "delta_ci_low", "delta_ci_high",
              "p_value", "delta_df", "verdict", "n_seeds", "n_seeds_ref", "n_paired", "delta_method"]].rename(
        columns={"delta": "diff", "delta_ci_low": "ci_low", "delta_ci_high": "ci_high", "delta_df": "df",
                 "n_paired": "n_problems", "delta_method": "method"}).reset_index(drop=True)


def equivalence_table(long: pd.DataFrame) -> pd.DataFrame:
    """The equivalence variant against the reference: difference, (1 - 2 alpha) interval, margin, verdict."""
    s = long[long["eq_verdict"].ne("") & long["delta"].notna()]
    return s[["model", "variant", "reference", "benchmark", "metric", "k", "delta", "eq_ci_low", "eq_ci_high",
              "eq_margin", "eq_verdict", "n_seeds", "n_seeds_ref", "delta_method"]].rename(
        columns={"delta": "diff", "eq_ci_low": "ci_low", "eq_ci_high": "ci_high", "eq_margin": "margin",
                 "eq_verdict": "verdict", "delta_method": "method"}).reset_index(drop=True)


# ---------------------------------------------------------------- published comparison

def published_comparison(long: pd.DataFrame, published: pd.DataFrame, opts: Options) -> pd.DataFrame:
    """Each published row against ours: ours, CI, difference (ours - published), inside CI, or 'no result'."""
    to_ours = {v: k for k, v in opts.benchmark_names.items()}
    paper_six = set(PAPER_BENCHMARKS)
    out = []
    for _, p in published.iterrows():
        label, _, pk = p["metric"].partition("@")
        metric = opts.metrics.get(label)
        bench = AVG if p["benchmark"] == PAPER_AVG else to_ours.get(p["benchmark"])
        mine = long[(long["model"].str.lower() == p["model"].lower()) & (long["variant"] == p["variant"])
                    & (long["benchmark"] == bench) & (long["metric"] == metric)]
        if bench == AVG:  # the paper's Average6 is the mean of exactly its six benchmarks
            mine = mine[mine["avg_of"].map(lambda s: set(s.split()) == paper_six)]
        rec = dict(model=p["model"], variant=p["variant"], benchmark=p["benchmark"], metric=p["metric"],
                   published=p["value"], source=p["source"], ours=math.nan, k=math.nan, ci_low=math.nan,
                   ci_high=math.nan, diff=math.nan, inside_ci="", status="no result")
        if len(mine):
            r = mine.iloc[0]
            pub = float(p["value"])
            inside = "" if math.isnan(r["ci_low"]) else ("yes" if r["ci_low"] <= pub <= r["ci_high"] else "no")
            rec.update(ours=r["value"], k=r["k"], ci_low=r["ci_low"], ci_high=r["ci_high"], diff=r["value"] - pub,
                       inside_ci=inside, status="compared" if str(r["k"]) == pk else f"compared (ours @{r['k']})")
        out.append(rec)
    return pd.DataFrame(out)


# Fig. 2 statistics: published name -> the name in `harness analyze entropy`'s entropy.csv (statistic,value)
ENTROPY_STATS = {"share_of_tokens_with_entropy_below_0.01": "share_below_0.01_pct",
                 "entropy_80th_percentile_nats": "p80",
                 "share_of_tokens_with_entropy_above_0.672": "share_above_0.672_pct"}


def entropy_comparison(published: pd.DataFrame, ours: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Fig. 2 statistics side by side: published (as printed, Qwen3-8B) and each of our entropy.csv files
    (label -> DataFrame with statistic,value); a statistic our file lacks is left empty."""
    out = []
    for _, p in published.iterrows():
        rec = {"statistic": p["statistic"], "published": p["value"], "published_model": p["model"],
               "source": p["source"]}
        for label, df in ours.items():
            hit = df.loc[df["statistic"] == ENTROPY_STATS.get(p["statistic"], p["statistic"]), "value"]
            rec[label] = float(hit.iloc[0]) if len(hit) else math.nan
        out.append(rec)
    return pd.DataFrame(out)


# ---------------------------------------------------------------- rendering

def fmt(x: float, signed: bool = False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:+.2f}" if signed else f"{x:.2f}"


ONE_RUN_MARK, UNTESTED_MARK, SIGNIFICANT_MARK = "†", "†", "*"


def _value_text(r, ci: bool = True) -> str:
    s = fmt(r["value"])
    if ci and not math.isnan(r["ci_low"]):
        s += f" [{fmt(r['ci_low'])}, {fmt(r['ci_high'])}]"
        if str(r["ci_method"]).startswith(ONE_RUN):
            s += ONE_RUN_MARK
    return s


def _delta_text(r) -> str:
    """difference [CI] and a mark: * tested and the CI excludes 0; † too few seeds to test."""
    if math.isnan(r["delta"]):
        return "-"
    s = fmt(r["delta"], signed=True)
    if not math.isnan(r["delta_ci_low"]):
        s += f" [{fmt(r['delta_ci_low'], True)}, {fmt(r['delta_ci_high'], True)}]"
    if r["verdict"] in ("higher", "lower"):
        s += SIGNIFICANT_MARK
    elif r["verdict"] == TOO_FEW:
        s += UNTESTED_MARK
    return s


def legend(opts: Options) -> str:
    """What the marks and intervals of the tables mean (under every table, in REPORT.md and the LaTeX caption)."""
    pct = f"{100 * (1 - opts.alpha):g}"
    eq = (f" Row ≈ {opts.reference} (±{opts.equivalence_margin:g}): {opts.equivalence_variant} tested for "
          f"equivalence with {opts.reference}, verdict and {100 * (1 - 2 * opts.alpha):g}% CI of the difference "
          f"(equivalent: inside ±{opts.equivalence_margin:g}; different: beyond it; else inconclusive)."
          if opts.equivalence_variant else "")
    return (f"mean [{pct}% CI]; with 2+ seeds every interval holds the variance between training runs (seeds) "
            f"and problems; † on a value: one training run, the interval covers problem sampling only. Δ rows: "
            f"difference to {opts.reference}; * p < {opts.alpha:g} with at least {opts.min_seeds} seeds per arm; "
            f"† fewer seeds than that: not tested.{eq}")


def _equivalence_text(r) -> str:
    """verdict [(1 - 2 alpha) CI]."""
    if not r["eq_verdict"]:
        return "-"
    ci = "" if math.isnan(r["eq_ci_low"]) else f" [{fmt(r['eq_ci_low'], True)}, {fmt(r['eq_ci_high'], True)}]"
    return f"{r['eq_verdict']}{ci}"


def wide_rows(long: pd.DataFrame, label: str, opts: Options) -> tuple[list[str], list[list[str]], list[dict]]:
    """Table 2 layout: header, text rows (model, variant, benchmark cells...), and numeric rows for CSV.

    Columns: the paper's benchmarks, Avg, then the other benchmarks. Rows: each variant of each model, and under
    each non-reference variant a row "Δ vs <reference>".
    """
    t = long[long["label"] == label]
    if t.empty:
        return [], [], []
    benches = benchmark_order([b for b in t["benchmark"].unique() if b != AVG], opts)
    paper = [b for b in benches if b in opts.benchmark_names]
    avg_cols = [AVG] if (t["benchmark"] == AVG).any() else []
    others = [b for b in benches if b not in paper]
    cols = paper + avg_cols + others if paper else others + avg_cols
    header = ["Model", "Variant"] + [opts.benchmark_names.get(c, c) for c in cols]
    text, numeric = [], []
    for model in list(dict.fromkeys(t["model"])):
        tm = t[t["model"] == model]
        for i, variant in enumerate(variant_order(tm["variant"].unique(), opts)):
            tv = tm[tm["variant"] == variant].set_index("benchmark")
            text.append([model if i == 0 else "", variant]
                        + [_value_text(tv.loc[c]) if c in tv.index else "-" for c in cols])
            numeric.append(_numeric(model, variant, "value", tv, cols, "value", "ci_low", "ci_high", None))
            if tv["reference"].ne("").any():
                text.append(["", f"Δ vs {opts.reference}"]
                            + [_delta_text(tv.loc[c]) if c in tv.index else "-" for c in cols])
                numeric.append(_numeric(model, variant, "delta", tv, cols, "delta", "delta_ci_low",
                                        "delta_ci_high", "p_value"))
            if tv["eq_verdict"].ne("").any():
                text.append(["", f"≈ {opts.reference} (±{opts.equivalence_margin:g})"]
                            + [_equivalence_text(tv.loc[c]) if c in tv.index else "-" for c in cols])
                numeric.append(_numeric(model, variant, "equivalence", tv, cols, "delta", "eq_ci_low",
                                        "eq_ci_high", None))
    return header, text, numeric


def _numeric(model, variant, kind, tv, cols, v, lo, hi, p) -> dict:
    rec = {"model": model, "variant": variant, "row": kind}
    for c in cols:
        r = tv.loc[c] if c in tv.index else None
        rec[c] = None if r is None else r[v]
        rec[f"{c}_ci_low"] = None if r is None else r[lo]
        rec[f"{c}_ci_high"] = None if r is None else r[hi]
        if p:
            rec[f"{c}_p"] = None if r is None else r[p]
    return rec


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    def cell(x) -> str:
        return str(x).replace("|", "\\|").replace("\n", " ")
    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(cell(x) for x in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def df_markdown(df: pd.DataFrame, floatfmt: str = "{:.2f}", formats: dict[str, str] | None = None) -> str:
    """A DataFrame as a Markdown table; floats with `floatfmt` (or formats[column]), integral k/n columns as ints."""
    formats = {"p_value": "{:.3g}", **(formats or {})}

    def show(x, col: str):
        if x is None or x is pd.NA or (isinstance(x, float) and math.isnan(x)):
            return ""
        if isinstance(x, (float, np.floating)):
            if col in ("k", "n_seeds", "n_problems", "n_paired", "n_cells") and float(x).is_integer():
                return str(int(x))
            return formats.get(col, floatfmt).format(x)
        return x
    cols = list(df.columns)
    return markdown_table(cols, [[show(x, c) for x, c in zip(r, cols)] for r in df.itertuples(index=False)])


def _tex(s: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"),
                 ("Δ", r"$\Delta$"), ("≈", r"$\approx$"), ("±", r"$\pm$"), ("†", r"$^{\dagger}$")):
        s = s.replace(a, b)
    return s


def latex_table(header: Sequence[str], rows: Sequence[Sequence[str]], caption: str) -> str:
    """booktabs table; a CI prints small after its value; a midrule before each model (a row naming one)."""
    def cell(x: str) -> str:
        x, mark = str(x), ""
        if x[-1:] in (SIGNIFICANT_MARK, UNTESTED_MARK):
            x, mark = x[:-1], {SIGNIFICANT_MARK: "$^{*}$", UNTESTED_MARK: "$^{\\dagger}$"}[x[-1]]
        x = _tex(x)
        if " [" in x:
            v, ci = x.split(" [", 1)
            return f"{v}{mark}\\,{{\\scriptsize[{ci}}}"
        return x + mark
    lines = [r"\begin{table}[t]", r"\centering", r"\small", r"\begin{tabular}{ll" + "r" * (len(header) - 2) + "}",
             r"\toprule", " & ".join(_tex(h) for h in header) + r" \\", r"\midrule"]
    for i, r in enumerate(rows):
        if i and r[0]:
            lines.append(r"\midrule")
        lines.append(" & ".join(cell(x) for x in r) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", rf"\caption{{{_tex(caption)}}}", r"\end{table}"]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- curves (data for figures)

def passk_curves(rows: pd.DataFrame, lookup: SampleLookup, opts: Options, k_max: int = 16) -> pd.DataFrame:
    """pass@k (%) for k = 1..min(k_max, samples per problem), per model x variant x benchmark, mean over seeds."""
    out = []
    acc = rows[rows["metric"] == opts.metrics.get("Acc", "avg@k")].drop_duplicates(["cell_id", "eval", "benchmark"])
    for (model, variant, b), g in acc.groupby(["model", "variant", "benchmark"], sort=False):
        per_unit = []
        for cell_id, ev in _units(g):
            ps = lookup(cell_id, ev, b)
            if ps is not None:
                curve = pass_at_k_curve(ps.n, ps.c, min(k_max, int(ps.n.min()))).mean(axis=0)  # [K]
                per_unit.append({k + 1: 100.0 * float(v) for k, v in enumerate(curve)})
        if not per_unit:
            continue
        common = set.intersection(*(set(u) for u in per_unit))
        out += [dict(model=model, variant=variant, benchmark=b, k=k, value=float(np.mean([u[k] for u in per_unit])),
                     n_seeds=len(per_unit)) for k in sorted(common)]
    df = pd.DataFrame(out, columns=["model", "variant", "benchmark", "k", "value", "n_seeds"])
    mo = {m: i for i, m in enumerate(model_order(acc))}
    vo = {v: i for i, v in enumerate(variant_order(df["variant"].unique(), opts))}
    bo = {b: i for i, b in enumerate(benchmark_order(df["benchmark"].unique(), opts))}
    key = df["model"].map(mo) * 1e6 + df["variant"].map(vo) * 1e3 + df["benchmark"].map(bo)
    return df.assign(_o=key).sort_values(["_o", "k"]).drop(columns="_o").reset_index(drop=True)


TRAIN_QUANTITIES = ("reward_mean", "entropy_mean", "selected_frac", "grad_norm", "response_len_mean")


def training_curve_data(train: pd.DataFrame, summary: pd.DataFrame, cells: pd.DataFrame,
                        opts: Options) -> pd.DataFrame:
    """Tidy curves: model, variant, cell_id, step, quantity, value.

    Quantities: TRAIN_QUANTITIES from train/metrics.jsonl (reward, entropy, share of tokens trained on, gradient
    norm, response length), and `score`, the mean Acc over the benchmarks evaluated at each step (eval/step-N; the
    base evaluation is step 0).
    """
    info = cells.set_index("cell_id")[["model", "variant"]]
    parts = []
    if not train.empty:
        t = train.melt(id_vars=["cell_id", "step"], value_vars=[q for q in TRAIN_QUANTITIES if q in train.columns],
                       var_name="quantity", value_name="value").dropna(subset=["value"])
        parts.append(t)
    metric = opts.metrics.get("Acc", "avg@k")
    s = summary[summary["metric"] == metric]
    k = choose_k(s, metric, opts.k)
    if k is not None:
        s = s[s["k"] == k]
        avg_set = [b for b in opts.average_over if b in set(s["benchmark"])] or sorted(set(s["benchmark"]))
        s = s[s["benchmark"].isin(avg_set)]
        sc = s.groupby(["cell_id", "step"], as_index=False)["value"].mean().assign(quantity="score")
        parts.append(sc)
    if not parts:
        return pd.DataFrame(columns=["model", "variant", "cell_id", "step", "quantity", "value"])
    d = pd.concat(parts, ignore_index=True)
    d = d[d["cell_id"].isin(info.index)]
    d = d.join(info, on="cell_id")
    d = d[d["variant"] != "base"]
    order = {m: i for i, m in enumerate(model_order(cells))}
    vorder = {v: i for i, v in enumerate(variant_order(d["variant"].unique(), opts))}
    d = d.assign(_m=d["model"].map(order), _v=d["variant"].map(vorder)).sort_values(["_m", "_v", "cell_id", "step"])
    return d[["model", "variant", "cell_id", "step", "quantity", "value"]].reset_index(drop=True)


def version_checks(evals: Sequence[dict]) -> pd.DataFrame:
    """Library versions, task versions, git hashes and machines (CPU, instruction set, torch's kernel level and
    threads: what decides bit-for-bit repeatability) across evaluations; `flag` where cells disagree."""
    seen: dict[tuple[str, str], dict[str, set]] = {}
    for e in evals:
        for kind, d in (("library", e.get("versions", {})), ("task", e.get("task_versions", {})),
                        ("git", {"commit": e["git_hash"]} if e.get("git_hash") else {}),
                        ("machine", e.get("machine", {}))):
            for name, ver in d.items():
                seen.setdefault((kind, name), {}).setdefault(str(ver), set()).add(e["cell_id"])
    out = []
    for (kind, name), vers in sorted(seen.items()):
        for ver, cell_ids in sorted(vers.items()):
            out.append(dict(kind=kind, name=name, version=ver, n_cells=len(cell_ids),
                            cells=" ".join(sorted(cell_ids)), flag=len(vers) > 1))
    return pd.DataFrame(out, columns=["kind", "name", "version", "n_cells", "cells", "flag"])
