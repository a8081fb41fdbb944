"""Answer checking for math: the last `\\boxed{}` of a response against the gold, in worker processes.

`score_math(responses, golds)` returns one `Score` per response and never hangs or raises on model output:

1. `extract_boxed(response)` takes the content of the LAST `\\boxed{...}` (or `\\fbox{...}`, or `\\boxed 5`) in
   the parent process (a linear scan; a megabyte of text costs milliseconds). No box -> status "no_answer".
2. In a worker process, `harness.core.equivalence.equivalent(answer, gold)` decides (its docstring has the
   rules: one spelling per answer, the structure of several answers, tuples, intervals, units, exact numbers,
   numeric identity of expressions; nothing is simplified or expanded). An answer refused by its guards (too
   long, too deep, a value over 2^100000, ...) is wrong with status "error" and the reason in `Score.reason`.
   Identical (answer, gold) pairs in one call are checked once; parses are cached per worker.
3. Each sample has a budget of `timeout_s` seconds of the worker's CPU time (an interval timer on CPU time, so
   the verdict does not depend on how loaded the machine is). A worker hung in C code that no signal
   interrupts is killed by the parent once it has used `timeout_s + KILL_GRACE_S` CPU seconds on one sample (or
   after `WALL_FACTOR` times that in wall time, for a stopped process), and replaced. Every sample that timed
   out is tried once more, alone, with the full budget; if it times out again its status is "timeout" (wrong),
   and `Score.retried` says it was retried. Statuses are counted by the caller (results: `status_counts`).
4. Memory: each worker's address space is capped at `WORKER_MEMORY_MB` (an allocation beyond it fails, the sample
   is "error"), and a worker whose resident memory passed `WORKER_RECYCLE_MB` (caches) is replaced after its
   current sample. `ScoringPool.peak_rss_mb()` reports the largest resident size a worker reached.

Workers are a persistent pool of `python -m harness.core.scoring` processes (started once per calling process,
about a second; restarted only after a kill), so the trainer can call `score_math` once per batch without
process start-up. `workers=0` scores in the calling process (main thread only; no protection against
C-level hangs): for debugging. The pool is not thread-safe: call `score_math` from one thread.

Deviation from the paper: the paper checks "mathematical equivalence" of the last \\boxed{} without naming a
checker; the released code uses verl's math_dapo string normaliser. harness.core.equivalence accepts the
equivalent forms listed there and nothing an exact-match checker would reject as different numbers.
"""
from __future__ import annotations

import atexit
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait

from harness.core.answers import MAX_CHARS

KILL_GRACE_S = 1.0  # the parent kills a worker that used timeout_s + this CPU seconds on one sample
WALL_FACTOR = 10.0  # ... or that made no progress for this many times (timeout_s + KILL_GRACE_S) of wall time
CHUNK = 32  # at most this many samples per message to a worker
WORKER_MEMORY_MB = 3072  # address-space cap of a worker (RLIMIT_AS); its baseline is ~0.5 GB of mappings
WORKER_RECYCLE_MB = 700  # a worker whose resident memory passed this is replaced after its current sample
STATUSES = ("ok", "no_answer", "timeout", "error")


@dataclass(frozen=True)
class Score:
    """The verdict on one response. `extracted` is the answer as written (None when none was found); `reason`
    says why a sample is "error" or "timeout"; `retried`: it timed out once and was checked again."""
    correct: bool
    extracted: str | None
    status: str  # one of STATUSES
    reason: str = ""
    retried: bool = False


# ---------------------------------------------------------------- extraction (pure)

_BOX_RE = re.compile(r"\\(?:boxed|fbox)(?![a-zA-Z])")


