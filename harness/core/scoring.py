"""Answer checking for math: the last `\\boxed{}` of a response, checked against the gold with math-verify.

`score_math(responses, golds)` returns one `Score` per response and never hangs or raises on model output:

1. `extract_boxed(response)` takes the content of the LAST `\\boxed{...}` (or `\\fbox{...}`, or `\\boxed 5`)
   in the parent process (a linear scan; a megabyte of text costs milliseconds). No box -> status
   "no_answer", scored wrong. An answer longer than `MAX_ANSWER_CHARS` is not parsed: status "error", wrong.
2. In a worker process, gold and answer are each parsed with math-verify as `\\boxed{...}` and compared with
   `math_verify.verify`. Fallback (documented deviation): if math-verify does not find them equal, the two
   strings are compared after a light normalisation (`normalize_answer`: spaces, `$`, `\\left/\\right`,
   `\\text{}`, `^\\circ`, a trailing period), so answers sympy cannot parse (text, descriptions of functions)
   are still matched when written the same way as the gold. Shortcuts that give math-verify's verdict without
   sympy: equal normalised strings, and two plain decimal numbers (equal, or differing by > 1e-4 relative);
   after parsing, two constant expressions whose numeric values differ by > 1e-4 relative are "different"
   without math-verify's simplify (closer calls, percentages and degrees go to math-verify), and so are a
   number and an expression in variables that takes different values at two fixed points (it cannot be a
   constant in disguise such as sin^2 x + cos^2 x). Identical
   (answer, gold) pairs in one call are checked once; parses are cached per worker.
3. Each sample has a wall-clock budget of `timeout_s`, enforced twice: an interval timer inside the worker
   (math-verify's own SIGALRM timeouts are switched off; they fail outside the main thread), and, for hangs in
   C code that no signal interrupts (e.g. a huge integer power), the parent kills the worker after
   `timeout_s + KILL_GRACE_S`, marks the sample "timeout" and restarts the worker. A sample that raises is
   scored wrong with status "error", and so is one whose value could exceed 2**MAX_VALUE_BITS (a power tower
   such as 2^{2^{2^{2^{2^2}}}} or (10^{10})!, bounded from the parsed tree by `value_bits` without evaluating
   it): sympy would otherwise spend the whole timeout on it. Statuses are counted by the caller (metrics: `no_answer`).

Workers are a persistent pool of `python -m harness.core.scoring` processes (started once per calling process,
about a second; restarted only after a kill), so the trainer can call `score_math` once per batch without
process start-up. `workers=0` scores in the calling process (main thread only; no protection against
C-level hangs): for debugging. The pool is not thread-safe: call `score_math` from one thread.

Deviation from the paper: the paper checks "mathematical equivalence" of the last \\boxed{} without naming a
checker; the released code uses verl's math_dapo string normaliser. math-verify accepts more equivalent forms
(e.g. 0.5 vs \\frac{1}{2}); the string fallback keeps everything an exact-match checker would accept.
"""
from __future__ import annotations

import atexit
import math
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from functools import lru_cache
from multiprocessing.connection import Connection, wait

MAX_ANSWER_CHARS = 2_000  # a boxed answer longer than this is not parsed (scored wrong, status "error")
KILL_GRACE_S = 1.0  # the parent kills a worker that has not answered within timeout_s + this
CHUNK = 32  # at most this many samples per message to a worker
STATUSES = ("ok", "no_answer", "timeout", "error")


@dataclass(frozen=True)
class Score:
    """The verdict on one response. `extracted` is the answer as written (None when none was found)."""
    correct: bool
    extracted: str | None
    status: str  # one of STATUSES


# ---------------------------------------------------------------- extraction and normalisation (pure)

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


_TEXT_RE = re.compile(r"\\(?:text|textbf|mathrm|mbox|textit|mathbf)\s*\{([^{}]*)\}")


