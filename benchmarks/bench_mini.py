"""Benchmark of the CPU-scale reproduction's pieces: warm start, RL cells through `harness train`, evaluation.

    .venv/bin/python benchmarks/bench_mini.py                       # full, top20, bottom80 x seeds 0,1,2
    .venv/bin/python benchmarks/bench_mini.py --variants full top20 --seeds 0 --steps 40 --jobs 2

Stages, each timed (wall and CPU seconds, so runs on a shared machine can be read):
1. the warm start (harness.mini.warmstart.ensure_warm_start; cached in model.path; `--fresh DIR` retrains
   into DIR to time it and check that the same seed gives the same weights);
2. one `harness train model=mini data=mini trainer=dapo_mini variant=V seed=S` per cell, `--jobs` at a time,
   each with OMP_NUM_THREADS=1;
3. evaluation of the base and of every cell on the mini_id and mini_ood problems: the exact expected success at
   T=1 (teacher forcing, no sampling noise) and, with `--k`, sampled avg@k / pass@k with model.generate.
Prints a table and writes `<out>/bench_mini.json` (with provenance).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from harness.core.io import REPO_ROOT, atomic_write_json, provenance, read_jsonl

TASKS = {"mini_id": "harness/tasks/mini/mini_id.yaml", "mini_ood": "harness/tasks/mini/mini_ood.yaml"}


def task_problems(name: str) -> tuple:
    import yaml

    from harness.mini.task import TaskFormat, make_problems

    kw = yaml.safe_load((REPO_ROOT / TASKS[name]).read_text())["dataset_kwargs"]
    fmt = TaskFormat(**{k: v for k, v in kw.items() if k not in ("n", "seed")})
    return fmt, make_problems(fmt, kw["n"], kw["seed"])


def cpu_children() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_cells(cells: list[tuple[str, int]], steps: int | None, out: Path, jobs: int, extra: list[str]) -> dict:
    """Run `harness train` for each (variant, seed), `jobs` at a time; return per-cell wall and CPU seconds."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    todo, running, timing = list(cells), {}, {}
    while todo or running:
        while todo and len(running) < jobs:
            v, s = todo.pop(0)
            d = out / f"{v}-s{s}"
            args = [sys.executable, "-m", "harness.cli", "train", "model=mini", "data=mini", "trainer=dapo_mini",
                    f"variant={v}", f"seed={s}", f"out={d}", *([f"trainer.max_steps={steps}"] if steps else []),
                    *extra]
            d.mkdir(parents=True, exist_ok=True)
            log = open(d / "log.txt", "w")
            running[subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT, env=env).pid] = (
                (v, s), time.time(), log)
        pid, status, ru = os.wait4(-1, 0)
        if pid not in running:
            continue
        (v, s), t0, log = running.pop(pid)
        log.close()
        if os.waitstatus_to_exitcode(status) != 0:
            raise RuntimeError(f"cell {v}-s{s} failed; see {out / f'{v}-s{s}' / 'log.txt'}")
        timing[f"{v}-s{s}"] = {"wall_s": round(time.time() - t0, 1), "cpu_s": round(ru.ru_utime + ru.ru_stime, 1)}
        print(f"  cell {v}-s{s}: {timing[f'{v}-s{s}']}", flush=True)
    return timing


