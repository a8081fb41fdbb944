"""LiveCodeBench (code generation): docs, prompt, and the scorer that runs each response in the sandbox.

Data: rows in the layout of the hub dataset `livecodebench/code_generation_lite` (`question_id`,
`question_title`, `question_content`, `platform`, `contest_date`, `starter_code`, `difficulty`,
`public_test_cases` (a JSON list of `{"input", "output", "testtype"}`), `private_test_cases` (the same, or
base64 of zlib of pickle of that JSON string), `metadata` (a JSON object; `func_name` for functional problems)).
The pickled form is never unpickled as such (a row may come from a user's file or a hub mirror): its opcodes
are checked to build plain data only, then it is read by an Unpickler that refuses every global; anything else
is refused with a ValueError naming the row's `question_id` (`decode_tests`).
`process_docs` keeps the problems whose `contest_date` lies in the paper's window [2024-08-01, 2025-02-01)
(LiveCodeBench v5 as used in the paper) and adds `problem` and `gold`; a window variant is one YAML with
`include: livecodebench.yaml` and `process_docs: !function utils.<a window_docs(...) function>`.

Scoring (`score`), as LiveCodeBench's own grader (lcb_runner/evaluation/testing_util.py) unless stated:
- the code is the content of the LAST complete fenced block (```python ... ``` or ``` ... ```) of the response;
  none -> status "no_answer". (LCB takes the first block of chat outputs; the paper's models reason at length
  and write the final program last.)
- every test (public + private) must pass. Standard-input problems: the program's stdout and the expected
  output are compared line by line after stripping; a line also matches if both parse as the same list of
  decimals. Functional problems (`starter_code`, `metadata.func_name`): each input line is JSON, the method of
  `Solution()` (or a top-level function) is called, a tuple result becomes a list, and the result must equal
  the JSON-decoded expected output. The same stdlib names as LCB's grader are imported before the solution, and
  the recursion limit is 50000.
- each test runs in a fresh forked process (deviation: LCB runs them in one process) with a
  `timeout_s` wall limit (LCB's default, 6 s); the first failing test (error, timeout) stops the run. The whole
  response runs in one `harness.sandbox` process tree (see docs/ood.md) of at most NPROC tasks and MEMORY_MB
  in all (512 MiB of address space per process; deviation: LCB sets no memory limit): a response that
  misbehaves in any way is scored wrong, with `status` ("ok" for a program that ran, "no_answer", "timeout",
  "error") and a `reason`.
- before the first response, one trivial program is run (`harness.sandbox.check_sandbox`, once per process),
  then one known-correct solution through the driver (`check_driver`): if either fails on this machine, scoring
  raises instead of reporting every response as wrong; the first also logs one line saying what the sandbox
  isolates here (a warning when only rlimits apply).
- the sandbox only receives the test inputs; the expected outputs stay in the harness, which compares them, so
  a program cannot report its own success. The driver's result channel is out of the program's reach (see
  DRIVER) and its protocol is strict (`parse_records`): one record per test, ids 0..n-1 in order, anything else
  fails the response.
"""
# No `from __future__ import annotations` here: lm-eval executes this file as a module that is not yet in
# sys.modules, and dataclasses cannot resolve string annotations then (CodeScore below).
import base64
import functools
import io
import json
import math
import pickle
import pickletools
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation

from harness.tasks import count_responses  # noqa: F401  (the YAML's process_results: utils.count_responses)
from harness.sandbox import CodeExecutionNotAllowed, Limits, check_sandbox, max_workers, require_opt_in, run_python
from harness.core.scoring import Score

PAPER_WINDOW = ("2024-08-01", "2025-02-01")  # [start, end): LiveCodeBench v5 problems as in the paper
TIMEOUT_S = 6.0  # per test, wall clock (LCB's default)
MAX_TOTAL_S = 600.0  # at most this long for all tests of one response
MEMORY_MB = 2048  # one response's sandbox, all its processes together (deviation: LCB sets no memory limit)
NPROC = 4  # tasks per response: the driver, a test's process, and two more (a thread, a helper process);
#           each process gets MEMORY_MB // NPROC = 512 MiB of address space
LCB_MODULES = ("string", "re", "datetime", "collections", "heapq", "bisect", "copy", "math", "random",
               "statistics", "itertools", "functools", "operator", "io", "sys", "json", "builtins", "typing")


