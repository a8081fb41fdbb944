"""`harness analyze temperature`: paper Fig. 3, decoding with one temperature for high-entropy tokens and another
for the rest.

At each decoding step the position's entropy (T = 1) is compared with `threshold` (0.672 nats, Fig. 2's p80): above
it the logits are divided by T_high, else by T_low (`EntropyTemperatureProcessor`, the same callable for HF
`generate` and vLLM). Each setting samples `k` responses per problem (`backend=hf`: HF generate; `backend=vllm`:
one vLLM engine for every setting, ablations/vllm_decoding.py, as the paper), writes them as a replay file
(`temperature/<setting>/replay.jsonl`: `task, problem, responses, lengths`) and scores them through the evaluation
engine (`harness.evaluation.evaluate(backend="replay")`, which writes its own summary.csv and samples files in the
setting's folder). Problems and prompts are the evaluation tasks' own (`tasks`, `data_dir`), so the replay lines
match the benchmark exactly. Writes `temperature.csv` (t_high, t_low, benchmark, metric, k, value, ci_low, ci_high,
...) and `temperature.png`.
The paper samples with vLLM (`backend=vllm`); `backend=hf` is the default because it needs no engine start.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd

from ablations import common
from ablations.token_entropy import EntropyTemperatureProcessor
from harness.core.config import ConfigError
from harness.core.io import atomic_write_jsonl


def settings(t_high, t_low, fixed: float, sweep: str) -> list[tuple[float, float]]:
    """(t_high, t_low) pairs: `axes` varies one with the other at `fixed` (Fig. 3); `grid` crosses them."""
    if sweep == "grid":
        pairs = [(float(h), float(lo)) for h in t_high for lo in t_low]
    elif sweep == "axes":
        pairs = [(float(h), float(fixed)) for h in t_high] + [(float(fixed), float(lo)) for lo in t_low]
    else:
        raise ConfigError(f"sweep={sweep!r}; choose axes or grid")
    return list(dict.fromkeys(pairs))


def task_problems(tasks: list[str], data_dir: str | None, n: int | None, max_new_tokens: int) -> list[dict]:
    """The evaluation tasks' problems and prompts (lm-eval docs after process_docs; prompt = the task's
    doc_to_text)."""
    from harness.evaluation.tasks import build_task, read_docs

    out = []
    for name in tasks:
        task = build_task(name, k=1, temperature=1.0, top_p=1.0, max_gen_toks=max_new_tokens, data_dir=data_dir)
        for doc in read_docs(task)[: n or None]:
            out.append({"task": name, "problem": doc["problem"], "prompt": task.doc_to_text(doc)})
    if not out:
        raise ConfigError(f"tasks {tasks}: no problems")
    return out


def replay_rows(responses: list[common.Response]) -> list[dict]:
    """One line per problem: `task, problem, responses, lengths` (the evaluation engine's replay format)."""
    rows: dict[tuple[str, str], dict] = {}
    for r in responses:
        row = rows.setdefault((r.task, r.problem), {"task": r.task, "problem": r.problem, "responses": [],
                                                    "lengths": []})
        row["responses"].append(r.text)
        row["lengths"].append(len(r.response_ids))
    return list(rows.values())


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
                ax.errorbar(g[vary], g.value, yerr=[g.value - g.ci_low, g.ci_high - g.value], marker="o",
                            capsize=3, label=bench)
            ax.set_xlabel(f"{vary.replace('_', ' ')} ({hold.replace('_', ' ')} = {fixed:g})")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        axes[0].set_ylabel(f"{acc.metric.iloc[0] if len(acc) else 'avg@k'} (%)")
    common.save_figure(fig, path)


def check(cfg, files: bool = True) -> list[tuple[float, float]]:
    """Every value before any model is loaded (files=False: a grid's analysis, before its cells ran); returns the
    (t_high, t_low) settings."""
    from harness.core.config import require_int, require_model_path, require_number, require_seed
    from harness.evaluation.tasks import expand_tasks

    common.require(cfg, "tasks")
    if not cfg.get("model_path") and not cfg.get("run"):
        raise ConfigError("analyze temperature: give model_path=PATH_OR_HUB_ID or run=RUN_DIR")
    if files and cfg.get("run"):
        common.run_dir(cfg.run)
    if files and cfg.get("model_path"):
        require_model_path(cfg.model_path, "model_path")
    try:
        pairs = settings(cfg.t_high, cfg.t_low, cfg.fixed, cfg.sweep)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"t_high={list(cfg.t_high)}, t_low={list(cfg.t_low)}, fixed={cfg.fixed}: temperatures "
                          f"must be numbers >= 0 ({e})") from e
    for t in (t for p in pairs for t in p):
        require_number(t, "t_high / t_low / fixed (0 = greedy)", 0)
    require_number(cfg.threshold, "threshold", 0)
    if cfg.backend not in ("hf", "vllm"):
        raise ConfigError(f"backend={cfg.backend!r} is not valid; choose hf or vllm")
    if cfg.backend == "vllm" and importlib.util.find_spec("vllm") is None:
        raise ConfigError("backend=vllm needs vLLM (pip install -e '.[gpu]', or its CPU build: README.md)")
    for key in ("k", "max_new_tokens"):
        require_int(cfg[key], key, 1)
    if cfg.get("n_problems") is not None:
        require_int(cfg.n_problems, "n_problems", 1)
    require_seed(cfg.seed)
    common.check_device(cfg)
    if cfg.get("data_dir") and not Path(cfg.data_dir).is_dir():
        raise ConfigError(f"data_dir={cfg.data_dir!r}: not a directory")
    try:
        expand_tasks([cfg.tasks] if isinstance(cfg.tasks, str) else list(cfg.tasks))
    except ValueError as e:
        raise ConfigError(f"tasks: {e}") from e
    return pairs


