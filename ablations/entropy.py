"""`harness analyze entropy`: Fig. 2, the token-entropy pattern of one model's chain-of-thought.

Sample responses (or read saved ones), compute each response token's entropy at T = `temperature` (teacher-forced,
chunked over positions), and write to `out`:
- `entropy.csv`: statistic,value: token count, mean, share under `low_threshold` and above `high_threshold` (%),
  percentiles (nats); the paper's Qwen3-8B values are 50.64% under 0.01 and p80 = 0.672.
- `entropy_tokens.csv`: the `top_n` most and least entropic tokens among those seen at least `min_count` times
  (mean entropy per token id), the paper's word clouds as a table.
- `entropy.png`: histogram (log-scale counts) and the two token bar charts.
Deviation: the paper aggregates by word in its word clouds; we aggregate by token id (decoded for display).
"""
from __future__ import annotations

from collections import defaultdict

import pandas as pd
import torch

from ablations import common
from ablations.token_entropy import entropy_summary
from harness.core.config import ConfigError, require_int, require_number


def token_table(responses: list[common.Response], entropies: list[torch.Tensor], tokenizer, min_count: int,
                top_n: int) -> pd.DataFrame:
    """Most/least entropic token ids among those seen >= min_count times."""
    sums, counts = defaultdict(float), defaultdict(int)
    for r, h in zip(responses, entropies):
        for tid, e in zip(r.response_ids, h.tolist()):
            sums[tid] += e
            counts[tid] += 1
    rows = [{"token_id": t, "token": tokenizer.decode([t]), "count": c, "mean_entropy": sums[t] / c}
            for t, c in counts.items() if c >= min_count]
    if not rows:
        return pd.DataFrame(columns=["kind", "rank", "token", "token_id", "count", "mean_entropy"])
    df = pd.DataFrame(rows).sort_values("mean_entropy", ascending=False, kind="stable")
    high = df.head(top_n).assign(kind="most_entropic")
    low = df.iloc[::-1].head(top_n).assign(kind="least_entropic")
    out = pd.concat([high, low])
    out["rank"] = out.groupby("kind").cumcount() + 1
    return out[["kind", "rank", "token", "token_id", "count", "mean_entropy"]]


def plot(all_h: torch.Tensor, stats: dict, tokens: pd.DataFrame, cfg, path) -> None:
    plt = common.plt_agg()
    fig, axes = plt.subplots(1, 3, figsize=(17, 4.5))
    ax = axes[0]
    ax.hist(all_h.numpy(), bins=cfg.bins, color="#4C72B0")
    ax.set_yscale("log")
    ax.axvline(stats["p80"], color="red", ls="--", label=f"p80 = {stats['p80']:.3f}")
    ax.axvline(cfg.high_threshold, color="gray", ls=":", label=f"paper p80 = {cfg.high_threshold}")
    ax.set_xlabel("token entropy (nats)")
    ax.set_ylabel("tokens (log scale)")
    ax.set_title(f"{int(stats['n_tokens'])} tokens; "
                 f"{stats[f'share_below_{cfg.low_threshold:g}_pct']:.1f}% < {cfg.low_threshold:g}")
    ax.legend()
    for ax, kind, color in ((axes[1], "most_entropic", "#C44E52"), (axes[2], "least_entropic", "#55A868")):
        sub = tokens[tokens.kind == kind]
        ax.barh([repr(t) for t in sub.token][::-1], sub.mean_entropy.tolist()[::-1], color=color)
        ax.set_xlabel("mean entropy (nats)")
        ax.set_title(f"{kind.replace('_', ' ')} tokens (count >= {cfg.min_count})")
        ax.tick_params(axis="y", labelsize=7)
    common.save_figure(fig, path)


def check(cfg, files: bool = True) -> None:
    """Every value before any model is loaded (files=False: a grid's analysis, before its cells ran)."""
    common.check_common(cfg, files)
    if not cfg.get("model_path") and not cfg.get("run"):
        raise ConfigError("analyze entropy: give model_path=PATH_OR_HUB_ID or run=RUN_DIR")
    for key in ("min_count", "top_n", "bins"):
        require_int(cfg[key], key, 1)
    require_number(cfg.low_threshold, "low_threshold", 0)
    require_number(cfg.high_threshold, "high_threshold", 0)


def main(cfg) -> int:
    check(cfg)
    run = common.run_dir(cfg.get("run"))
    model_path = cfg.get("model_path") or str(run / "final")
    out = common.output_dir(cfg, "entropy")

    model, tok = common.load_model(model_path, cfg.device, cfg.dtype)
    responses = common.get_responses(cfg, model, tok)
    entropies = common.response_entropies(model, responses, cfg.temperature, cfg.chunk_size, cfg.entropy_impl)
    all_h = torch.cat(entropies)
    if all_h.numel() == 0:
        raise RuntimeError("the responses have no tokens")
    stats = entropy_summary(all_h, cfg.low_threshold, cfg.high_threshold)
    tokens = token_table(responses, entropies, tok, cfg.min_count, cfg.top_n)

    meta = {"model": model_path, "n_responses": len(responses)}
    common.write_csv(pd.DataFrame({"statistic": list(stats), "value": list(stats.values())}),
                     out / "entropy.csv", cfg, **meta)
    common.write_csv(tokens, out / "entropy_tokens.csv", cfg, **meta)
    if cfg.save_responses:
        common.dump_responses(responses, out / "entropy_responses.jsonl", entropies)
    plot(all_h, stats, tokens, cfg, out / "entropy.png")
    print(f"entropy: {int(stats['n_tokens'])} tokens from {len(responses)} responses; "
          f"{stats[f'share_below_{cfg.low_threshold:g}_pct']:.2f}% < {cfg.low_threshold:g} nats, "
          f"p80 = {stats['p80']:.3f} nats -> {out}")
    return 0
