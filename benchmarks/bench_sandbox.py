"""Measure the sandbox: start-up cost per run, batch throughput, a hostile batch, LiveCodeBench scoring, and the
memory that hostile programs can take (all the processes of one sandbox, and several sandboxes at once).

    HF_ALLOW_CODE_EVAL=1 python benchmarks/bench_sandbox.py [--runs 40] [--workers 2] [--memory-workers 4]

Prints one line per measurement. Uses only the hand-written problems in tests/fixtures. The memory lines need
root (a memory cgroup around the runs measures the peak of everything they start, from outside); what it
contains per mode (root, bubblewrap, rlimits only) is measured by benchmarks/sandbox_containment.py.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from harness import sandbox
from harness.sandbox import Limits, isolation_mode, isolation_report, run_batch, run_python
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


# every process it can start takes all the memory it can get (touched), then reports: the sum is what counts
FANOUT = """
import os, time
r, w = os.pipe()
kids = 0
def grab():
    held = []
    try:
        while len(held) < 4096:
            held.append(b'x' * (1 << 20))
    except MemoryError:
        pass
    return len(held)
for _ in range(64):
    try:
        pid = os.fork()
    except OSError:
        break
    if pid == 0:
        os.write(w, b'%d\\n' % grab())
        time.sleep(1)
        os._exit(0)
    kids += 1
os.close(w)
total = grab() + sum(int(x) for x in os.fdopen(r).read().split())
print('processes', kids + 1, 'MiB', total)
"""

LCB_FANOUT = FANOUT.replace("print('processes', kids + 1, 'MiB', total)",  # the reason then carries the numbers
                            "raise RuntimeError(f'processes {kids + 1} MiB {total}')")


def _peak_of(script: str) -> tuple[str, float | None]:
    """Run `python -c script` inside a fresh memory cgroup (root): (its stdout, peak MiB of everything it ran)."""
    cg = sandbox.create_memory_cgroup(1 << 20)  # a limit far above anything here: measure only
    cmd = [sys.executable, "-c", script]
    if cg:
        cmd = ["sh", "-c", f'echo $$ > {cg[1]}/cgroup.procs && exec "$@"', "sh", *cmd]
    out = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, HF_ALLOW_CODE_EVAL="1"))
    peak = sandbox.close_memory_cgroup(cg)[1] if cg else None
    return out.stdout.strip() or out.stderr.strip()[-300:], peak


def memory(workers: int) -> None:
    limits = Limits(wall_s=10, cpu_s=5, memory_mb=256, nproc=8)
    out, peak = _peak_of(
        "from harness.sandbox import Limits, run_batch\n"
        f"L = Limits(wall_s=10, cpu_s=5, memory_mb={limits.memory_mb}, nproc={limits.nproc})\n"
        f"for r in run_batch([{{'main': {FANOUT!r}}}] * {workers}, L, workers={workers}):\n"
        "    print(r.status, r.stdout.strip(), r.peak_memory_mb)\n")
    print(f"memory, {workers} fan-out bombs at once (sandboxes of {limits.memory_mb} MiB = {limits.nproc} tasks x "
          f"{limits.process_memory_mb} MiB; bound {workers} x {limits.memory_mb} = {workers * limits.memory_mb} MiB): "
          f"peak of everything {peak if peak is None else round(peak)} MiB (the batch's own Python included); "
          + "; ".join(out.splitlines()))
    out, peak = _peak_of(
        "from harness.tasks.code import utils as U\n"
        "tests = [{'input': '1\\n', 'output': '1\\n', 'testtype': 'stdin'}]\n"
        f"print(U.run_tests({LCB_FANOUT!r}, tests, None, timeout_s=10, allow_code_execution=True))\n")
    print(f"memory, one LiveCodeBench response that is a fan-out bomb (MEMORY_MB={lcb.MEMORY_MB}, NPROC={lcb.NPROC}: "
          f"{lcb.MEMORY_MB // lcb.NPROC} MiB per process; was 8 x 2048): peak of everything "
          f"{peak if peak is None else round(peak)} MiB; {out}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--memory-workers", type=int, default=4)
    args = ap.parse_args()
    os.environ["HF_ALLOW_CODE_EVAL"] = "1"
    limits = Limits(wall_s=3, cpu_s=2, memory_mb=256, nproc=8, fsize_mb=8, output_bytes=1 << 20)
    print(f"mode: {isolation_mode(limits)[0]}; isolation: {isolation_report(limits).isolation}; "
          f"load {os.getloadavg()[0]:.1f}")
    memory(args.memory_workers)

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