@dataclass(frozen=True)
class CodeScore(Score):
    """A Score with the reason for a failure (first failing test, error message); "" when correct."""
    reason: str = ""


# ---------------------------------------------------------------- data

def _date(value) -> datetime:
    if isinstance(value, datetime):
        return value.replace(tzinfo=None)
    return datetime.fromisoformat(str(value)).replace(tzinfo=None)


# Pickle opcodes that build plain data only (str, bytes, numbers, None, bools, lists, tuples, sets, dicts and
# memo references). Everything that can name or call an object (GLOBAL, STACK_GLOBAL, INST, OBJ, REDUCE,
# BUILD, NEWOBJ*, EXT*, PERSID, BINPERSID) is refused before anything is unpickled.
PLAIN_OPCODES = frozenset("""
    PROTO FRAME STOP MARK POP POP_MARK DUP NONE NEWTRUE NEWFALSE INT BININT BININT1 BININT2 LONG LONG1 LONG4
    FLOAT BINFLOAT STRING BINSTRING SHORT_BINSTRING BINBYTES SHORT_BINBYTES BINBYTES8 BYTEARRAY8 UNICODE
    SHORT_BINUNICODE BINUNICODE BINUNICODE8 EMPTY_LIST APPEND APPENDS LIST EMPTY_TUPLE TUPLE TUPLE1 TUPLE2 TUPLE3
    EMPTY_DICT DICT SETITEM SETITEMS EMPTY_SET ADDITEMS FROZENSET PUT BINPUT LONG_BINPUT MEMOIZE GET BINGET
    LONG_BINGET""".split())
MAX_DECODED_BYTES = 1 << 30  # a compressed test field may not inflate beyond this