def normalize_answer(s: str) -> str:
    """Light string normalisation for the fallback comparison (never used to declare two answers different)."""
    s = str(s).strip()
    s = _TEXT_RE.sub(r"\1", s)
    for a, b in (("\\left", ""), ("\\right", ""), ("\\!", ""), ("\\,", ""), ("\\;", ""), ("\\ ", ""),
                 ("^{\\circ}", ""), ("^\\circ", ""), ("\\circ", ""), ("$", ""), ("\\dfrac", "\\frac"),
                 ("\\tfrac", "\\frac"), ("\\%", ""), ("%", "")):
        s = s.replace(a, b)
    s = re.sub(r"\s+", "", s)
    return s.rstrip(".")  # case is kept: x and X, e and E can be different answers


def _clean_gold(gold: str) -> str:
    g = str(gold).strip()
    inner = extract_boxed(g)
    if inner is not None:
        g = inner
    return g.replace("$", "").strip()


# ---------------------------------------------------------------- one sample (runs in a worker)

class _SampleTimeout(BaseException):
    """Raised by the interval timer; a BaseException so math-verify's `except Exception` cannot swallow it."""


def _on_alarm(signum, frame):  # noqa: ARG001
    raise _SampleTimeout()


MAX_VALUE_BITS = 1e6  # an expression whose value may exceed 2**(this) is not evaluated (power towers)


class _TooBig(Exception):
    pass


def value_bits(e) -> float:
    """An upper bound of log2|value| of a parsed sympy expression, from its tree and without evaluating it
    (inf when over 2**60 bits). Symbols count as 0 bits: only numeric growth is bounded."""
    import sympy

    if isinstance(e, sympy.Integer):
        return float(abs(int(e)).bit_length())
    if isinstance(e, sympy.Rational):
        return float(max(abs(e.p).bit_length(), e.q.bit_length()))
    if isinstance(e, sympy.Number) or not isinstance(e, sympy.Basic) or not e.args:
        return 64.0 if isinstance(e, sympy.Number) else 0.0
    if isinstance(e, (sympy.Pow, sympy.exp)):
        base, ex = (e.base, e.exp) if isinstance(e, sympy.Pow) else (sympy.E, e.args[0])
        x = value_bits(ex)
        if x > 60:
            return math.inf
        b = value_bits(base)
        if base.free_symbols:
            return b + x + 1  # x**(big) stays symbolic: sympy does not expand it
        return max(b, 2.0) * 2.0 ** x
    if isinstance(e, sympy.factorial):
        x = value_bits(e.args[0])
        return math.inf if x > 60 else 2.0 ** x * (x + 1)
    return sum(value_bits(a) for a in e.args) + 1.0


@lru_cache(maxsize=8192)
def _parse(text: str) -> tuple:
    """math-verify's parse of `\\boxed{text}`, cached per worker (golds repeat k times; answers repeat too).
    math-verify's own cache holds 20 entries."""
    from math_verify import LatexExtractionConfig, parse

    cfg = [LatexExtractionConfig(boxed_match_priority=0)]
    return tuple(parse("\\boxed{" + text + "}", extraction_config=cfg, parsing_timeout=None))


def _clearly_different_numbers(g: tuple, p: tuple, raw: str) -> bool:
    """Both sides a single plain number (no symbols, sets, relations; no % or degrees in the text) whose values
    differ by more than 1e-4 relative: math-verify would say "different" too, after a slow simplify."""
    import sympy

    if "%" in raw or "circ" in raw:
        return False
    a, b = g[0] if g else None, p[0] if p else None
    if not all(isinstance(x, sympy.Expr) and x.is_number and not isinstance(x, (sympy.Tuple, sympy.Set))
               for x in (a, b)):
        return False
    try:
        x, y = complex(sympy.N(a, 20)), complex(sympy.N(b, 20))
    except Exception:  # noqa: BLE001 - no shortcut; math-verify decides
        return False
    if any(map(math.isnan, (x.real, x.imag, y.real, y.imag))):
        return False
    return abs(x - y) > 1e-4 * max(1.0, abs(x))


