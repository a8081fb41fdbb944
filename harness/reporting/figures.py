"""Figures (PNG, seaborn, Agg backend): the scaling plot (Fig. 1b), the rho sweep, training curves (Fig. 6/7),
pass@k curves. Each function takes tidy DataFrames, writes one PNG and returns its path, or returns None and a
reason when the data cannot make that figure (e.g. no model sizes, one rho only)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from harness.reporting.load import size_from_name
from harness.reporting.tables import AVG, PAPER_AVG, Options


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="paper")
    return plt, sns


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    tmp.replace(path)  # atomic, like harness.io
    return path


def scaling_plot(long: pd.DataFrame, published: pd.DataFrame | None, opts: Options, variant: str,
                 path: Path) -> tuple[Path | None, str]:
    """Fig. 1b: <variant> minus reference (Acc) vs model size, one line per benchmark and Avg; published Avg dashed."""
    d = long[(long["label"] == "Acc") & (long["variant"] == variant) & long["delta"].notna()].copy()
    if d["model"].nunique() < 1 or d.empty:
        return None, f"no model has both {variant} and {opts.reference}"
    plt, sns = _plt()
    d["benchmark"] = d["benchmark"].map(lambda b: opts.benchmark_names.get(b, b))
    numeric = d["model_size_b"].notna().all()
    d["x"] = d["model_size_b"] if numeric else d["model"]
    fig, ax = plt.subplots(figsize=(6, 4))
    per_bench = d[d["benchmark"] != AVG]
    sns.lineplot(data=per_bench, x="x", y="delta", hue="benchmark", marker="o", ax=ax, errorbar=None,
                 sort=bool(numeric), lw=1, alpha=0.8)
    avg = d[d["benchmark"] == AVG].sort_values("x")
    ax.plot(avg["x"], avg["delta"], color="black", lw=2.2, marker="o", label=f"{AVG} (ours)")
    if len(avg) and avg["delta_ci_low"].notna().any():
        ax.errorbar(avg["x"], avg["delta"], yerr=[avg["delta"] - avg["delta_ci_low"],
                                                   avg["delta_ci_high"] - avg["delta"]],
                    fmt="none", ecolor="black", capsize=3, lw=1)
    if published is not None and numeric:
        p = published[(published["benchmark"] == PAPER_AVG) & published["metric"].str.startswith("Acc")]
        piv = p.pivot_table(index="model", columns="variant", values="value", aggfunc=lambda s: float(s.iloc[0]))
        if {variant, opts.reference} <= set(piv.columns):
            pd_ = (piv[variant] - piv[opts.reference]).dropna()
            xs = [size_from_name(m) for m in pd_.index]
            order = np.argsort(xs)
            ax.plot(np.array(xs)[order], pd_.values[order], ls="--", color="grey", marker="s",
                    label=f"published ({PAPER_AVG})")
    ax.axhline(0, color="black", lw=0.6)
    if numeric:
        ax.set_xscale("log")
        ticks = sorted(d["x"].unique())
        ax.set_xticks(ticks, [f"{t:g}B" for t in ticks])
        ax.minorticks_off()
    ax.set_xlabel("model size (billion parameters)" if numeric else "model")
    ax.set_ylabel(f"{variant} - {opts.reference} (Acc, points)")
    ax.set_title(f"Scaling: {variant} minus {opts.reference}")
    ax.legend(loc="upper left", bbox_to_anchor=(1, 1), fontsize=7)
    fig.tight_layout()
    out = _save(fig, path)
    plt.close(fig)
    return out, ""


def _grid(plt, nrows: int, ncols: int, w: float = 3.0, h: float = 2.4):
    fig, axes = plt.subplots(nrows, ncols, figsize=(w * ncols, h * nrows), squeeze=False)
    return fig, axes


def rho_sweep_plot(long: pd.DataFrame, opts: Options, path: Path) -> tuple[Path | None, str]:
    """Acc (Avg, else each benchmark) vs rho, one panel per model; top-rho and the reference joined by a line,
    other selections (bottom80, random20) as separate markers."""
    d = long[(long["label"] == "Acc") & long["rho"].notna() & (long["variant"] != "base")].copy()
    if (d["benchmark"] == AVG).any():
        d = d[d["benchmark"] == AVG]
    if d.empty or d.groupby("model")["rho"].nunique().max() < 2:
        return None, "fewer than two rho values for every model"
    plt, sns = _plt()
    d["benchmark"] = d["benchmark"].map(lambda b: opts.benchmark_names.get(b, b))
    d["selection"] = np.where(d["variant"].str.startswith("top") | (d["variant"] == opts.reference),
                              "top-rho", d["variant"])
    models = list(dict.fromkeys(d["model"]))
    fig, axes = _grid(plt, 1, len(models), 3.4, 2.8)
    for ax, model in zip(axes[0], models):
        sns.lineplot(data=d[d["model"] == model], x="rho", y="value", hue="benchmark", style="selection",
                     markers=True, dashes=False, errorbar=None, ax=ax, legend=ax is axes[0][-1])
        ax.set_title(model)
        ax.set_xlabel("rho (share of tokens trained on)")
        ax.set_ylabel("Acc (%)")
    if axes[0][-1].get_legend():
        sns.move_legend(axes[0][-1], "upper left", bbox_to_anchor=(1, 1), fontsize=7)
    fig.tight_layout()
    out = _save(fig, path)
    plt.close(fig)
    return out, ""


TRAIN_PANELS = {"reward_mean": "reward", "score": "benchmark score (Acc)", "response_len_mean": "response length",
                "entropy_mean": "entropy (nats)"}


def training_curves(curves: pd.DataFrame, path: Path) -> tuple[Path | None, str]:
    """curves: model, variant, cell_id, step, quantity (TRAIN_PANELS key), value. A row of panels per model;
    lines are the mean over seeds with a band of one standard deviation (aggregated here, then drawn)."""
    if curves.empty:
        return None, "no training metrics or step evaluations"
    plt, sns = _plt()
    agg = curves.groupby(["model", "quantity", "variant", "step"], sort=True)["value"].agg(["mean", "std"])
    agg = agg.reset_index()
    models = list(dict.fromkeys(curves["model"]))  # the caller orders rows by model size
    qs = [q for q in TRAIN_PANELS if q in set(curves["quantity"])]
    variants = list(dict.fromkeys(curves["variant"]))
    colors = dict(zip(variants, sns.color_palette(n_colors=len(variants))))
    fig, axes = _grid(plt, len(models), len(qs))
    for (model, q), g in agg.groupby(["model", "quantity"], sort=False):
        ax = axes[models.index(model)][qs.index(q)]
        for variant, gv in g.groupby("variant", sort=False):
            ax.plot(gv["step"], gv["mean"], color=colors[variant], label=variant, lw=1.2)
            if gv["std"].notna().any():
                ax.fill_between(gv["step"], gv["mean"] - gv["std"], gv["mean"] + gv["std"], color=colors[variant],
                                alpha=0.2, lw=0)
        ax.set_title(f"{model} | {TRAIN_PANELS[q]}", fontsize=8)
        ax.set_xlabel("step")
    handles = [plt.Line2D([], [], color=colors[v], label=v) for v in variants]
    axes[0][-1].legend(handles=handles, loc="upper left", bbox_to_anchor=(1, 1), fontsize=7)
    # fixed spacing instead of tight_layout: one draw less, which is most of this figure's time
    fig.subplots_adjust(left=0.06, right=0.88, bottom=0.06, top=0.95, wspace=0.28, hspace=0.45)
    out = _save(fig, path)
    plt.close(fig)
    return out, ""


def passk_plot(curves: pd.DataFrame, opts: Options, path: Path) -> tuple[Path | None, str]:
    """curves: model, variant, benchmark, k, value (pass@k %). One panel per model: pass@k averaged over the
    `average_over` benchmarks (else all), one line per variant; per-benchmark curves are in passk.csv."""
    if curves.empty:
        return None, "no per-problem samples"
    plt, sns = _plt()
    avg_set = [b for b in opts.average_over if b in set(curves["benchmark"])] or sorted(set(curves["benchmark"]))
    d = curves[curves["benchmark"].isin(avg_set)].groupby(["model", "variant", "k"], as_index=False,
                                                            sort=False)["value"].mean()
    models = list(dict.fromkeys(d["model"]))
    fig, axes = _grid(plt, 1, len(models), 3.2, 2.8)
    for ax, model in zip(axes[0], models):
        sns.lineplot(data=d[d["model"] == model], x="k", y="value", hue="variant", marker="o", errorbar=None,
                     ax=ax, legend=ax is axes[0][-1], hue_order=list(dict.fromkeys(d["variant"])))
        ax.set_xscale("log", base=2)
        ax.set_title(model, fontsize=9)
        ax.set_ylabel(f"pass@k (%), mean of {len(avg_set)} benchmarks")
    if axes[0][-1].get_legend():
        sns.move_legend(axes[0][-1], "upper left", bbox_to_anchor=(1, 1), fontsize=7)
    fig.tight_layout()
    out = _save(fig, path)
    plt.close(fig)
    return out, ""