def sampled(model, tok, problems: list[dict], k: int, seed: int) -> dict:
    """avg@k and pass@k from k samples per problem at T=1 (model.generate), exact-match scoring."""
    import torch

    from harness.mini.task import is_correct

    torch.manual_seed(seed)
    enc = tok([p["prompt"] for p in problems], return_tensors="pt", padding=True)
    with torch.no_grad():
        gen = model.generate(**enc, do_sample=True, temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=16,
                             num_return_sequences=k, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    texts = tok.batch_decode(gen[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    correct = [[is_correct(texts[i * k + j], p["answer"]) for j in range(k)] for i, p in enumerate(problems)]
    return {f"avg@{k}": sum(map(sum, correct)) / (k * len(problems)),
            f"pass@{k}": sum(map(any, correct)) / len(problems)}


def entropy_profile(path: Path, problems: list[dict], k: int = 8) -> dict:
    """The paper's Fig. 2 statistics on the base model's own sampled responses (T=1): entropy percentiles, the
    share under 0.01 nats and over 0.672 nats, and the mean entropy of each answer position role."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, tok = AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)
    torch.manual_seed(0)
    enc = tok([p["prompt"] for p in problems], return_tensors="pt", padding=True)
    with torch.no_grad():
        out = model.generate(**enc, do_sample=True, temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=16,
                             num_return_sequences=k, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                             output_scores=True, return_dict_in_generate=True)
    logp = torch.log_softmax(torch.stack(out.scores, 1).float(), -1)  # [B*k, T, V]
    ent = -(logp.exp() * logp).sum(-1)  # [B*k, T]
    resp = out.sequences[:, enc["input_ids"].shape[1]:]  # [B*k, T]
    after_eos = (resp == tok.eos_token_id).long().cumsum(1) - (resp == tok.eos_token_id).long()
    valid = (after_eos == 0) & (resp != tok.pad_token_id)  # response tokens up to and including <eos>
    e = ent[valid]
    pos = torch.arange(resp.shape[1]).expand_as(resp)[valid]
    fork = (pos % 3 == 1) & (pos < 9)  # positions 1, 4, 7: the number after each label
    q = torch.quantile(e, torch.tensor([0.5, 0.8, 0.9, 0.95]))
    return {"tokens": int(e.numel()), "p50": q[0].item(), "p80": q[1].item(), "p90": q[2].item(),
            "p95": q[3].item(), "share_under_0.01": (e < 0.01).float().mean().item(),
            "share_over_0.672": (e > 0.672).float().mean().item(), "fork_share": fork.float().mean().item(),
            "entropy_fork_positions": e[fork].mean().item(), "entropy_other_positions": e[~fork].mean().item(),
            "share_of_top20_at_forks": fork[e >= q[1]].float().mean().item()}


def evaluate_models(models: dict[str, Path], k: int) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from harness.mini.task import check_format
    from harness.mini.warmstart import exact_stats

    torch.set_num_threads(1)
    sets = {name: task_problems(name) for name in TASKS}
    out = {}
    for name, path in models.items():
        t0 = time.time()
        model, tok = AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)
        check_format(path, sets["mini_id"][0])
        row = {}
        for task, (fmt, problems) in sets.items():
            row[task] = exact_stats(model, tok, fmt, problems)
            if k:
                row[task].update(sampled(model, tok, problems, k, seed=0))
        row["eval_s"] = round(time.time() - t0, 2)
        out[name] = row
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", nargs="+", default=["full", "top20", "bottom80"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=None, help="trainer.max_steps (default: the dapo_mini preset)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--k", type=int, default=8, help="samples per problem for avg@k/pass@k (0: exact only)")
    ap.add_argument("--out", type=Path, default=Path("/tmp/bench_mini"))
    ap.add_argument("--fresh", type=Path, default=None, help="also train a fresh warm start into this folder")
    ap.add_argument("--train-override", action="append", default=[], help="extra `harness train` override")
    a = ap.parse_args()

    from harness.core.config import load_config, to_dict
    from harness.mini.warmstart import WarmStartConfig, ensure_warm_start, train_warm_start

    model_cfg = to_dict(load_config("train", ["model=mini", "data=mini", "out=x"]))["model"]
    record: dict = {"stages": {}}
    t0, c0 = time.time(), time.process_time()
    base = ensure_warm_start(model_cfg, verbose=True)
    record["stages"]["warm_start_cached_or_built"] = {"wall_s": round(time.time() - t0, 1),
                                                      "cpu_s": round(time.process_time() - c0, 1)}
    record["warm_start"] = json.loads((base / "warmstart.json").read_text())
    if a.fresh:
        t0, c0 = time.time(), time.process_time()
        stats = train_warm_start(WarmStartConfig.from_config(model_cfg["warmstart"]), a.fresh)
        same = (a.fresh / "model.safetensors").read_bytes() == (base / "model.safetensors").read_bytes()
        record["stages"]["warm_start_fresh"] = {"wall_s": round(time.time() - t0, 1),
                                                "cpu_s": round(time.process_time() - c0, 1),
                                                "gate": stats, "identical_to_cached": same}
        print(f"fresh warm start: {record['stages']['warm_start_fresh']}", flush=True)

    cells = [(v, s) for v in a.variants for s in a.seeds]
    t0, c0 = time.time(), cpu_children()
    record["cells"] = run_cells(cells, a.steps, a.out, a.jobs, a.train_override)
    record["stages"]["rl"] = {"wall_s": round(time.time() - t0, 1), "cpu_s": round(cpu_children() - c0, 1),
                              "cells": len(cells), "jobs": a.jobs}
    for name in record["cells"]:
        m = read_jsonl(a.out / name / "metrics.jsonl")
        tail = m[-8:]
        record["cells"][name].update(
            steps=len(m), final_reward=sum(r["reward_mean"] for r in tail) / len(tail),
            grad_norm_mean=sum(r["grad_norm"] for r in m) / len(m),
            clip_frac_high_mean=sum(r.get("clip_frac_high") or 0 for r in m) / len(m),
            clip_frac_low_mean=sum(r.get("clip_frac_low") or 0 for r in m) / len(m),
            selected_frac_mean=sum(r.get("selected_frac") or 0 for r in m) / len(m))

    record["base_entropy"] = entropy_profile(base, task_problems("mini_id")[1])
    print("base entropy profile:", json.dumps(record["base_entropy"]), flush=True)
    t0 = time.time()
    models = {"base": base, **{n: a.out / n / "final" for n in record["cells"]}}
    record["eval"] = evaluate_models(models, a.k)
    record["stages"]["eval"] = {"wall_s": round(time.time() - t0, 1), "models": len(models), "k": a.k}
    atomic_write_json(a.out / "bench_mini.json", provenance(vars(a), **record))

    print(f"\n{'model':<14}{'id exact':>9}{'ood exact':>10}{'id avg@k':>9}{'id pass@k':>10}{'ood avg@k':>10}"
          f"{'wall s':>8}{'cpu s':>7}{'grad':>8}{'clip_hi':>8}")
    for name, ev in record["eval"].items():
        c = record["cells"].get(name, {})
        sk = [ev[t].get(f"{m}@{a.k}", float("nan")) for t, m in
              (("mini_id", "avg"), ("mini_id", "pass"), ("mini_ood", "avg"))]
        print(f"{name:<14}{ev['mini_id']['success']:>9.3f}{ev['mini_ood']['success']:>10.3f}{sk[0]:>9.3f}"
              f"{sk[1]:>10.3f}{sk[2]:>10.3f}{c.get('wall_s', float('nan')):>8.1f}{c.get('cpu_s', float('nan')):>7.1f}"
              f"{c.get('grad_norm_mean', float('nan')):>8.3f}{c.get('clip_frac_high_mean', float('nan')):>8.4f}")
    print("\nstages:", json.dumps(record["stages"]))


if __name__ == "__main__":
    main()
