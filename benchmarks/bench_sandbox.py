"""Measure the sandbox: start-up cost per run, batch throughput, a hostile batch, and LiveCodeBench scoring.

    HF_ALLOW_CODE_EVAL=1 python benchmarks/bench_sandbox.py [--runs 40] [--workers 2]

Prints one line per measurement (seconds). Uses only the hand-written problems in tests/fixtures.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from harness.sandbox import Limits, isolation_report, run_batch, run_python
from harness.tasks.code import utils as lcb

FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "livecodebench.jsonl"
HOSTILE = {
    "infinite_loop": "while True:\n    pass\n",
    "fork_bomb": "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n",
    "memory_bomb": "x = []\nwhile True:\n    x.append(bytearray(50 << 20))\n",
    "write_outside": "for p in ['/tmp/x', '/dev/shm/x', '/x']:\n    try:\n        open(p, 'w').write('x')\n"
                     "    except OSError:\n        pass\n",
    "read_env": "import os\nprint(dict(os.environ))\n",
    "network": "import socket\ns = socket.socket(); s.settimeout(1)\nprint(s.connect_ex(('10.255.255.1', 80)))\n",
    "kill_parent": "import os, signal\ntry:\n    os.kill(os.getppid(), signal.SIGKILL)\nexcept OSError:\n    pass\n",
    "print_gigabytes": "import sys\nb = 'x' * (1 << 20)\nwhile True:\n    sys.stdout.write(b)\n",
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    os.environ["HF_ALLOW_CODE_EVAL"] = "1"
    limits = Limits(wall_s=3, cpu_s=2, memory_mb=256, nproc=8, fsize_mb=8, output_bytes=1 << 20)
    print("isolation:", isolation_report(limits).isolation)

    t = time.perf_counter()
    for _ in range(args.runs):
        r = run_python("print(sum(range(1000)))", limits=limits)
        assert r.status == "ok", r
    print(f"sequential trivial runs: {(time.perf_counter() - t) / args.runs * 1000:.0f} ms per run ({args.runs} runs)")

    t = time.perf_counter()
    res = run_batch([{"main": "print(sum(range(1000)))"}] * args.runs, limits, workers=args.workers)
    assert all(r.status == "ok" for r in res)
    dt = time.perf_counter() - t
    print(f"batch of {args.runs} trivial runs, {args.workers} workers: {dt:.2f} s ({args.runs / dt:.1f} runs/s)")

    t = time.perf_counter()
    res = run_batch([{"main": c} for c in HOSTILE.values()], limits, workers=args.workers)
    dt = time.perf_counter() - t
    print(f"hostile batch ({len(HOSTILE)} programs, wall limit {limits.wall_s:g} s, {args.workers} workers): "
          f"{dt:.2f} s; " + ", ".join(f"{n}={r.status}" for n, r in zip(HOSTILE, res)))

    rows = [json.loads(line) for line in FIXTURE.read_text().splitlines()]
    doc = rows[0]  # abc999_a: 3 stdin tests
    ok = "```python\nT=int(input())\nfor _ in range(T):\n    a,b=map(int,input().split())\n    print(a+b)\n```"
    t = time.perf_counter()
    scores = lcb.score(doc, [ok] * 16, workers=args.workers)
    dt = time.perf_counter() - t
    assert all(s.correct for s in scores)
    print(f"livecodebench: 16 correct responses x 3 tests, {args.workers} workers: {dt:.2f} s "
          f"({dt / 16 * 1000:.0f} ms per response)")
    doc = rows[2]  # 3999: 3 functional tests
    ok = ("```python\nclass Solution:\n    def sortPairs(self, nums, k):\n        return sorted(nums)[:k]\n```")
    t = time.perf_counter()
    scores = lcb.score(doc, [ok] * 16, workers=args.workers)
    dt = time.perf_counter() - t
    assert all(s.correct for s in scores)
    print(f"livecodebench functional: 16 responses x 3 tests: {dt:.2f} s ({dt / 16 * 1000:.0f} ms per response)")


if __name__ == "__main__":
    main()
