"""Mask selection over many entropies: time and peak memory against one plain pass and a full sort.

    python benchmarks/bench_masks.py [--n 33554432] [--repeats 3] [--threads 2]

Times: all methods round-robin in one process (best of `repeats`), so load from other jobs hits them alike.
Memory: each method runs once more in its own subprocess to read its peak resident memory (VmHWM, reset after
the input is built); the input
(float32 entropies [N] and a bool response mask with 10% padding) is built first and its memory is the baseline.
Methods: `sum` (entropy.sum(): one pass, no output), `compare` (entropy > 0.5: one pass writing an N-element bool
tensor, the least any mask costs: on CPU a fresh output tensor means page faults), `sort` (torch.sort of the
response entropies), `topk` and `quantile` (trainers.masks.select_tokens, mode top, rho 0.2: at this size the
chunked `_local_select` path), and `torch_quantile` (TRL's rule; fails above 2**24).
On a crowded CPU prefer `--threads 1`: with 2 threads each of the scan's many small parallel ops can stall on a
descheduled worker. `THP_MEM_ALLOC_ENABLE=1` in the environment (huge pages for large tensors) cuts the page-fault
cost of fresh tensors, for every method alike.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

METHODS = ("sum", "compare", "sort", "topk", "quantile", "torch_quantile")


def _status_mib(field: str) -> float:
    """VmRSS (current) or VmHWM (peak) of this process from /proc, in MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:  # "5" resets VmHWM to the current RSS (Linux)
        f.write("5")


def _inputs(n: int):
    import torch

    g = torch.Generator().manual_seed(0)
    entropy = torch.rand(n, generator=g).pow_(4).mul_(3)  # skewed like real entropies: most near 0
    mask = torch.rand(n, generator=g) > 0.1
    return entropy, mask


def _methods(entropy, mask) -> dict:
    import torch

    from trainers.masks import select_tokens

    return {
        "sum": lambda: entropy.sum(),
        "compare": lambda: entropy > 0.5,  # one pass that writes a full-size bool tensor, as any mask must
        "sort": lambda: torch.sort(entropy[mask]),
        "topk": lambda: select_tokens(entropy, mask, "top", 0.2, "topk"),
        "quantile": lambda: select_tokens(entropy, mask, "top", 0.2, "quantile"),
        "torch_quantile": lambda: (entropy >= torch.quantile(entropy[mask], 0.8)) & mask,
    }


def run_one(method: str, n: int, repeats: int, threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    entropy, mask = _inputs(n)
    fns = _methods(entropy, mask)
    _reset_peak()
    base = _status_mib("VmRSS")
    times = []
    try:
        for _ in range(repeats):
            t = time.perf_counter()
            fns[method]()
            times.append(time.perf_counter() - t)
    except RuntimeError as e:
        return {"method": method, "n": n, "error": str(e).splitlines()[0][:120]}
    return {"method": method, "n": n, "best_s": min(times), "median_s": sorted(times)[len(times) // 2],
            "peak_extra_mib": round(_status_mib("VmHWM") - base, 1), "input_mib": round(n * 5 / 2**20, 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=32 * 2**20)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--method", choices=METHODS)
    a = ap.parse_args()
    if a.method:
        print(json.dumps(run_one(a.method, a.n, a.repeats, a.threads)))
        return
    import torch

    torch.set_num_threads(a.threads)
    entropy, mask = _inputs(a.n)
    fns = _methods(entropy, mask)
    best = {m: float("inf") for m in METHODS}
    for _ in range(a.repeats):
        for m in METHODS:
            if m == "sort" and best[m] < float("inf"):
                continue  # one full sort is enough to know it is slow
            t = time.perf_counter()
            try:
                fns[m]()
            except RuntimeError:
                continue
            best[m] = min(best[m], time.perf_counter() - t)
    del entropy, mask, fns
    rows = []
    for m in METHODS:
        out = subprocess.run([sys.executable, __file__, "--method", m, "--n", str(a.n), "--repeats", str(a.repeats),
                              "--threads", str(a.threads)], capture_output=True, text=True, check=True)
        row = json.loads(out.stdout.strip().splitlines()[-1])
        if "error" not in row:
            row["best_s"] = best[m]
        rows.append(row)
    ref = next(r["best_s"] for r in rows if r["method"] == "sum")
    print(f"N = {a.n:,} float32 entropies (10% padding), threads = {a.threads}, best of {a.repeats}")
    cmp = next(r["best_s"] for r in rows if r["method"] == "compare")
    print(f"{'method':<16}{'best s':>10}{'x sum':>10}{'x compare':>11}{'peak extra MiB':>16}")
    for r in rows:
        if "error" in r:
            print(f"{r['method']:<16}{'error: ' + r['error']}")
        else:
            print(f"{r['method']:<16}{r['best_s']:>10.4f}{r['best_s'] / ref:>10.1f}{r['best_s'] / cmp:>11.1f}"
                  f"{r['peak_extra_mib']:>16}")


if __name__ == "__main__":
    main()
