"""`harness analyze temperature`: paper Fig. 3, decoding with one temperature for high-entropy tokens and another
for the rest.

At each decoding step the position's entropy (T = 1) is compared with `threshold` (0.672 nats, Fig. 2's p80): above
it the logits are divided by T_high, else by T_low (`EntropyTemperatureProcessor`, the same callable for HF
`generate` and vLLM). Each setting samples `k` responses per problem with HF generate, writes them as a replay file
(`temperature/<setting>/replay.jsonl`: `task, problem, responses`) and scores them through the evaluation engine
(`harness.evaluation.evaluate(backend="replay")`). Writes `temperature.csv` (t_high, t_low, benchmark, metric, k,
value, ci_low, ci_high, ...) and `temperature.png`.
Fallback, stated: if `harness.evaluation.evaluate` cannot be imported, each response is scored directly with
`harness.scoring.score_math` against the problems file's `answer` field, and the `scorer` column says so.
Deviation: the paper samples with vLLM; here generation is HF `generate` (the processor also fits vLLM, see
docs/analyses.md).
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ablations import common
from ablations.token_entropy import EntropyTemperatureProcessor
from harness.config import ConfigError
from harness.io import atomic_write_jsonl, read_jsonl


def settings(t_high, t_low, fixed: float, sweep: str) -> list[tuple[float, float]]:
    """(t_high, t_low) pairs: `axes` varies one with the other at `fixed` (Fig. 3); `grid` crosses them."""
    if sweep == "grid":
        pairs = [(float(h), float(lo)) for h in t_high for lo in t_low]
    elif sweep == "axes":
        pairs = [(float(h), float(fixed)) for h in t_high] + [(float(fixed), float(lo)) for lo in t_low]
    else:
        raise ConfigError(f"sweep={sweep!r}; choose axes or grid")
    return list(dict.fromkeys(pairs))


def replay_rows(responses: list[common.Response]) -> list[dict]:
    """One line per problem: `task, problem, responses` (the evaluation engine's replay format)."""
    rows: dict[tuple[str, str], dict] = {}
    for r in responses:
        rows.setdefault((r.task, r.problem), {"task": r.task, "problem": r.problem, "responses": []})
        rows[(r.task, r.problem)]["responses"].append(r.text)
    return list(rows.values())


def score_setting(model_path: str, tasks: list[str], replay: Path, out_dir: Path, k: int, problems_file: str,
                  responses: list[common.Response]) -> tuple[pd.DataFrame, str]:
    """Summary rows (benchmark, metric, k, value, ...) and the scorer's name."""
    try:
        from harness.evaluation import evaluate
    except ImportError:
        evaluate = None
    if evaluate is not None:
        df = evaluate(model_path, tasks, out_dir, backend="replay", replay_file=str(replay), k=k)
        return df, "harness.evaluation.evaluate(backend=replay)"
    from harness.scoring import score_math

    gold = {(r.get("problem") or r.get("question")): r.get("answer") for r in read_jsonl(problems_file)}
    if any(gold.get(r.problem) is None for r in responses):
        raise ConfigError(f"{problems_file}: an `answer` field is needed to score without harness.evaluation")
    scores = score_math([r.text for r in responses], [str(gold[r.problem]) for r in responses])
    df = pd.DataFrame({"benchmark": [r.task for r in responses], "correct": [s.correct for s in scores],
                       "length": [len(r.response_ids) for r in responses]})
    rows = []
    for bench, g in df.groupby("benchmark"):
        rows.append({"benchmark": bench, "metric": f"avg@{k}", "k": k, "value": 100 * g.correct.mean(),
                     "n_samples": len(g)})
        rows.append({"benchmark": bench, "metric": f"len@{k}", "k": k, "value": g.length.mean(), "n_samples": len(g)})
    return pd.DataFrame(rows), "harness.scoring.score_math (harness.evaluation not importable)"


def plot(df: pd.DataFrame, fixed: float, sweep: str, path) -> None:
    plt = common.plt_agg()
    acc = df[df.metric.astype(str).str.startswith("avg@")]
    if sweep == "grid":
        import seaborn as sns

        fig, ax = plt.subplots(figsize=(6, 4.5))
        table = acc.groupby(["t_low", "t_high"]).value.mean().unstack()
        sns.heatmap(table, annot=True, fmt=".1f", cmap="viridis", ax=ax)
        ax.set_title("accuracy (%) by T_high (columns) and T_low (rows)")
    else:
        fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
        for ax, (vary, hold) in zip(axes, (("t_high", "t_low"), ("t_low", "t_high"))):
            sub = acc[acc[hold] == fixed]
            for bench, g in sub.groupby("benchmark"):
                g = g.sort_values(vary)
                ax.plot(g[vary], g.value, marker="o", label=bench)
            ax.set_xlabel(f"{vary.replace('_', ' ')} ({hold.replace('_', ' ')} = {fixed:g})")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        axes[0].set_ylabel(f"{acc.metric.iloc[0] if len(acc) else 'avg@k'} (%)")
    common.save_figure(fig, path)


def main(cfg) -> int:
    common.require(cfg, "problems")
    common.check_common(cfg)
    run = common.run_dir(cfg.get("run"))
    model_path = cfg.get("model_path") or (str(run / "final") if run else None)
    if not model_path:
        raise ConfigError("analyze temperature: give model_path=PATH_OR_HUB_ID or run=RUN_DIR")
    pairs = settings(cfg.t_high, cfg.t_low, cfg.fixed, cfg.sweep)
    if any(t < 0 for p in pairs for t in p):
        raise ConfigError("temperatures must be >= 0 (0 = greedy)")
    out = common.default_out(cfg, "temperature")
    problems = common.load_problems(cfg.problems, cfg.n_problems)
    tasks = list(cfg.tasks) if cfg.get("tasks") else sorted({p["task"] for p in problems})

    model, tok = common.load_model(model_path, cfg.device, cfg.dtype)
    frames = []
    for t_high, t_low in pairs:
        proc = EntropyTemperatureProcessor(t_high, t_low, cfg.threshold)
        responses = common.generate(model, tok, problems, cfg.prompt_template, cfg.k, cfg.max_new_tokens,
                                    1.0, 1.0, cfg.seed, logits_processor=proc)
        sdir = out / "temperature" / f"th{t_high:g}_tl{t_low:g}"
        replay = atomic_write_jsonl(sdir / "replay.jsonl", replay_rows(responses))
        if not cfg.score:
            continue
        df, scorer = score_setting(model_path, tasks, replay, sdir, cfg.k, cfg.problems, responses)
        frames.append(df.assign(t_high=t_high, t_low=t_low, threshold=cfg.threshold, scorer=scorer))
        acc = df[df.metric.astype(str).str.startswith("avg@")]
        print(f"T_high={t_high:g} T_low={t_low:g}: " +
              ", ".join(f"{b} {v:.1f}" for b, v in zip(acc.benchmark, acc.value)))
    if not frames:
        print(f"temperature: generated {len(pairs)} settings (score=false) -> {out / 'temperature'}")
        return 0
    table = pd.concat(frames, ignore_index=True)
    lead = ["t_high", "t_low", "benchmark", "metric", "k", "value"]
    table = table[lead + [c for c in table.columns if c not in lead]]
    common.write_csv(table, out / "temperature.csv", cfg, model=model_path, settings=pairs)
    plot(table, cfg.fixed, cfg.sweep, out / "temperature.png")
    print(f"temperature -> {out}")
    return 0
