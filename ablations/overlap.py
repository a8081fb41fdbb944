"""`harness analyze overlap`: paper Table 1, overlap of the top-rho entropy positions across training.

Protocol (Sec. 3/Table 1): the final model's responses are scored (teacher-forced, logits recomputed) by the base
model, every saved checkpoint and the final model; for each, the top-rho highest-entropy positions are selected;
the table gives, per step, the percent of the base model's and of the final model's selected positions that the
checkpoint also selects. Writes `overlap.csv` (`checkpoint, step, overlap_vs_base_pct, overlap_vs_final_pct,
n_tokens, rho`) and `overlap.png`.
Choices: the selection takes exactly ceil(rho * N) positions over all response tokens pooled (not per response);
the paper does not say which. Paper (Qwen3-14B, DAPO full): vs base falls 100 -> 86.67%, vs final rises 86.67 -> 100%.
"""
from __future__ import annotations

import pandas as pd

from ablations import common
from ablations.token_entropy import overlap_pct, top_fraction_mask


def overlap_table(ckpts: list[common.Checkpoint], ents: dict, rho: float) -> pd.DataFrame:
    masks = {c.label: top_fraction_mask(ents[c.label], rho) for c in ckpts}  # label -> [N] bool
    base, final = masks.get("base"), masks[ckpts[-1].label]
    return pd.DataFrame([{"checkpoint": c.label, "step": c.step,
                          "overlap_vs_base_pct": overlap_pct(masks[c.label], base) if base is not None else None,
                          "overlap_vs_final_pct": overlap_pct(masks[c.label], final),
                          "n_tokens": int(ents[c.label].numel()), "rho": rho} for c in ckpts])


def plot(df: pd.DataFrame, path) -> None:
    plt = common.plt_agg()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for col, label in (("overlap_vs_base_pct", "vs base model"), ("overlap_vs_final_pct", "vs final model")):
        if df[col].notna().any():
            ax.plot(df.step, df[col], marker="o", label=label)
    ax.set_xlabel("training step")
    ax.set_ylabel(f"overlap of top-{df.rho.iloc[0]:.0%} entropy positions (%)")
    ax.legend()
    ax.grid(alpha=0.3)
    common.save_figure(fig, path)


def check(cfg, files: bool = True) -> None:
    """Every value before any model is loaded (files=False: a grid's analysis, before its cells ran)."""
    from harness.core.config import require_number

    common.require(cfg, "run")
    common.check_common(cfg, files)
    require_number(cfg.rho, "rho", 0, 1, low_open=True)


def main(cfg) -> int:
    check(cfg)
    run = common.run_dir(cfg.run)
    out = common.output_dir(cfg, "overlap")
    ckpts, responses, ents = common.checkpoint_entropies(cfg, run)
    df = overlap_table(ckpts, ents, cfg.rho)
    common.write_csv(df, out / "overlap.csv", cfg, checkpoints={c.label: c.path for c in ckpts},
                     n_responses=len(responses))
    plot(df, out / "overlap.png")
    print(df.to_string(index=False))
    print(f"overlap -> {out}")
    return 0