def _varies(e) -> bool:
    """True when the expression `e` (with free symbols) takes clearly different values at two fixed points:
    it is not a constant in disguise (like sin(x)^2 + cos(x)^2), so it cannot equal a number."""
    symbols = sorted(e.free_symbols, key=str)
    try:
        v1 = complex(e.evalf(15, subs={s: 0.5 + 0.1 * i for i, s in enumerate(symbols)}))
        v2 = complex(e.evalf(15, subs={s: 1.7 + 0.13 * i for i, s in enumerate(symbols)}))
    except Exception:  # noqa: BLE001 - sympy raises many types here (e.g. floor at a float); then no shortcut
        return False
    if any(map(math.isnan, (v1.real, v1.imag, v2.real, v2.imag))) or math.inf in (abs(v1), abs(v2)):
        return False
    return abs(v1 - v2) > 1e-6 * max(1.0, abs(v1))


def _number_vs_function(g: tuple, p: tuple) -> bool:
    """One side a plain number, the other an expression in variables that varies: math-verify's verdict is
    "different" (after a slow simplify of their difference)."""
    import sympy

    a, b = g[0] if g else None, p[0] if p else None
    if not all(isinstance(x, sympy.Expr) and not isinstance(x, (sympy.Tuple, sympy.Set)) for x in (a, b)):
        return False
    if a.is_number == b.is_number:
        return False
    return _varies(b if a.is_number else a)


def _verify(answer: str, gold: str) -> bool:
    import sympy
    from math_verify import verify

    g, p = _parse(gold), _parse(answer)
    if any(isinstance(x, sympy.Basic) and value_bits(x) > MAX_VALUE_BITS for x in [*g, *p]):
        raise _TooBig()
    if not (g and p):
        return False
    if _clearly_different_numbers(g, p, gold + answer) or _number_vs_function(g, p):
        return False
    return bool(verify(list(g), list(p), timeout_seconds=None))


_NUMBER_RE = re.compile(r"-?(?:\d+(?:\.\d*)?|\.\d+)")
_THOUSANDS_RE = re.compile(r"^-?\d{1,3}(?:,\d{3})+(?:\.\d*)?$")


def _fast_verdict(answer: str, gold: str) -> bool | None:
    """Verdicts that need no sympy: equal normalised strings, or two plain decimal numbers that are equal or
    clearly different (relative difference > 1e-4; closer calls go to math-verify). None = undecided."""
    a, g = normalize_answer(answer), normalize_answer(gold)
    if a and a == g:
        return True
    a, g = _THOUSANDS_RE.sub(lambda m: m.group(0).replace(",", ""), a), _THOUSANDS_RE.sub(
        lambda m: m.group(0).replace(",", ""), g)  # 1,000 -> 1000, but a list 27,54 stays a list
    if _NUMBER_RE.fullmatch(a) and _NUMBER_RE.fullmatch(g):
        x, y = float(a), float(g)
        if x == y:
            return True
        if abs(x - y) > 1e-4 * max(1.0, abs(y)):
            return False
    return None


def _check(answer: str, gold: str, timeout_s: float) -> tuple[bool, str]:
    """(correct, status) for one extracted answer; bounded by an interval timer of `timeout_s` seconds."""
    fast = _fast_verdict(answer, gold)
    if fast is not None:
        return fast, "ok"
    old = signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout_s)
    try:
        return _verify(answer, gold), "ok"
    except _SampleTimeout:
        return False, "timeout"
    except _TooBig:
        return False, "error"
    except Exception:  # noqa: BLE001 - any failure on model output is a wrong answer, counted
        return False, "error"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _worker(conn_in: Connection, conn_out: Connection) -> None:
    """Worker loop: receive (timeout_s, [(index, answer, gold), ...]), send (index, correct, status) per item."""
    import logging

    import math_verify  # noqa: F401 - import once, before the first timed sample

    logging.getLogger("math_verify").setLevel(logging.ERROR)  # "timeout disabled" warnings: we time out here
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
            correct, status = _check(answer, gold, timeout_s)
            conn_out.send((idx, correct, status))


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


