"""Peak memory and time of token entropy: the harness's chunked path vs a naive full softmax.

    .venv/bin/python benchmarks/bench_entropy.py [--tokens 8192] [--vocab 151936] [--hidden 1024] [--chunk 512]

Each implementation runs in its own subprocess (so peak RSS is its own): random hidden states [N, H] and a random
lm_head [V, H] in float32, then entropy of softmax(hidden @ W.T) per row. Peak RSS is ru_maxrss of the child;
"extra" is the peak minus the RSS once the inputs exist. Prints a markdown table and the max |difference| to naive.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

IMPLS = ("naive", "chunked", "trl")


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def child(args: argparse.Namespace) -> None:
    import torch

    from ablations.token_entropy import chunked_entropy, naive_entropy

    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(args.tokens, args.hidden, generator=g)  # [N, H]
    weight = torch.randn(args.vocab, args.hidden, generator=g).mul_(3.0 / args.hidden**0.5)  # [V, H], no temporary copy
    base = _rss_mib()
    t0 = time.perf_counter()
    if args.child == "naive":
        ent = naive_entropy(hidden, weight)
    elif args.child == "chunked":
        ent = chunked_entropy(hidden, weight, chunk_size=args.chunk)
    else:
        ent = chunked_entropy(hidden, weight, impl="trl")
    seconds = time.perf_counter() - t0
    torch.save(ent, args.save)
    print(json.dumps({"impl": args.child, "seconds": seconds, "peak_rss_mib": _rss_mib(), "inputs_rss_mib": base}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=8192)
    ap.add_argument("--vocab", type=int, default=151936)
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--chunk", type=int, default=512, help="positions per chunk for the harness path")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--impls", default=",".join(IMPLS), help=f"comma list from {IMPLS}")
    ap.add_argument("--child", choices=IMPLS, help=argparse.SUPPRESS)
    ap.add_argument("--save", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)

    import torch

    rows, ents = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for impl in args.impls.split(","):
            save = os.path.join(tmp, f"{impl}.pt")
            cmd = [sys.executable, __file__, "--child", impl, "--save", save, "--tokens", str(args.tokens),
                   "--vocab", str(args.vocab), "--hidden", str(args.hidden), "--chunk", str(args.chunk),
                   "--threads", str(args.threads)]
            res = subprocess.run(cmd, capture_output=True, text=True)
            if res.returncode != 0:
                print(f"{impl}: failed (rc {res.returncode}): {res.stderr[-2000:]}", file=sys.stderr)
                continue
            rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
            ents[impl] = torch.load(save)
    print(f"tokens={args.tokens} vocab={args.vocab} hidden={args.hidden} chunk={args.chunk} "
          f"threads={args.threads} torch={torch.__version__}")
    print("| impl | time (s) | peak RSS (MiB) | extra over inputs (MiB) | max abs diff vs naive (nats) |")
    print("| --- | --- | --- | --- | --- |")
    naive = next((r for r in rows if r["impl"] == "naive"), None)
    for r in rows:
        diff = (ents[r["impl"]] - ents["naive"]).abs().max().item() if "naive" in ents else float("nan")
        print(f"| {r['impl']} | {r['seconds']:.2f} | {r['peak_rss_mib']:.0f} | "
              f"{r['peak_rss_mib'] - r['inputs_rss_mib']:.0f} | {diff:.2e} |")
    if naive:
        for r in rows:
            if r is not naive:
                print(f"{r['impl']}: peak {r['peak_rss_mib'] / naive['peak_rss_mib']:.3f}x naive, "
                      f"time {r['seconds'] / naive['seconds']:.2f}x naive")


if __name__ == "__main__":
    main()
