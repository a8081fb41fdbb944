"""Figures (PNG, seaborn, Agg backend): the scaling plot (Fig. 1b), the rho sweep, training curves (Fig. 6/7),
pass@k curves. Each function takes tidy DataFrames, writes one PNG and returns its path, or returns None and a
reason when the data cannot make that figure (e.g. a single model for the scaling plot, one rho only)."""
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


def _save(fig, path: Path, tight: bool = True) -> Path:
    """Lay out (unless the caller fixed the spacing), write atomically like harness.core.io, and close the figure."""
    import matplotlib.pyplot as plt

    if tight:
        fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    tmp.replace(path)
    plt.close(fig)
    return path


def _legend_right(sns, axes) -> None:
    """Move the legend of the last panel of the first row outside, to its right."""
    if axes[0][-1].get_legend():
        sns.move_legend(axes[0][-1], "upper left", bbox_to_anchor=(1, 1), fontsize=7)


def scaling_plot(long: pd.DataFrame, published: pd.DataFrame | None, opts: Options, variant: str,
                 path: Path) -> tuple[Path | None, str]:
    """Fig. 1b: <variant> minus reference (Acc) vs model size, one line per benchmark and Avg; published Avg dashed."""
    d = long[(long["label"] == "Acc") & (long["variant"] == variant) & long["delta"].notna()].copy()
    if d.empty:
        return None, f"no model has both {variant} and {opts.reference}"
    if d["model"].nunique() < 2:
        return None, (f"the grid has a single model ({d['model'].iloc[0]}); the figure plots {variant} minus "
                      f"{opts.reference} against model size and needs at least two sizes")
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
    return _save(fig, path), ""


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
    _legend_right(sns, axes)
    return _save(fig, path), ""


TRAIN_PANELS = {"reward_mean": "reward (mean)", "entropy_mean": "entropy (nats, all response tokens)",
                "selected_frac": "share of tokens trained on", "grad_norm": "gradient norm (log scale)",
                "response_len_mean": "response length (tokens)", "score": "benchmark score (Acc, %)"}
LOG_PANELS = {"grad_norm"}
PANEL_COLS = 3


def curve_panels(curves: pd.DataFrame) -> list[str]:
    """The quantities drawn, in TRAIN_PANELS order. `score` only when some cell was evaluated at more than one step:
    with one evaluated step per cell there is no curve to draw (a lone point per variant)."""
    present = set(curves["quantity"])
    qs = [q for q in TRAIN_PANELS if q in present and q != "score"]
    sc = curves[curves["quantity"] == "score"]
    if len(sc) and sc.groupby("cell_id")["step"].nunique().max() > 1:
        qs.append("score")
    return qs


def training_curves(curves: pd.DataFrame, path: Path) -> tuple[Path | None, str]:
    """curves: model, variant, cell_id, step, quantity (TRAIN_PANELS key), value. Per model a block of panels,
    PANEL_COLS wide (reward, entropy, share trained on, gradient norm, response length, score if several steps);
    lines are the mean over seeds with a band of one standard deviation (aggregated here, then drawn); one legend."""
    if curves.empty:
        return None, "no training metrics or step evaluations"
    qs = curve_panels(curves)
    if not qs:
        return None, "no training metrics, and no cell evaluated at more than one step"
    plt, sns = _plt()
    curves = curves[curves["quantity"].isin(qs)]
    agg = curves.groupby(["model", "quantity", "variant", "step"], sort=True)["value"].agg(["mean", "std"])
    agg = agg.reset_index()
    models = list(dict.fromkeys(curves["model"]))  # the caller orders rows by model size
    variants = list(dict.fromkeys(curves["variant"]))
    colors = dict(zip(variants, sns.color_palette(n_colors=len(variants))))
    rows_per_model = -(-len(qs) // PANEL_COLS)
    ncols = min(PANEL_COLS, len(qs))
    fig, axes = _grid(plt, rows_per_model * len(models), ncols, 3.6, 2.6)
    for ax in axes.flat:
        ax.set_visible(False)
    for (model, q), g in agg.groupby(["model", "quantity"], sort=False):
        i = qs.index(q)
        ax = axes[models.index(model) * rows_per_model + i // ncols][i % ncols]
        ax.set_visible(True)
        for variant, gv in g.groupby("variant", sort=False):
            ax.plot(gv["step"], gv["mean"], color=colors[variant], label=variant, lw=1.2)
            if gv["std"].notna().any():
                lo, hi = gv["mean"] - gv["std"], gv["mean"] + gv["std"]
                if q in LOG_PANELS:
                    lo = lo.where(lo > 0)  # a band reaching zero is cut on a log axis, not drawn as -inf
                ax.fill_between(gv["step"], lo, hi, color=colors[variant], alpha=0.2, lw=0)
        if q in LOG_PANELS and (g["mean"] > 0).all():
            ax.set_yscale("log")
        if q == "selected_frac":
            ax.set_ylim(0, 1.05)
        ax.set_title(TRAIN_PANELS[q] if len(models) == 1 else f"{model} | {TRAIN_PANELS[q]}", fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
    handles = [plt.Line2D([], [], color=colors[v], label=v, lw=2) for v in variants]
    legend = dict(handles=handles, fontsize=8, frameon=False, title="variant (mean over seeds, band: one sd)",
                  title_fontsize=8)
    spare = axes[-1][-1]
    height = fig.get_figheight()
    if not spare.get_visible():  # an empty panel slot: the shared legend goes there
        spare.set_visible(True)
        spare.axis("off")
        spare.legend(loc="center", ncol=2 if len(variants) > 6 else 1, **legend)
        bottom = 0.45 / height
    else:
        fig.legend(loc="lower center", ncol=min(len(variants), 8), **legend)
        bottom = 1.0 / height  # inches for the x labels and the legend below
    # fixed spacing instead of tight_layout: one draw less, which is most of this figure's time
    fig.subplots_adjust(left=0.07, right=0.98, bottom=bottom, top=1 - 0.25 / height, wspace=0.28,
                        hspace=0.5)
    return _save(fig, path, tight=False), ""


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
    _legend_right(sns, axes)
    return _save(fig, path), ""
