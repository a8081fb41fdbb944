"""Scoring throughput for one checkpoint's worth of samples: 16 samples x 1,547 problems = 24,752, of which
`--hostile` (default 10%) are hostile outputs cycling through the kinds in HOSTILE, on `--workers` worker
processes (default 2). Goal: under 60 s on 2 cores, no hang, no crash, no timeout, every normal sample given the
same verdict as when scored without the hostile ones, bounded worker memory, normal answers in milliseconds.

    python benchmarks/bench_scoring.py [--data ../shared/data/math] [--workers 2] [--timeout 5] [--seed 0]

The normal responses are synthetic but shaped like model output: ~2-6 KB of reasoning text ending in a
\\boxed{} answer that is the gold (45%), the gold written differently (5%: 25 -> 25.0, \\frac{a}{b} -> ((a)/(b)),
4.5e33 -> 4.5 \\times 10^{33}, else \\displaystyle and plain brackets), a wrong number (30%), or another problem's
gold (20%). Printed: wall time, CPU
time of the parent and the workers, the machine's load average before and after, statuses, per-kind verdicts,
the peak resident memory of a worker, the cost of normal answers alone, and each hostile kind scored alone on a
fresh pool.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import resource
import time
from collections import Counter
from pathlib import Path

from harness.core.scoring import close_pool, get_pool, score_math
from harness.tasks.math.utils import gold_of

DATA_FILES = ["aime24", "aime25", "amc23", "math500", "minerva_math", "olympiadbench"]  # ../shared/data/math/*.jsonl
FILLER = ("We consider the cases one at a time. Let $x$ be the unknown; then $2x + 3 = 7$ gives $x = 2$, "
          "and substituting back we check that the constraint holds. ")


def _det8() -> str:
    rows = [" & ".join(f"a_{{{i}{j}}}" for j in range(8)) for i in range(8)]
    return "\\boxed{\\det \\begin{pmatrix} " + " \\\\ ".join(rows) + " \\end{pmatrix}}"


HOSTILE = {
    "power_tower": "so the answer is \\boxed{2^{2^{2^{2^{2^{2}}}}}}",
    "megabyte_no_box": "wait " * 200_000,
    "megabyte_then_box": "hmm " * 250_000 + "\\boxed{12}",
    "broken_latex": "\\boxed{\\frac{1}{2",
    "huge_box": "\\boxed{" + "x+" * 20_000 + "1}",
    "nested_fracs": "\\boxed{" + "\\frac{1}{1+" * 60 + "1" + "}" * 60 + "}",
    "factorial": "\\boxed{100000!}",
    "garbage_braces": "\\boxed{}}}{{{\\left(\\right]]}",
    "expand_power": "\\boxed{(x+1)^{100000}}",
    "multinomial": "\\boxed{(x+y+z)^{60}}",
    "big_product": "\\boxed{\\prod_{k=1}^{10^6} k}",
    "nested_parens": "\\boxed{" + "(" * 300 + "x" + ")" * 300 + "}",
    "nested_braces": "\\boxed{" + "{" * 990 + "x" + "}" * 990 + "}",
    "exponent_tower": "\\boxed{" + "x^{" * 100 + "x" + "}" * 100 + "}",
    "left_parens": "\\boxed{" + "\\left(" * 331 + "x" + "}",
    "binomial": "\\boxed{\\binom{10^7}{5\\cdot 10^6}}",
    "binomial_literal": "\\boxed{\\binom{10000000}{5000000}}",
    "det_8x8": _det8(),
    "gamma": "\\boxed{\\Gamma(10^9)}",
    "gamma_literal": "\\boxed{\\Gamma(1000000000)}",
    "expandafter": "\\boxed{\\def\\a{\\a\\a}\\expandafter\\a\\a}",
    "percent_spam": "\\boxed{" + "\\%" * 995 + "33}",
    "long_expression": "\\boxed{" + "\\sin(x)+" * 120 + "1}",
    "sin_of_huge": "\\boxed{\\sin(10^{10^{4}})}",
    "deep_sqrt": "\\boxed{" + "\\sqrt{" * 200 + "2" + "}" * 200 + "}",
    "many_boxes_big_int": "\\boxed{1}" * 20_000 + "\\boxed{" + "9" * 1_500 + "}",
    "infinite_sum": "\\boxed{\\sum_{n=1}^{\\infty} \\frac{1}{n^{2}}}",
    "integral": "\\boxed{\\int_0^1 x^{1000000} \\, dx}",
}
NORMAL = ("gold", "gold_variant", "wrong_number", "other_gold")


def variant(g: str) -> str:
    """The gold written differently (an equivalent form)."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)e(-?\d+)", g)
    if m:
        return f"{m.group(1)} \\times 10^{{{m.group(2)}}}"
    if g.isdigit():
        return g + ".0"
    frac = g if "\\frac{d" in g else re.sub(r"(?<!\d)(?<!\d )\\d?frac\{([^{}]*)\}\{([^{}]*)\}", r"((\1)/(\2))", g)
    return frac if frac != g else "\\displaystyle " + g.replace("\\left(", "(").replace("\\right)", ")")