def _sampler(cfg, model_path: str, problems: list[dict]):
    """(t_high, t_low) -> the k responses per problem, from HF generate or from one vLLM engine."""
    if cfg.backend == "vllm":
        import torch

        from ablations import vllm_decoding

        dtype = cfg.dtype if cfg.dtype != "auto" else ("bfloat16" if torch.cuda.is_available() else "float32")
        llm = vllm_decoding.engine(model_path, dtype, cfg.seed, dict(cfg.vllm))
        return lambda th, tl: vllm_decoding.sample(llm, problems, cfg.k, cfg.max_new_tokens, cfg.seed, th, tl,
                                                   cfg.threshold)
    model, tok = common.load_model(model_path, cfg.device, cfg.dtype)
    return lambda th, tl: common.generate(model, tok, problems, "", cfg.k, cfg.max_new_tokens, 1.0, 1.0, cfg.seed,
                                          logits_processor=EntropyTemperatureProcessor(th, tl, cfg.threshold),
                                          prompt_key="prompt")


def main(cfg) -> int:
    pairs = check(cfg)
    run = common.run_dir(cfg.get("run"))
    model_path = cfg.get("model_path") or str(run / "final")
    out = common.output_dir(cfg, "temperature")
    tasks = [cfg.tasks] if isinstance(cfg.tasks, str) else list(cfg.tasks)
    problems = task_problems(tasks, cfg.get("data_dir"), cfg.n_problems, cfg.max_new_tokens)

    from harness.evaluation import evaluate

    draw = _sampler(cfg, model_path, problems)
    frames = []
    for t_high, t_low in pairs:
        responses = draw(t_high, t_low)
        sdir = out / "temperature" / f"th{t_high:g}_tl{t_low:g}"
        replay = atomic_write_jsonl(sdir / "replay.jsonl", replay_rows(responses))
        df = evaluate(None, tasks, sdir, backend="replay", k=cfg.k, replay_file=replay, data_dir=cfg.get("data_dir"),
                      max_gen_toks=cfg.max_new_tokens, seed=cfg.seed, config=cfg,
                      model_name=f"{model_path} T_high={t_high:g} T_low={t_low:g}",
                      pass_ks=[x for x in (1, 2, 4, 8, 16) if x <= cfg.k])
        frames.append(df.assign(t_high=t_high, t_low=t_low, threshold=cfg.threshold))
        acc = df[df.metric == "avg@k"] if (df.metric == "avg@k").any() else df[df.metric.str.startswith("avg@")]
        print(f"T_high={t_high:g} T_low={t_low:g}: " +
              ", ".join(f"{b} {v:.1f}" for b, v in zip(acc.benchmark, acc.value)))
    table = pd.concat(frames, ignore_index=True)
    lead = ["t_high", "t_low", "benchmark", "metric", "k", "value"]
    table = table[lead + [c for c in table.columns if c not in lead]]
    common.write_csv(table, out / "temperature.csv", cfg, model=model_path, settings=pairs)
    plot(table, cfg.fixed, cfg.sweep, out / "temperature.png")
    print(f"temperature -> {out}")
    return 0