def extract_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` / `\\fbox{...}` (braces matched) or `\\boxed x`; None if there is none
    or the last one is unbalanced (an earlier box is not used then: the final answer is the last one)."""
    if not isinstance(text, str):
        return None
    best = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    m = _BOX_RE.match(text, best) if best >= 0 else None
    if m is None:
        return None
    rest = text[m.end():]
    stripped = rest.lstrip()
    if stripped.startswith("{"):
        i0 = m.end() + (len(rest) - len(stripped)) + 1
        depth = 1
        for i in range(i0, len(text)):
            c = text[i]
            if c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
                if depth == 0:
                    return text[i0:i].strip()
        return None
    if rest[:1] == " " and stripped:  # "\\boxed 5" (TeX allows a single-token argument)
        return re.split(r"[\s$]", stripped, maxsplit=1)[0].rstrip(".") or None
    return None


def _clean_gold(gold: str) -> str:
    g = str(gold).strip()
    inner = extract_boxed(g)
    return (inner if inner is not None else g).strip()


# ---------------------------------------------------------------- one sample (runs in a worker)

class _SampleTimeout(BaseException):
    """Raised by the CPU-time timer; a BaseException so no `except Exception` in a library can swallow it."""


def _on_timer(signum, frame):  # noqa: ARG001
    raise _SampleTimeout()


def _check(answer: str, gold: str, timeout_s: float) -> tuple[bool, str, str]:
    """(correct, status, reason) for one extracted answer, within `timeout_s` seconds of this process's CPU time."""
    from harness.core.equivalence import Rejected, equivalent

    old = signal.signal(signal.SIGPROF, _on_timer)
    signal.setitimer(signal.ITIMER_PROF, timeout_s)
    try:
        return equivalent(answer, gold), "ok", ""
    except _SampleTimeout:
        return False, "timeout", f"over {timeout_s:g} s of CPU time"
    except Rejected as e:
        return False, "error", f"refused: {e}"
    except MemoryError:
        raise
    except RecursionError:
        return False, "error", "recursion too deep"
    except Exception as e:  # noqa: BLE001 - any failure on model output is a wrong answer, counted
        return False, "error", f"{type(e).__name__}"
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, old)


def _rss_mb() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return 0.0


def _worker(conn_in: Connection, conn_out: Connection) -> None:
    """Worker loop: receive (timeout_s, [(index, answer, gold), ...]), send (index, correct, status, reason) per
    item; ("bye", reason) before exiting on its own (memory)."""
    import logging
    import resource

    from harness.core.equivalence import equivalent

    equivalent("x^{2}+\\frac{1}{2}", "\\sqrt{2}x")  # import sympy and warm the parser before the first timed sample

    try:
        resource.setrlimit(resource.RLIMIT_AS, (WORKER_MEMORY_MB * 2**20, WORKER_MEMORY_MB * 2**20))
    except (ValueError, OSError):  # a lower hard limit already set: keep it
        pass
    logging.getLogger("latex2sympy2_extended").setLevel(logging.ERROR)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's business
    conn_out.send("ready")
    while True:
        try:
            msg = conn_in.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        timeout_s, items = msg
        for idx, answer, gold in items:
            try:
                correct, status, reason = _check(answer, gold, timeout_s)
            except MemoryError:
                conn_out.send((idx, False, "error", f"over {WORKER_MEMORY_MB} MB of memory"))
                conn_out.send(("bye", "memory"))
                return
            conn_out.send((idx, correct, status, reason))
            if _rss_mb() > WORKER_RECYCLE_MB:
                conn_out.send(("bye", "recycle"))
                return


# ---------------------------------------------------------------- the pool

class _Worker:
    """One `python -m harness.core.scoring` child process talking over two pipes (pickled messages).

    A plain subprocess rather than multiprocessing: spawn/forkserver re-import the caller's __main__ (a
    script without a main guard would run again in every worker), and fork would copy the parent's threads."""

    def __init__(self):
        r_to_child, w_to_child = os.pipe()
        r_from_child, w_from_child = os.pipe()
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "harness.core.scoring", str(r_to_child), str(w_from_child)],
            pass_fds=(r_to_child, w_from_child), stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        os.close(r_to_child)
        os.close(w_from_child)
        self.send_conn = Connection(w_to_child, readable=False)
        self.recv_conn = Connection(r_from_child, writable=False)
        self.ready = False

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        self.send_conn.close()
        self.recv_conn.close()

    def close(self) -> None:
        try:
            self.send_conn.send(None)
            self.proc.wait(timeout=2)
        except (OSError, subprocess.TimeoutExpired):
            pass
        self.kill()


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a live process (Linux /proc); 0.0 when it cannot be read."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def _peak_rss_mb(pid: int) -> float:
    """VmHWM (peak resident memory) of a live process in MB; 0.0 when it cannot be read."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return 0.0


class ScoringPool:
    """A fixed set of worker processes with per-sample CPU-time budgets; dead or hung workers are replaced."""

    def __init__(self, workers: int, wall_factor: float = WALL_FACTOR):
        if workers < 1:
            raise ValueError(f"ScoringPool needs at least one worker, got {workers}")
        self.size = workers
        self.wall_factor = wall_factor
        self._workers = [_Worker() for _ in range(workers)]
        self._peak_mb = 0.0  # largest VmHWM of the workers replaced so far
        self.replaced = 0  # workers killed or recycled

    def close(self) -> None:
        for w in self._workers:
            self._note_peak(w)
            w.close()

    def peak_rss_mb(self) -> float:
        """The largest resident memory (MB) any worker of this pool reached, live or replaced."""
        return max([self._peak_mb, *(_peak_rss_mb(w.proc.pid) for w in self._workers)])

    def _note_peak(self, worker) -> None:
        self._peak_mb = max(self._peak_mb, _peak_rss_mb(worker.proc.pid))

    def run(self, items: list[tuple[int, str, str]], timeout_s: float) -> dict[int, tuple[bool, str, str, bool]]:
        """Score (index, answer, gold) items; returns index -> (correct, status, reason, retried). Samples that
        time out are run again, one by one, with the full budget. Never raises on item content."""
        out = {i: (*v, False) for i, v in self._run(items, timeout_s, CHUNK).items()}
        again = [it for it in items if out[it[0]][1] == "timeout"]
        if again:
            out.update({i: (*v, True) for i, v in self._run(again, timeout_s, 1).items()})
        return out

    def _run(self, items, timeout_s: float, chunk: int) -> dict[int, tuple[bool, str, str]]:
        size = max(1, min(chunk, -(-len(items) // (4 * self.size))))  # small batches still use every worker
        queue = [items[i:i + size] for i in range(0, len(items), size)]
        queue.reverse()  # pop() from the end = first chunk first
        pending: dict[int, list[tuple[int, str, str]]] = {}  # worker -> items sent and not yet answered
        since: dict[int, tuple[float, float]] = {}  # worker -> (wall time, its CPU seconds) at its last progress
        out: dict[int, tuple[bool, str, str]] = {}
        cpu_limit = timeout_s + KILL_GRACE_S
        while queue or pending:
            for w, worker in enumerate(self._workers):
                if w not in pending and queue and worker.ready:
                    part = queue.pop()
                    worker.send_conn.send((timeout_s, part))
                    pending[w], since[w] = list(part), (time.monotonic(), _cpu_seconds(worker.proc.pid))
            by_conn = {wk.recv_conn: w for w, wk in enumerate(self._workers) if w in pending or not wk.ready}
            for c in wait(list(by_conn), timeout=0.05):
                w = by_conn[c]
                worker = self._workers[w]
                try:
                    while c.poll():
                        msg = c.recv()
                        if msg == "ready":
                            worker.ready = True
                        elif msg[0] == "bye":  # the worker leaves on its own (memory): replace it, requeue the rest
                            self._replace(w, pending, queue)
                            break
                        else:
                            idx, correct, status, reason = msg
                            out[idx] = (correct, status, reason)
                            pending[w] = [it for it in pending[w] if it[0] != idx]
                            since[w] = (time.monotonic(), _cpu_seconds(worker.proc.pid))
                except (EOFError, OSError):  # the worker died: its current item is an error
                    self._fail(w, pending, queue, out, "error", "the worker process died")
                    continue
                if w in pending and not pending[w]:
                    del pending[w]
            now = time.monotonic()
            for w in list(pending):
                wall0, cpu0 = since[w]
                cpu = _cpu_seconds(self._workers[w].proc.pid) - cpu0
                if cpu > cpu_limit or now - wall0 > self.wall_factor * cpu_limit:  # hung where no signal reaches
                    self._fail(w, pending, queue, out, "timeout",
                               f"killed after {cpu:.1f} s CPU / {now - wall0:.1f} s wall on one sample")
            if not any(wk.ready for wk in self._workers) and any(wk.proc.poll() is not None for wk in self._workers):
                raise RuntimeError("harness.core.scoring: worker processes exit at start-up; run "
                                   f"`{sys.executable} -m harness.core.scoring 0 1` to see why")
        return out

    def _replace(self, w, pending, queue) -> None:
        """Replace worker w; the items it has not answered are queued again."""
        items = pending.pop(w, [])
        self._note_peak(self._workers[w])
        self._workers[w].kill()
        self._workers[w] = _Worker()
        self.replaced += 1
        if items:
            queue.append(items)

    def _fail(self, w, pending, queue, out, status, reason) -> None:
        """Replace worker w: its current item gets `status`, the rest of its chunk is queued again."""
        items = pending.get(w, [])
        if items:
            out[items[0][0]] = (False, status, reason)
            pending[w] = items[1:]
        self._replace(w, pending, queue)


_POOL: dict[str, ScoringPool] = {}  # the process-wide pool, created on first use, closed at exit


def get_pool(workers: int) -> ScoringPool:
    """The shared pool with `workers` workers (recreated if a different size is asked for)."""
    pool = _POOL.get("pool")
    if pool is None or pool.size != workers:
        if pool is not None:
            pool.close()
        pool = _POOL["pool"] = ScoringPool(workers)
    return pool


@atexit.register
def close_pool() -> None:
    pool = _POOL.pop("pool", None)
    if pool is not None:
        pool.close()


MAX_DEFAULT_WORKERS = 16  # ~100 MB each; more rarely helps (scoring is a small share of an evaluation)


def default_workers() -> int:
    """The CPUs this process may use, at most MAX_DEFAULT_WORKERS."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        n = os.cpu_count() or 1
    return max(1, min(n, MAX_DEFAULT_WORKERS))


# ---------------------------------------------------------------- public entry point

def score_math(responses: list[str], golds: list[str], timeout_s: float = 5.0,
               workers: int | None = None) -> list[Score]:
    """Score `responses[i]` against `golds[i]` (the last \\boxed{} of the response; harness.core.equivalence).

    `timeout_s` bounds each sample's checking time (CPU seconds of a worker; a sample that runs out is retried
    once, see the module docstring); `workers` is the number of worker processes
    (default: the CPUs this process may use, at most 16; 0 = in this process). Never raises on the content
    of a response.
    """
    if len(responses) != len(golds):
        raise ValueError(f"score_math: {len(responses)} responses but {len(golds)} golds")
    if timeout_s <= 0:
        raise ValueError(f"score_math: timeout_s must be positive, got {timeout_s}")
    results: list[Score | None] = [None] * len(responses)
    extracted: list[str | None] = []
    pairs: dict[tuple[str, str], int] = {}  # distinct (answer, gold) -> item index: each is checked once
    pair_of: dict[int, int] = {}  # response index -> item index
    for i, (resp, gold) in enumerate(zip(responses, golds)):
        ans = extract_boxed(resp) if isinstance(resp, str) else None
        extracted.append(ans)
        if ans is None:
            results[i] = Score(False, None, "no_answer")
        elif len(ans) > MAX_CHARS:
            results[i] = Score(False, ans[:MAX_CHARS], "error", f"refused: answer of {len(ans)} characters "
                                                                 f"(limit {MAX_CHARS})")
        else:
            pair_of[i] = pairs.setdefault((ans, _clean_gold(gold)), len(pairs))
    items = [(j, a, g) for (a, g), j in pairs.items()]
    if items:
        workers = default_workers() if workers is None else workers
        if workers == 0:
            verdicts = {j: (*_check(a, g, timeout_s), False) for j, a, g in items}
        else:
            verdicts = get_pool(workers).run(items, timeout_s)
        for i, j in pair_of.items():
            correct, status, reason, retried = verdicts.get(j, (False, "error", "no verdict", False))
            results[i] = Score(bool(correct), extracted[i], status, reason, retried)
    return results  # type: ignore[return-value]


if __name__ == "__main__":  # a worker: python -m harness.core.scoring <read fd> <write fd>
    _worker(Connection(int(sys.argv[1]), writable=False), Connection(int(sys.argv[2]), readable=False))
