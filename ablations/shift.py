"""`harness analyze shift`: paper Fig. 4 and Fig. 5, how RL changes token entropy.

All models score the same responses (the final model's, sampled or saved), teacher-forced.
- Fig. 4 (`shift_bins.csv`): positions grouped into `n_bins` equal-count bins by the base model's entropy
  percentile; per bin, the mean base entropy and the mean change (final - base). The paper finds the change grows
  with the base entropy: RL mainly moves the high-entropy tokens.
- Fig. 5 (`shift.csv`): per checkpoint (base, checkpoints, final), the entropy percentiles in `percentiles` and the
  mean, in nats.
Figure: `shift.png` with both panels.
"""
from __future__ import annotations

import pandas as pd
import torch

from ablations import common
from ablations.token_entropy import percentile_bins


def shift_bins(base: torch.Tensor, after: torch.Tensor, n_bins: int) -> pd.DataFrame:
    """Per base-percentile bin: mean base entropy, mean entropy after, mean change.  base, after: [N]"""
    if base.shape != after.shape:
        raise ValueError(f"entropy vectors differ in shape: {tuple(base.shape)} vs {tuple(after.shape)}")
    bins = percentile_bins(base, n_bins)  # [N]
    rows = []
    for b in range(n_bins):
        sel = bins == b
        if sel.any():
            rows.append({"bin": b, "percentile_low": 100 * b / n_bins, "percentile_high": 100 * (b + 1) / n_bins,
                         "n_tokens": int(sel.sum()), "base_entropy_mean": base[sel].double().mean().item(),
                         "after_entropy_mean": after[sel].double().mean().item(),
                         "entropy_change_mean": (after[sel].double() - base[sel].double()).mean().item()})
    return pd.DataFrame(rows)


def percentile_table(ckpts: list[common.Checkpoint], ents: dict, percentiles) -> pd.DataFrame:
    rows = []
    for c in ckpts:
        h = ents[c.label].double()
        qs = torch.quantile(h, torch.tensor([p / 100 for p in percentiles], dtype=torch.float64))
        rows.append({"checkpoint": c.label, "step": c.step, "n_tokens": h.numel(), "mean": h.mean().item(),
                     **{f"p{p:g}": q.item() for p, q in zip(percentiles, qs)}})
    return pd.DataFrame(rows)


def plot(bins: pd.DataFrame, pct: pd.DataFrame, percentiles, path) -> None:
    plt = common.plt_agg()
    fig, (a, b) = plt.subplots(1, 2, figsize=(13, 4.2))
    a.bar(bins.percentile_low, bins.entropy_change_mean, width=100 / len(bins) * 0.85, align="edge",
          color="#4C72B0")
    a.axhline(0, color="black", lw=0.8)
    a.set_xlabel("base-model entropy percentile (%)")
    a.set_ylabel("mean entropy change after RL (nats)")
    a.set_title("Fig. 4: entropy change by base-entropy percentile")
    for p in percentiles:
        b.plot(pct.step, pct[f"p{p:g}"], marker="o", label=f"p{p:g}")
    b.set_xlabel("training step")
    b.set_ylabel("entropy (nats)")
    b.set_title("Fig. 5: entropy percentiles during training")
    b.legend(fontsize=8)
    common.save_figure(fig, path)


def check(cfg, files: bool = True) -> None:
    """Every value before any model is loaded (files=False: a grid's analysis, before its cells ran)."""
    from harness.core.config import require_int, require_number

    common.require(cfg, "run")
    common.check_common(cfg, files)
    require_int(cfg.n_bins, "n_bins", 1)
    for p in cfg.percentiles:
        require_number(p, "percentiles", 0, 100)


def main(cfg) -> int:
    check(cfg)
    run = common.run_dir(cfg.run)
    out = common.output_dir(cfg, "shift")
    ckpts, responses, ents = common.checkpoint_entropies(cfg, run)
    if ckpts[0].label != "base":
        raise common.ConfigError("shift needs the base model: pass base=PATH_OR_HUB_ID")
    bins = shift_bins(ents["base"], ents[ckpts[-1].label], cfg.n_bins)
    pct = percentile_table(ckpts, ents, list(cfg.percentiles))
    meta = {"checkpoints": {c.label: c.path for c in ckpts}, "n_responses": len(responses)}
    common.write_csv(pct, out / "shift.csv", cfg, **meta)
    common.write_csv(bins, out / "shift_bins.csv", cfg, **meta)
    plot(bins, pct, list(cfg.percentiles), out / "shift.png")
    print(bins.to_string(index=False))
    print(pct.to_string(index=False))
    print(f"shift -> {out}")
    return 0
