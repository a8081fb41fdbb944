"""Scoring throughput for one checkpoint's worth of samples: 16 samples x 1,547 problems = 24,752, with 1%
adversarial outputs, on `--workers` worker processes (default 2). Goal: under 30 s; the worst single sample
bounded by the timeout.

    python benchmarks/bench_scoring.py [--data ../shared/data/math] [--workers 2] [--timeout 5] [--seed 0]

The responses are synthetic but shaped like model output: ~2-6 KB of reasoning text ending in a \\boxed{}
answer that is the gold (45%), the gold written differently (5%: 25 -> 25.0, \\frac{a}{b} -> a/b), a wrong
number, or another problem's gold; the adversarial 1% cycle through the kinds in ADVERSARIAL.
"""
from __future__ import annotations

import argparse
import json
import random
import resource
import time
from collections import Counter
from pathlib import Path

from harness.core.scoring import close_pool, score_math
from harness.tasks.math.utils import gold_of

TASKS = ["aime24", "aime25", "amc23", "math500", "minerva_math", "olympiadbench"]
FILLER = ("We consider the cases one at a time. Let $x$ be the unknown; then $2x + 3 = 7$ gives $x = 2$, "
          "and substituting back we check that the constraint holds. ")

ADVERSARIAL = {
    "power_tower": "so the answer is \\boxed{2^{2^{2^{2^{2^{2}}}}}}",  # sympy evaluates 2^(2^65536) in C
    "megabyte_no_box": "wait " * 200_000,
    "megabyte_then_box": "hmm " * 250_000 + "\\boxed{12}",
    "broken_latex": "\\boxed{\\frac{1}{2",
    "huge_box": "\\boxed{" + "x+" * 20_000 + "1}",
    "nested_fracs": "\\boxed{" + "\\frac{1}{1+" * 60 + "1" + "}" * 60 + "}",
    "factorial": "\\boxed{100000!}",
    "garbage_braces": "\\boxed{}}}{{{\\left(\\right]]}",
}


def make_samples(data: Path, per_problem: int, adversarial_rate: float, seed: int):
    rng = random.Random(seed)
    golds = []
    for t in TASKS:
        with open(data / f"{t}.jsonl", encoding="utf-8") as f:
            golds += [gold_of(json.loads(x)) for x in f if x.strip()]
    responses, gold_list, kinds = [], [], []
    adv_names = list(ADVERSARIAL)
    n_adv = 0
    for g in golds:
        for _ in range(per_problem):
            u = rng.random()
            text = FILLER * rng.randint(15, 50)
            if rng.random() < adversarial_rate:
                kind = adv_names[n_adv % len(adv_names)]
                n_adv += 1
                resp = ADVERSARIAL[kind]
            elif u < 0.45:
                kind, resp = "gold", text + f"Therefore the answer is $\\boxed{{{g}}}$."
            elif u < 0.50:
                alt = g + ".0" if g.isdigit() else g.replace("\\frac{", "(").replace("}{", ")/(")
                kind, resp = "gold_variant", text + f"So \\boxed{{{alt}}}"
            elif u < 0.80:
                kind, resp = "wrong_number", text + f"\\boxed{{{rng.randint(0, 999)}}}"
            else:
                kind, resp = "other_gold", text + f"\\boxed{{{rng.choice(golds)}}}"
            responses.append(resp)
            gold_list.append(g)
            kinds.append(kind)
    return responses, gold_list, kinds


def _cpu_seconds() -> tuple[float, float]:
    """CPU seconds of (this process, its finished children)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data" / "math")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=5.0)
    ap.add_argument("--per-problem", type=int, default=16)
    ap.add_argument("--adversarial", type=float, default=0.01)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    responses, golds, kinds = make_samples(args.data, args.per_problem, args.adversarial, args.seed)
    n_adv = sum(k in ADVERSARIAL for k in kinds)
    print(f"{len(responses)} samples ({len(set(golds))} distinct golds), {n_adv} adversarial, "
          f"{sum(map(len, responses)) / 1e6:.1f} MB of text, workers={args.workers}, timeout={args.timeout}s")

    t0 = time.monotonic()
    score_math(["\\boxed{1}"], ["1"], workers=args.workers)  # pool start-up, reported apart
    startup = time.monotonic() - t0

    cpu0 = _cpu_seconds()
    t0 = time.monotonic()
    scores = score_math(responses, golds, timeout_s=args.timeout, workers=args.workers)
    total = time.monotonic() - t0
    close_pool()  # workers exit, so their CPU time is counted below
    me, kids = (b - a for a, b in zip(cpu0, _cpu_seconds()))
    print(f"pool start-up {startup:.2f} s; scoring {total:.1f} s wall = {len(responses) / total:.0f} samples/s "
          f"(goal < 30 s)")
    print(f"CPU: parent {me:.1f} s, workers {kids:.1f} s; on {args.workers} otherwise idle cores the wall time "
          f"would be about max(parent, (parent + workers) / {args.workers}) = "
          f"{max(me, (me + kids) / args.workers):.1f} s")
    print("status:", dict(Counter(s.status for s in scores)))
    acc = Counter()
    for k, s in zip(kinds, scores):
        acc[(k, s.correct)] += 1
    for k in ["gold", "gold_variant", "wrong_number", "other_gold", *ADVERSARIAL]:
        right, wrong = acc[(k, True)], acc[(k, False)]
        if right + wrong:
            print(f"  {k:18s} n={right + wrong:6d}  scored correct {right:6d}")

    # the trainer's path: one call per batch of 64 samples, warm pool
    score_math(responses[:64], golds[:64], timeout_s=args.timeout, workers=args.workers)
    t0 = time.monotonic()
    for i in range(0, 64 * 20, 64):
        j = 5000 + i
        score_math(responses[j:j + 64], golds[j:j + 64], timeout_s=args.timeout, workers=args.workers)
    print(f"small batches (trainer reward): {(time.monotonic() - t0) / 20 * 1000:.0f} ms per call of 64 samples")

    close_pool()  # fresh workers: nothing cached from the runs above
    score_math(["\\boxed{1}"], ["1"], workers=args.workers)
    print("worst single sample (each adversarial kind alone, fresh pool, cold caches):")
    worst = 0.0
    for kind, text in ADVERSARIAL.items():
        t0 = time.monotonic()
        s = score_math([text], ["12"], timeout_s=args.timeout, workers=args.workers)[0]
        dt = time.monotonic() - t0
        worst = max(worst, dt)
        print(f"  {kind:18s} {dt:6.2f} s  status={s.status}")
    print(f"worst {worst:.2f} s (bound: timeout {args.timeout} s + kill grace 1 s + worker restart)")


if __name__ == "__main__":
    main()