class _PlainUnpickler(pickle.Unpickler):
    """Refuses every global and persistent id: only plain data can come out (a second line behind the opcode
    check in `_unpickle_plain`)."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"refused global {module}.{name}")

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("refused persistent id")


def _unpickle_plain(field: str) -> object:
    """The dataset's compressed form (base64 of zlib of a pickle) -> plain data, without ever calling or
    importing anything named by the data. Raises ValueError on anything else."""
    try:
        raw = base64.b64decode(field.encode("ascii"), validate=True)
        inflate = zlib.decompressobj()
        data = inflate.decompress(raw, MAX_DECODED_BYTES)
    except (UnicodeEncodeError, ValueError, zlib.error) as e:
        raise ValueError(f"neither JSON nor base64+zlib ({type(e).__name__}: {e})") from None
    if inflate.unconsumed_tail:
        raise ValueError(f"decompresses to more than {MAX_DECODED_BYTES >> 20} MiB")
    try:
        bad = sorted({op.name for op, _, _ in pickletools.genops(data)} - PLAIN_OPCODES)
    except ValueError as e:
        raise ValueError(f"not a valid pickle ({e})") from None
    if bad:
        raise ValueError(f"the pickle would construct or call objects (opcodes {', '.join(bad)})")
    try:
        return _PlainUnpickler(io.BytesIO(data)).load()
    except Exception as e:  # noqa: BLE001 - whatever the bytes are, the row is refused by name
        raise ValueError(f"not a plain-data pickle ({type(e).__name__}: {e})") from None


def _check_tests(tests: object) -> list[dict]:
    """A list of {"input": str, "output": str, "testtype": str} (other string keys allowed), else ValueError."""
    if not isinstance(tests, list):
        raise ValueError(f"expected a list of tests, got {type(tests).__name__}")
    for j, t in enumerate(tests):
        if not (isinstance(t, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in t.items())
                and {"input", "output", "testtype"} <= set(t)):
            raise ValueError(f"test {j} is not an object of strings with input, output and testtype")
    return tests


def decode_tests(field, question_id: str = "?", key: str = "test_cases") -> list[dict]:
    """A `*_test_cases` field -> list of {"input", "output", "testtype"}: a list, JSON text, or the dataset's
    compressed form (base64 of zlib of a pickled JSON string), decoded without unpickling anything but plain
    data. Anything else raises ValueError naming the row (`question_id`) and the field (`key`)."""
    if not field:
        return []
    try:
        if isinstance(field, list):
            return _check_tests(field)
        if not isinstance(field, str):
            raise ValueError(f"a {type(field).__name__}, not a list or a string")
        try:
            tests = json.loads(field)
        except json.JSONDecodeError:
            tests = _unpickle_plain(field)
            if isinstance(tests, str):  # the dataset pickles the JSON text
                tests = json.loads(tests)
        return _check_tests(tests)
    except (ValueError, RecursionError) as e:  # JSONDecodeError is a ValueError
        raise ValueError(f"livecodebench row question_id={question_id!r}: {key} refused: {e}") from None


def tests_of(doc: dict) -> tuple[list[dict], str | None]:
    """All tests of a doc (public first) and the function name (None for standard-input problems)."""
    qid = doc.get("question_id")
    tests = (decode_tests(doc.get("public_test_cases"), qid, "public_test_cases")
             + decode_tests(doc.get("private_test_cases"), qid, "private_test_cases"))
    meta = doc.get("metadata") or "{}"
    meta = json.loads(meta) if isinstance(meta, str) else dict(meta)
    fn_name = meta.get("func_name")
    kinds = {t.get("testtype") for t in tests}
    if not tests:
        raise ValueError(f"{doc.get('question_id')}: no tests")
    if kinds - {"stdin", "functional"} or len(kinds) != 1:
        raise ValueError(f"{doc.get('question_id')}: test types {sorted(map(str, kinds))}")
    if ("functional" in kinds) != bool(fn_name):
        raise ValueError(f"{doc.get('question_id')}: functional tests need metadata.func_name and vice versa")
    return tests, fn_name


def window_docs(start: str | None, end: str | None):
    """A process_docs function keeping rows with start <= contest_date < end (None = open)."""
    lo = _date(start) if start else None
    hi = _date(end) if end else None

    def process(dataset):
        def keep(d):
            t = _date(d["contest_date"])
            return (lo is None or t >= lo) and (hi is None or t < hi)

        kept = dataset.filter(keep)
        if len(kept) == 0:
            raise ValueError(f"livecodebench: no problem with contest_date in [{start}, {end}) among "
                             f"{len(dataset)} rows")
        return kept.map(lambda d: {"problem": d["question_content"], "gold": _gold(d)})

    return process


def _gold(d: dict) -> str:
    tests, fn_name = tests_of(d)  # also validates the row before any generation
    return f"{len(tests)} tests, " + (f"functional {fn_name}" if fn_name else "stdin/stdout")


process_docs = window_docs(*PAPER_WINDOW)
process_all = window_docs(None, None)


def doc_to_text(doc: dict) -> str:
    """LCB's generic prompt, inside the paper's User/Assistant frame (zero-shot)."""
    if doc.get("starter_code"):
        fmt = ("You will use the following starter code to write the solution to the problem and enclose your "
               f"code within delimiters.\n```python\n{doc['starter_code']}\n```")
    else:
        fmt = ("Read the inputs from stdin solve the problem and write the answer to stdout (do not directly test "
               "on the sample inputs). Enclose your code within delimiters as follows.\n```python\n# YOUR CODE HERE\n```")
    return (f"User:\n### Question:\n{doc['question_content']}\n\n### Format: {fmt}\n\n"
            "### Answer: (use the provided format with backticks)\n\nAssistant:\n")


# ---------------------------------------------------------------- extraction and comparison (pure)

def extract_code(response: str) -> str | None:
    """The content of the last complete ``` fenced block (any language tag), or None."""
    if not isinstance(response, str):
        return None
    lines = response.split("\n")
    fences = [i for i, line in enumerate(lines) if line.strip().startswith("```")]
    blocks, i = [], 0
    while i + 1 < len(fences):
        blocks.append((fences[i], fences[i + 1]))
        i += 2
    if not blocks:
        return None
    a, b = blocks[-1]
    code = "\n".join(lines[a + 1:b])
    return code if code.strip() else None


def _lines(s: str) -> list[str]:
    return [line.strip() for line in s.strip().split("\n")]