class ScoringPool:
    """A fixed set of worker processes with per-sample outer timeouts; dead or hung workers are replaced."""

    def __init__(self, workers: int):
        if workers < 1:
            raise ValueError(f"ScoringPool needs at least one worker, got {workers}")
        self.size = workers
        self._workers = [_Worker() for _ in range(workers)]

    def close(self) -> None:
        for w in self._workers:
            w.close()

    def run(self, items: list[tuple[int, str, str]], timeout_s: float) -> dict[int, tuple[bool, str]]:
        """Score (index, answer, gold) items; returns index -> (correct, status). Never raises on item content."""
        size = max(1, min(CHUNK, -(-len(items) // (4 * self.size))))  # small batches still use every worker
        queue = [items[i:i + size] for i in range(0, len(items), size)]
        queue.reverse()  # pop() from the end = first chunk first
        pending: dict[int, list[tuple[int, str, str]]] = {}  # worker -> items sent and not yet answered
        last: dict[int, float] = {}  # worker -> time of its last progress
        out: dict[int, tuple[bool, str]] = {}
        deadline = timeout_s + KILL_GRACE_S
        while queue or pending:
            for w, worker in enumerate(self._workers):
                if w not in pending and queue and worker.ready:
                    chunk = queue.pop()
                    worker.send_conn.send((timeout_s, chunk))
                    pending[w], last[w] = list(chunk), time.monotonic()
            by_conn = {wk.recv_conn: w for w, wk in enumerate(self._workers) if w in pending or not wk.ready}
            for c in wait(list(by_conn), timeout=0.05):
                w = by_conn[c]
                worker = self._workers[w]
                try:
                    while c.poll():
                        msg = c.recv()
                        if msg == "ready":
                            worker.ready = True
                            continue
                        idx, correct, status = msg
                        out[idx] = (correct, status)
                        pending[w] = [it for it in pending[w] if it[0] != idx]
                        last[w] = time.monotonic()
                except (EOFError, OSError):  # the worker died (e.g. out of memory): its current item is an error
                    self._fail(w, pending, queue, out, "error")
                    continue
                if w in pending and not pending[w]:
                    del pending[w]
            now = time.monotonic()
            for w in [w for w in pending if now - last[w] > deadline]:
                self._fail(w, pending, queue, out, "timeout")  # hung where no signal reaches (C code)
            if not any(wk.ready for wk in self._workers) and any(wk.proc.poll() is not None for wk in self._workers):
                raise RuntimeError("harness.core.scoring: worker processes exit at start-up; run "
                                   f"`{sys.executable} -m harness.core.scoring 0 1` to see why")
        return out

    def _fail(self, w, pending, queue, out, status) -> None:
        """Replace worker w: its current item gets `status`, the rest of its chunk is queued again."""
        items = pending.pop(w, [])
        self._workers[w].kill()
        self._workers[w] = _Worker()
        if items:
            out[items[0][0]] = (False, status)
            if items[1:]:
                queue.append(items[1:])


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
    """Score `responses[i]` against `golds[i]` (the last \\boxed{} of the response, math-verify + fallback).

    `timeout_s` bounds each sample's wall-clock checking time; `workers` is the number of worker processes
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
        elif len(ans) > MAX_ANSWER_CHARS:
            results[i] = Score(False, ans[:MAX_ANSWER_CHARS], "error")
        else:
            pair_of[i] = pairs.setdefault((ans, _clean_gold(gold)), len(pairs))
    items = [(j, a, g) for (a, g), j in pairs.items()]
    if items:
        workers = default_workers() if workers is None else workers
        if workers == 0:
            verdicts = {j: _check(a, g, timeout_s) for j, a, g in items}
        else:
            verdicts = get_pool(workers).run(items, timeout_s)
        for i, j in pair_of.items():
            correct, status = verdicts.get(j, (False, "error"))
            results[i] = Score(bool(correct), extracted[i], status)
    return results  # type: ignore[return-value]


if __name__ == "__main__":  # a worker: python -m harness.core.scoring <read fd> <write fd>
    _worker(Connection(int(sys.argv[1]), writable=False), Connection(int(sys.argv[2]), readable=False))