def make_samples(data: Path, per_problem: int, hostile_rate: float, seed: int):
    rng = random.Random(seed)
    golds = []
    for t in DATA_FILES:
        with open(data / f"{t}.jsonl", encoding="utf-8") as f:
            golds += [gold_of(json.loads(x)) for x in f if x.strip()]
    responses, gold_list, kinds = [], [], []
    names = list(HOSTILE)
    n_hostile = 0
    for g in golds:
        for _ in range(per_problem):
            u = rng.random()
            text = FILLER * rng.randint(15, 50)
            if rng.random() < hostile_rate:
                kind = names[n_hostile % len(names)]
                n_hostile += 1
                resp = HOSTILE[kind]
            elif u < 0.45:
                kind, resp = "gold", text + f"Therefore the answer is $\\boxed{{{g}}}$."
            elif u < 0.50:
                kind, resp = "gold_variant", text + f"So \\boxed{{{variant(g)}}}"
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


def _load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data" / "math")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=5.0)
    ap.add_argument("--per-problem", type=int, default=16)
    ap.add_argument("--hostile", type=float, default=0.10)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    responses, golds, kinds = make_samples(args.data, args.per_problem, args.hostile, args.seed)
    n_hostile = sum(k in HOSTILE for k in kinds)
    print(f"{time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} CPUs, load average (1/5/15 min) {_load()}")
    print(f"{len(responses)} samples ({len(set(golds))} distinct golds), {n_hostile} hostile of "
          f"{len(set(k for k in kinds if k in HOSTILE))} kinds, {sum(map(len, responses)) / 1e6:.1f} MB of text, "
          f"workers={args.workers}, timeout={args.timeout}s")

    t0 = time.monotonic()
    score_math(["\\boxed{1}"], ["1"], workers=args.workers)  # pool start-up, reported apart
    startup = time.monotonic() - t0

    cpu0 = _cpu_seconds()
    t0 = time.monotonic()
    scores = score_math(responses, golds, timeout_s=args.timeout, workers=args.workers)
    total = time.monotonic() - t0
    pool = get_pool(args.workers)
    peak, replaced = pool.peak_rss_mb(), pool.replaced
    close_pool()  # workers exit, so their CPU time is counted below
    me, kids = (b - a for a, b in zip(cpu0, _cpu_seconds()))
    print(f"pool start-up {startup:.2f} s; scoring {total:.1f} s wall = {len(responses) / total:.0f} samples/s "
          f"(goal < 60 s); load average after: {_load()}")
    print(f"CPU: parent {me:.1f} s, workers {kids:.1f} s; on {args.workers} otherwise idle cores the wall time "
          f"would be about max(parent, (parent + workers) / {args.workers}) = "
          f"{max(me, (me + kids) / args.workers):.1f} s")
    print(f"worker memory: peak resident {peak:.0f} MB; workers replaced (killed or recycled): {replaced}")
    print("status:", dict(Counter(s.status for s in scores)), "retried:", sum(s.retried for s in scores))
    acc = Counter()
    for k, s in zip(kinds, scores):
        acc[(k, s.correct, s.status)] += 1
    for k in [*NORMAL, *HOSTILE]:
        n = sum(v for (kk, _, _), v in acc.items() if kk == k)
        if n:
            right = sum(v for (kk, c, _), v in acc.items() if kk == k and c)
            statuses = dict(Counter({st: v for (kk, _, st), v in acc.items() if kk == k}))
            print(f"  {k:20s} n={n:6d}  scored correct {right:6d}  {statuses}")

    # the normal samples alone: the same verdicts (the hostile ones changed nothing), and their own cost
    normal = [i for i, k in enumerate(kinds) if k in NORMAL]
    close_pool()
    score_math(["\\boxed{1}"], ["1"], workers=args.workers)
    t0 = time.monotonic()
    alone = score_math([responses[i] for i in normal], [golds[i] for i in normal], timeout_s=args.timeout,
                       workers=args.workers)
    t_normal = time.monotonic() - t0
    changed = sum(a.correct != scores[i].correct for a, i in zip(alone, normal))
    print(f"normal samples alone: {len(normal)} in {t_normal:.1f} s ({1000 * t_normal / len(normal):.2f} ms each "
          f"on {args.workers} workers); verdicts that differ from the mixed run: {changed}")
    wrong_gold = sum(1 for a, i in zip(alone, normal) if kinds[i] in ("gold", "gold_variant") and not a.correct)
    print(f"gold and gold-variant samples scored wrong: {wrong_gold}")

    # the trainer's path: one call per batch of 64 samples, warm pool
    t0 = time.monotonic()
    for i in range(0, 64 * 20, 64):
        j = 5000 + i
        score_math(responses[j:j + 64], golds[j:j + 64], timeout_s=args.timeout, workers=args.workers)
    print(f"small batches (trainer reward): {(time.monotonic() - t0) / 20 * 1000:.0f} ms per call of 64 samples")

    close_pool()  # fresh workers: nothing cached from the runs above
    score_math(["\\boxed{1}"], ["1"], workers=args.workers)
    print("each hostile kind alone (fresh pool, cold caches):")
    worst = 0.0
    for kind, text in HOSTILE.items():
        t0 = time.monotonic()
        s = score_math([text], ["12"], timeout_s=args.timeout, workers=args.workers)[0]
        dt = time.monotonic() - t0
        worst = max(worst, dt)
        print(f"  {kind:20s} {dt:6.3f} s  correct={s.correct} status={s.status} {s.reason}")
    print(f"worst {worst:.3f} s (bound: 2 x (timeout {args.timeout} s CPU + kill grace 1 s) + worker restarts)")
    print(f"peak worker memory over the whole run: {get_pool(args.workers).peak_rss_mb():.0f} MB; "
          f"load average at the end: {_load()}")


if __name__ == "__main__":
    main()