def _decimals(line: str) -> list[Decimal] | None:
    try:
        return [Decimal(x) for x in line.split()]
    except (InvalidOperation, ValueError):
        return None


def stdout_matches(output: str, expected: str) -> bool:
    """LCB's stdin/stdout check: same number of stripped lines, each equal or equal as lists of decimals."""
    got, want = _lines(output), _lines(expected)
    if len(got) != len(want):
        return False
    for g, w in zip(got, want):
        if g == w:
            continue
        dg, dw = _decimals(g), _decimals(w)
        if dg is None or dw is None or dg != dw:
            return False
    return True


def return_matches(output_json: str, expected: str) -> bool:
    """LCB's functional check: the JSON-decoded return value equals the JSON-decoded expected output."""
    try:
        return json.loads(output_json) == json.loads(expected)
    except (json.JSONDecodeError, TypeError, ValueError):
        return False


# ---------------------------------------------------------------- the program run in the sandbox

PREAMBLE = ("".join(f"from {m} import *\n" for m in LCB_MODULES) + "import " + ", ".join(LCB_MODULES)
            + "\nsys.setrecursionlimit(50000)\n")

DRIVER = r'''
import ctypes, json, os, signal, sys, traceback
# The verdict channel is out of the tested program's reach: this process is made non-dumpable first (a
# process of the same uid can then neither ptrace it nor take its descriptors with pidfd_getfd or
# /proc/<pid>/fd), each test runs in a forked child that closes every descriptor but its own stdin/stdout/
# stderr files before the program runs, and the work dir (which the program can write) is dropped from the
# import path so that nothing it leaves there is ever imported here.
if ctypes.CDLL(None).prctl(4, 0, 0, 0, 0) != 0:  # PR_SET_DUMPABLE, 0
    sys.stdout.write(json.dumps({"i": -1, "status": "error", "reason": "driver: cannot make itself non-dumpable"}) + "\n")
    sys.exit(0)
sys.path[:] = [p for p in sys.path if p not in ("", os.getcwd())]
REQ = json.loads(sys.stdin.read())
RESULT = os.fdopen(os.dup(1), "w")
_null = os.open(os.devnull, os.O_WRONLY)
os.dup2(_null, 1)
os.close(_null)


def emit(**d):
    RESULT.write(json.dumps(d) + "\n")
    RESULT.flush()


class _Timeout(BaseException):
    pass


def _alarm(signum, frame):
    raise _Timeout()


def _redirect(path, fd, flags):
    f = os.open(path, flags, 0o600)
    os.dup2(f, fd)
    os.close(f)


def child(code, src, inp):
    status = 0
    try:
        _redirect("stdin.txt", 0, os.O_RDONLY)
        _redirect("stdout.txt", 1, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        _redirect("stderr.txt", 2, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.closerange(3, os.sysconf("SC_OPEN_MAX"))  # the result pipe and anything else of the driver's
        sys.stdin = open(0, "r", closefd=False)
        sys.stdout = open(1, "w", closefd=False)
        sys.stderr = open(2, "w", closefd=False)
        fn_name = REQ["fn_name"]
        g = {"__name__": "__main__" if fn_name is None else "solution", "__builtins__": __builtins__}
        try:
            exec(code, g)
            if fn_name is not None:
                obj = g["Solution"]() if "class Solution" in src and "Solution" in g else None
                fn = getattr(obj, fn_name) if obj is not None else g[fn_name]
                out = fn(*[json.loads(line) for line in inp.split("\n")])
                if isinstance(out, tuple):
                    out = list(out)
                with open("return.json", "w") as f:
                    json.dump(out, f)
        except SystemExit:
            pass
    except BaseException:
        traceback.print_exc()
        status = 1
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:
        pass
    os._exit(status)


def tail(path, n=300):
    try:
        with open(path, errors="replace") as f:
            return f.read()[-n:]
    except OSError:
        return ""


def main():
    src = open("solution.py", encoding="utf-8").read()
    try:
        code = compile(REQ["preamble"] + src, "solution.py", "exec")
    except BaseException as e:
        emit(i=-1, status="error", reason="does not compile: " + repr(e)[:300])
        return
    signal.signal(signal.SIGALRM, _alarm)
    for i, inp in enumerate(REQ["inputs"]):
        for p in ("stdout.txt", "stderr.txt", "return.json"):
            if os.path.exists(p):
                os.remove(p)
        with open("stdin.txt", "w") as f:
            f.write(inp if REQ["fn_name"] is None else "")
        pid = os.fork()
        if pid == 0:
            child(code, src, inp)
        signal.setitimer(signal.ITIMER_REAL, REQ["timeout_s"])
        try:
            _, st = os.waitpid(pid, 0)
            signal.setitimer(signal.ITIMER_REAL, 0)
        except _Timeout:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            emit(i=i, status="timeout", reason="test %d: over %gs" % (i, REQ["timeout_s"]))
            return
        if not os.WIFEXITED(st) or os.WEXITSTATUS(st) != 0:
            sig = os.WTERMSIG(st) if os.WIFSIGNALED(st) else 0
            why = {signal.SIGXCPU: "CPU time limit", signal.SIGKILL: "killed (CPU time or memory limit)",
                   signal.SIGXFSZ: "output/file size limit"}.get(sig, "signal %d" % sig if sig else "")
            err = tail("stderr.txt").strip().splitlines()
            emit(i=i, status="error", reason="test %d: %s" % (i, why or (err[-1] if err else "exit status %d" % os.WEXITSTATUS(st))))
            return
        path = "stdout.txt" if REQ["fn_name"] is None else "return.json"
        cap = REQ["max_output"][i]
        try:
            with open(path, errors="replace") as f:
                out = f.read(cap + 1)
        except OSError:
            emit(i=i, status="error", reason="test %d: no return value written" % i)
            return
        if len(out) > cap:
            emit(i=i, status="error", reason="test %d: output much longer than expected" % i)
            return
        emit(i=i, status="ok", output=out)


main()
'''


