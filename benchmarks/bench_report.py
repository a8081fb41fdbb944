"""Benchmark: `harness report` on N synthetic cells (default 100); prints the time per phase.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_report.py [--cells 100] [--keep DIR]

Synthetic grid: models of 8/14/32/72 B x variants (full, top10, top20, top50, bottom80) x seeds, the paper's six
math benchmarks at their real sizes (30, 30, 40, 500, 272, 675 problems) plus livecodebench (100), 16 responses
per problem, three evaluation steps plus a base evaluation per cell (samples files at the base and the last
step, the only ones the report reads), 300 training-metric lines per cell.
Target (issue 5): everything regenerated for 100 cells in under 10 s.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from pathlib import Path

import numpy as np

BENCHMARKS = {"aime2024": 30, "aime2025": 30, "amc23": 40, "math500": 500, "minerva": 272, "olympiadbench": 675,
              "livecodebench": 100}
MODELS = [("Qwen3-8B-Base", 8.0), ("Qwen3-14B-Base", 14.0), ("Qwen3-32B-Base", 32.0), ("Big-72B", 72.0)]
VARIANTS = [("full", 1.0), ("top10", 0.1), ("top20", 0.2), ("top50", 0.5), ("bottom80", 0.8)]
K = 16


def _eval(d: Path, model: str, p: float, rng: np.random.Generator, samples: bool = True) -> None:
    d.mkdir(parents=True, exist_ok=True)
    rows = ["model,benchmark,metric,k,value,ci_low,ci_high,n_problems,n_samples"]
    for b, n in BENCHMARKS.items():
        difficulty = rng.random(n)
        c = rng.random((n, K)) < np.clip(p + 0.5 - difficulty, 0.01, 0.99)[:, None]  # [P, K]
        lengths = rng.integers(500, 5000, size=(n, K))
        for metric, per in (("avg@k", 100 * c.mean(1)), ("pass@k", 100.0 * c.any(1)), ("len@k", lengths.mean(1))):
            m, half = per.mean(), 1.96 * per.std(ddof=1) / math.sqrt(n)
            rows.append(f"{model},{b},{metric},{K},{m:.4f},{m - half:.4f},{m + half:.4f},{n},{n * K}")
        with open(d / f"samples_{b}.jsonl" if samples else "/dev/null", "w") as f:
            for i in range(n if samples else 0):
                f.write(json.dumps({"task": b, "problem": f"{b}-{i}", "gold": "1", "responses": ["..."] * K,
                                    "extracted": ["1"] * K, "correct": c[i].tolist(),
                                    "lengths": lengths[i].tolist()}) + "\n")
        (d / f"results_{b}.json").write_text(json.dumps({"task_versions": {b: "1.0"}, "provenance": {
            "git_hash": "0123abc", "time_utc": "2026-11-28T00:00:00Z",
            "versions": {"lm_eval": "0.4.13", "torch": "2.13.0"}}}))
    (d / "summary.csv").write_text("\n".join(rows) + "\n")


def make_synthetic(root: Path, n_cells: int, grid: str = "synth", seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    runs = root / "runs" / grid
    combos = [(m, v, s) for s in range(math.ceil(n_cells / (len(MODELS) * len(VARIANTS))))
              for m in MODELS for v in VARIANTS][:n_cells]
    for (model, size), (variant, rho), s in combos:
        cid = f"{model}-{variant}-s{s}"
        cd = runs / cid
        cd.mkdir(parents=True)
        (cd / "cell.json").write_text(json.dumps({"grid": grid, "cell_id": cid, "model": model, "model_size_b": size,
                                                  "variant": variant, "rho": rho, "seed": s}))
        (cd / "status.json").write_text(json.dumps({"state": "complete"}))
        skill = 0.3 + 0.1 * math.log2(size / 8) + (0.05 if variant == "top20" else 0.0) - (0.3 if variant ==
                                                                                            "bottom80" else 0.0)
        _eval(cd / "eval" / "base", model, 0.2, rng)
        for step in (100, 200, 300):
            # the report reads samples only at the base and the last step: skip the others to save generation time
            _eval(cd / "eval" / f"step-{step}", model, skill * step / 300, rng, samples=step == 300)
        (cd / "train").mkdir()
        with open(cd / "train" / "metrics.jsonl", "w") as f:
            for step in range(1, 301):
                f.write(json.dumps({"step": step, "reward_mean": skill * step / 300 + 0.05 * rng.random(),
                                    "response_len_mean": 1000 + 5 * step, "entropy_mean": 0.5 - 0.001 * step,
                                    "selected_frac": rho, "grad_norm": 0.3}) + "\n")
    return root


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cells", type=int, default=100)
    ap.add_argument("--keep", type=Path, default=None, help="write the synthetic results here and keep them")
    args = ap.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="bench_report_"))
    if not (root / "runs" / "synth").exists():
        t = time.perf_counter()
        make_synthetic(root, args.cells)
        print(f"synthetic results: {args.cells} cells in {time.perf_counter() - t:.1f} s at {root}")
    t0, c0 = time.perf_counter(), time.process_time()
    from harness.report import build_report  # imports (pandas, seaborn on first figure) count in the total
    t1, c1 = time.perf_counter(), time.process_time()
    res = build_report(root, "synth", out_dir=root / "out")
    t2, c2 = time.perf_counter(), time.process_time()
    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"{'phase':<14}{'wall s':>8}{'cpu s':>8}")
    print(f"{'import':<14}{t1 - t0:8.2f}{c1 - c0:8.2f}")
    for name, sec in res.timings.items():
        print(f"{name:<14}{sec:8.2f}{res.cpu_timings[name]:8.2f}")
    print(f"{'total':<14}{t2 - t0:8.2f}{c2 - c0:8.2f}   ({len(res.files)} files, {len(res.issues)} issues)")


if __name__ == "__main__":
    main()