# ---------------------------------------------------------------- scoring

def _limits(n_tests: int, timeout_s: float, memory_mb: int) -> Limits:
    total = min(MAX_TOTAL_S, timeout_s * n_tests + 5.0)
    return Limits(wall_s=total, cpu_s=int(math.ceil(timeout_s)) + 1, memory_mb=memory_mb, nproc=NPROC,
                  fsize_mb=64, output_bytes=64 << 20)


def parse_records(stdout: str, n_tests: int) -> tuple[list[dict], str]:
    """The driver's result lines -> (records, "") or (records so far, what breaks the protocol).

    Strict: every line one JSON object ending in a newline; record k is for test k (ids 0, 1, ... in order,
    none repeated or skipped); "ok" records carry an "output" string; a failure record ("error" / "timeout"
    with a "reason") ends the run and is the last line; at most n_tests records; or a single compile failure
    (i = -1). Anything else (a garbled line, a duplicate, an out-of-order id) is a violation: the response
    fails."""
    if not stdout:
        return [], ""
    if not stdout.endswith("\n"):
        return [], "the last line is incomplete"
    records: list[dict] = []
    for k, line in enumerate(stdout[:-1].split("\n")):
        try:
            rec = json.loads(line)
        except ValueError:
            return records, f"line {k + 1} is not JSON"
        if not isinstance(rec, dict) or rec.get("status") not in ("ok", "error", "timeout") \
                or type(rec.get("i")) is not int:
            return records, f"line {k + 1} is not a result record"
        if records and records[-1]["status"] != "ok":
            return records, f"line {k + 1} follows a failure record"
        if rec["status"] == "ok" and not isinstance(rec.get("output"), str):
            return records, f"line {k + 1}: an ok record without an output string"
        compile_error = rec["i"] == -1 and k == 0 and rec["status"] == "error"
        if rec["i"] != k and not compile_error:
            return records, f"line {k + 1} has test id {rec['i']}, expected {k}"
        if k >= n_tests:
            return records, f"more than {n_tests} records"
        records.append(rec)
    return records, ""


def run_tests(code: str, tests: list[dict], fn_name: str | None, timeout_s: float = TIMEOUT_S,
              memory_mb: int | None = None, allow_code_execution: bool | None = None) -> tuple[bool, str, str]:
    """Run `code` on every test in the sandbox: (all passed, status, reason). Passes only when the sandbox ran
    cleanly and the driver reported exactly one "ok" record per test, in order, each matching the expected
    output (which never enters the sandbox)."""
    request = {"inputs": [t["input"] for t in tests], "fn_name": fn_name, "timeout_s": timeout_s,
               "preamble": PREAMBLE, "max_output": [2 * len(t["output"]) + 1000 for t in tests]}
    res = run_python(DRIVER, stdin=json.dumps(request), files={"solution.py": code},
                     limits=_limits(len(tests), timeout_s, memory_mb or MEMORY_MB),
                     allow_code_execution=allow_code_execution)
    records, violation = parse_records(res.stdout, len(tests))
    run_status = "timeout" if res.status == "timeout" else "error"
    if violation:
        return False, run_status, f"result protocol violated: {violation}" + (
            f" ({res.status}: {res.reason})" if res.status != "ok" else "")
    match = stdout_matches if fn_name is None else return_matches
    for rec in records:
        i = rec["i"]
        if rec["status"] != "ok":
            return False, rec["status"], str(rec.get("reason", ""))[:500]
        if not match(rec["output"], tests[i]["output"]):
            return False, "ok", f"test {i}: wrong answer"
    if res.status != "ok":
        return False, run_status, f"{res.status}: {res.reason}"
    if len(records) != len(tests):
        return False, "error", f"only {len(records)} of {len(tests)} tests reported"
    return True, "ok", ""


def _score_code(code: str | None, tests: list[dict], fn_name: str | None, test_timeout_s: float) -> CodeScore:
    if code is None:
        return CodeScore(False, None, "no_answer", "no fenced code block")
    try:
        ok, status, reason = run_tests(code, tests, fn_name, test_timeout_s, allow_code_execution=True)
    except CodeExecutionNotAllowed:
        raise
    except Exception as e:  # noqa: BLE001 - a harness-side failure on one sample is that sample's error
        ok, status, reason = False, "error", f"sandbox: {type(e).__name__}: {e}"
    return CodeScore(ok, code, status, reason)


@functools.lru_cache(maxsize=1)
def check_driver() -> None:
    """Score one known-correct program once per process: if the driver cannot work here (an interpreter without
    ctypes, a kernel refusing PR_SET_DUMPABLE), raise instead of scoring every response wrong."""
    ok, status, reason = run_tests("print(input())", [{"input": "7\n", "output": "7\n", "testtype": "stdin"}], None,
                                   allow_code_execution=True)
    if not ok:
        raise RuntimeError(f"the LiveCodeBench driver does not work on this machine ({status}: {reason}); "
                           "see docs/ood.md")


def score_batch(docs: list[dict], responses: list[list[str]], test_timeout_s: float = TIMEOUT_S,
                workers: int | None = None, allow_code_execution: bool | None = None) -> list[list[CodeScore]]:
    """`score` over many problems at once: all responses share one pool of `workers` sandbox runs."""
    require_opt_in(allow_code_execution)
    check_sandbox()  # raises if the sandbox cannot run code here; logs once what it isolates
    check_driver()
    jobs = []
    for d, rs in zip(docs, responses):
        tests, fn_name = tests_of(d)
        jobs += [(extract_code(r), tests, fn_name) for r in rs]
    workers = max_workers(_limits(1, test_timeout_s, MEMORY_MB), workers)  # workers x MEMORY_MB stays bounded
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(jobs) or 1))) as ex:
        flat = list(ex.map(lambda j: _score_code(*j, test_timeout_s), jobs))
    out, i = [], 0
    for rs in responses:
        out.append(flat[i:i + len(rs)])
        i += len(rs)
    return out


def score(doc: dict, responses: list[str], test_timeout_s: float = TIMEOUT_S, workers: int | None = None,
          allow_code_execution: bool | None = None) -> list[CodeScore]:
    """The task scorer (metadata.scorer): each response's last code block against all of the doc's tests.

    Raises CodeExecutionNotAllowed (before running anything) without the opt-in (HF_ALLOW_CODE_EVAL=1)."""
    return score_batch([doc], [responses], test_timeout_s, workers, allow_code_execution)[0]
