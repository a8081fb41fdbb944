"""LiveCodeBench task: data decoding, window, prompt, code extraction, LCB's comparisons, and the scorer on
hand-written problems of both kinds (tests/fixtures/livecodebench.jsonl) with right, wrong and hostile code."""
import base64
import json
import pickle
import zlib
from pathlib import Path

import pytest
from datasets import Dataset

from harness.sandbox import CodeExecutionNotAllowed
from harness.tasks.code import utils as U

FIXTURE = Path(__file__).parent / "fixtures" / "livecodebench.jsonl"


def _rows():
    return [json.loads(line) for line in FIXTURE.read_text().splitlines()]


@pytest.fixture(scope="module")
def docs():
    return {d["question_id"]: d for d in U.process_docs(Dataset.from_list(_rows()))}


def fence(code: str) -> str:
    return f"Let me think.\n```python\n{code}\n```\n"


# ---------------------------------------------------------------- data

def test_compressed_private_tests_decode_like_the_dataset():
    tests = [{"input": "1\n", "output": "2\n", "testtype": "stdin"}]
    field = base64.b64encode(zlib.compress(pickle.dumps(json.dumps(tests)))).decode()
    assert U.decode_tests(field) == tests
    assert U.decode_tests(json.dumps(tests)) == tests
    row = _rows()[0]  # abc999_a: 1 public + 2 compressed private tests
    tests, fn = U.tests_of(row)
    assert fn is None and len(tests) == 3 and tests[2]["output"] == "2000000000\n0\n-1\n"


class _Payload:
    """Unpickling this runs code: what a poisoned dataset row would carry."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('payload ran')",)


def _compressed(obj) -> str:
    return base64.b64encode(zlib.compress(pickle.dumps(obj))).decode()


def test_poisoned_row_is_refused_by_name_and_never_runs(tmp_path):
    """A private_test_cases field whose pickle would call exec(): refused with the question_id, the payload
    never runs, whether the row is read directly, through process_docs or by the lm-eval task from data_dir."""
    from harness.evaluation.tasks import build_task

    marker = tmp_path / "payload-ran"
    rows = _rows()
    control = dict(rows[0], private_test_cases=_compressed(json.dumps([{"input": "1", "output": "2",
                                                                          "testtype": "stdin"}])))
    assert len(U.tests_of(control)[0]) == 2  # the dataset's form (a pickled JSON string) is read
    poisons = {
        "call": _Payload(marker),  # REDUCE of builtins.exec
        "nested": [{"input": "1", "output": "2", "testtype": "stdin"}, _Payload(marker)],
    }
    for name, obj in poisons.items():
        row = dict(rows[0], question_id=f"poisoned-{name}", private_test_cases=_compressed(obj))
        with pytest.raises(ValueError, match=f"question_id='poisoned-{name}': private_test_cases refused.*"
                                             "construct or call objects"):
            U.tests_of(row)
        with pytest.raises(ValueError, match=f"poisoned-{name}"):
            U.process_docs(Dataset.from_list([row] + rows[1:]))
        data = tmp_path / name
        data.mkdir()
        (data / "livecodebench.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [row] + rows[1:]))
        with pytest.raises(ValueError, match=f"poisoned-{name}"):
            list(build_task("livecodebench", k=1, temperature=1.0, top_p=1.0, max_gen_toks=8,
                            data_dir=data).test_docs())
        assert not marker.exists(), name


def test_compressed_field_must_be_plain_data(monkeypatch):
    """What the restricted reader refuses, each named by the row: a global even without a call, a pickle of
    non-test data, junk, and a field that would inflate past the cap."""
    base = dict(_rows()[0], question_id="q1")
    refused = {
        "a class reference": (_compressed(pickle.PickleError), "construct or call objects"),
        "not a list of tests": (_compressed({"input": 1}), "expected a list of tests"),
        "tests of non-strings": (_compressed([{"input": 1, "output": "2", "testtype": "stdin"}]), "test 0"),
        "junk": ("not base64 at all!", "neither JSON nor base64"),
        "not a pickle": (base64.b64encode(zlib.compress(b"hello")).decode(), "not a valid pickle"),
    }
    for what, (field, why) in refused.items():
        with pytest.raises(ValueError, match=f"question_id='q1': private_test_cases refused: .*{why}"):
            U.tests_of(dict(base, private_test_cases=field))
    monkeypatch.setattr(U, "MAX_DECODED_BYTES", 1 << 20)
    big = _compressed(json.dumps([{"input": "x" * (2 << 20), "output": "", "testtype": "stdin"}]))
    with pytest.raises(ValueError, match="q1.*decompresses to more than 1 MiB"):
        U.tests_of(dict(base, private_test_cases=big))
    # plain data in other shapes the dataset could use: a pickled list of tests is accepted as it is
    tests = [{"input": "1\n", "output": "2\n", "testtype": "stdin"}]
    assert U.decode_tests(_compressed(tests)) == tests


def test_window_keeps_the_papers_dates(docs):
    # fixture dates: 2024-09-14, 2024-11-02, 2024-12-07 inside [2024-08-01, 2025-02-01); 2023-07-02 outside
    assert sorted(docs) == ["1999A", "3999", "abc999_a"]
    assert len(U.process_all(Dataset.from_list(_rows()))) == 4
    with pytest.raises(ValueError, match="no problem with contest_date"):
        U.window_docs("2030-01-01", None)(Dataset.from_list(_rows()))
    assert docs["3999"]["gold"] == "3 tests, functional sortPairs"
    assert docs["abc999_a"]["problem"].startswith("You are given T lines")


def test_bad_rows_fail_before_generation():
    row = dict(_rows()[2], metadata="{}")  # functional tests without func_name
    with pytest.raises(ValueError, match="func_name"):
        U.tests_of(row)


def test_prompt_has_starter_code_or_stdin_instructions(docs):
    p = U.doc_to_text(docs["3999"])
    assert p.startswith("User:\n### Question:\n") and "def sortPairs" in p and p.endswith("Assistant:\n")
    assert "Read the inputs from stdin" in U.doc_to_text(docs["abc999_a"])


def test_extract_last_complete_code_block():
    r = "```python\nprint(1)\n```\ntext\n```\nprint(2)\n```\n```python\nprint(3)"  # last block unclosed
    assert U.extract_code(r) == "print(2)"
    assert U.extract_code("no code here") is None
    assert U.extract_code("```python\n\n```") is None


def test_lcb_comparisons():
    assert U.stdout_matches("3 \n7\n\n", "3\n7\n")  # stripped lines
    assert U.stdout_matches("1.50\n", "1.5\n")  # decimals: 1.50 == 1.5
    assert not U.stdout_matches("2.3333333\n", "2.333333\n")  # decimals are exact, not approximate
    assert not U.stdout_matches("3\n", "3\n7\n")
    assert U.return_matches("[1, 2]", "[1, 2]") and not U.return_matches("[2, 1]", "[1, 2]")
    assert not U.return_matches("not json", "1")


# ---------------------------------------------------------------- scoring in the sandbox

SUM_OK = "T=int(input())\nfor _ in range(T):\n    a,b=map(int,input().split())\n    print(a+b)"
SUM_WRONG = SUM_OK.replace("a+b", "a-b")
MEAN_OK = "import sys\nd=sys.stdin.read().split()\nn=int(d[0])\nprint(f'{sum(map(int,d[1:n+1]))/n:.6f}')"
MEAN_FLOAT = "n=int(input())\nprint(sum(map(int,input().split()))/n)"  # 2.3333333333333335 != 2.333333
SORT_OK = ("class Solution:\n    def sortPairs(self, nums: List[int], k: int) -> List[int]:\n"
           "        return tuple(sorted(nums)[:k])")  # a tuple is accepted as a list (LCB)
SORT_WRONG = "class Solution:\n    def sortPairs(self, nums, k):\n        return sorted(nums)[-k:]"


def test_scores_both_kinds(docs):
    s = U.score(docs["abc999_a"], [fence(SUM_OK), fence(SUM_WRONG), "no code"], allow_code_execution=True)
    assert [x.correct for x in s] == [True, False, False]
    assert [x.status for x in s] == ["ok", "ok", "no_answer"]
    assert s[1].reason == "test 0: wrong answer" and s[0].extracted == SUM_OK
    s = U.score(docs["1999A"], [fence(MEAN_OK), fence(MEAN_FLOAT)], allow_code_execution=True)
    assert [x.correct for x in s] == [True, False]
    s = U.score(docs["3999"], [fence(SORT_OK), fence(SORT_WRONG)], allow_code_execution=True)
    assert [x.correct for x in s] == [True, False]


def test_private_tests_count(docs):
    # passes the public test (2 lines) but breaks on the private one with 3 lines
    only_two = "input()\nfor _ in range(2):\n    a,b=map(int,input().split())\n    print(a+b)"
    s = U.score(docs["abc999_a"], [fence(only_two)], allow_code_execution=True)[0]
    assert not s.correct and s.status == "error" and s.reason.startswith("test 1:")


HOSTILE = {
    "infinite_loop": ("while True:\n    pass", "timeout"),
    "fork_bomb": ("import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass", "timeout"),
    "memory_bomb": ("x = []\nwhile True:\n    x.append(bytearray(50 << 20))", "error"),
    "syntax_error": ("def f(:\n    pass", "error"),
    "exit_early": ("import os\nos._exit(0)", "ok"),  # prints nothing: wrong answer
    "print_gigabytes": ("import sys\nb='x'*(1<<20)\nwhile True:\n    sys.stdout.write(b)", "error"),
    # in a pid namespace the driver is pid 1, which ignores signals from inside: the test just prints nothing
    "kill_driver": ("import os, signal\nos.kill(os.getppid(), signal.SIGKILL)", ("ok", "error")),
}


def test_hostile_responses_are_failures_with_reasons(docs, monkeypatch):
    monkeypatch.setattr(U, "MEMORY_MB", 256)
    names = list(HOSTILE)
    s = U.score(docs["abc999_a"], [fence(HOSTILE[n][0]) for n in names], test_timeout_s=3.0, workers=4,
                allow_code_execution=True)
    for name, sc in zip(names, s):
        assert not sc.correct, name
        want = HOSTILE[name][1]
        assert sc.status in (want if isinstance(want, tuple) else (want,)), (name, sc)
        assert sc.reason, name
    assert "MemoryError" in s[names.index("memory_bomb")].reason
    assert "compile" in s[names.index("syntax_error")].reason


def test_refuses_without_opt_in(docs, monkeypatch):
    monkeypatch.delenv("HF_ALLOW_CODE_EVAL", raising=False)
    with pytest.raises(CodeExecutionNotAllowed):
        U.score(docs["abc999_a"], [fence(SUM_OK)])
    monkeypatch.setenv("HF_ALLOW_CODE_EVAL", "1")
    assert U.score(docs["abc999_a"], [fence(SUM_OK)])[0].correct


# ---------------------------------------------------------------- the lm-eval task

def test_task_yaml_loads_from_a_data_file(tmp_path):
    from harness.evaluation.tasks import build_task, expand_tasks, task_info

    assert expand_tasks("ood") == ["livecodebench"]  # the paper's OOD suite; gpqa_diamond is named explicitly
    assert task_info("livecodebench").scorer == "harness.tasks.code.utils:score"
    (tmp_path / "livecodebench.jsonl").write_text(FIXTURE.read_text())  # what data_dir=DIR reads
    task = build_task("livecodebench", k=2, temperature=1.0, top_p=1.0, max_gen_toks=64, data_dir=tmp_path)
    docs = list(task.test_docs())
    assert len(docs) == 3  # the 2023 problem is outside the window
    assert task.doc_to_text(docs[0]).startswith("User:\n### Question:")
    scores = U.score_batch(docs[:1], [[fence(SUM_OK), fence(SUM_WRONG)]], allow_code_execution=True)
    assert [s.correct for s in scores[0]] == [True, False]


def test_replay_end_to_end_through_evaluate(tmp_path, monkeypatch):
    """backend=replay: saved responses -> the same scorer -> avg@k / pass@k rows and a samples file."""
    import pandas as pd

    from harness.evaluation import evaluate

    monkeypatch.delenv("HF_ALLOW_CODE_EVAL", raising=False)
    (tmp_path / "livecodebench.jsonl").write_text(FIXTURE.read_text())
    rows = {r["question_id"]: r for r in _rows()}
    replay = [  # abc999_a: 1 of 2 right; 3999: 2 of 2 right; 1999A: 0 of 2 (one without code)
        {"task": "livecodebench", "problem": rows["abc999_a"]["question_content"],
         "responses": [fence(SUM_OK), fence(SUM_WRONG)]},
        {"task": "livecodebench", "problem": rows["3999"]["question_content"],
         "responses": [fence(SORT_OK), fence(SORT_OK)]},
        {"task": "livecodebench", "problem": rows["1999A"]["question_content"],
         "responses": [fence(MEAN_FLOAT), "I cannot solve this."]},
    ]
    rf = tmp_path / "replay.jsonl"
    rf.write_text("".join(json.dumps(r) + "\n" for r in replay))
    kw = dict(tasks="livecodebench", backend="replay", replay_file=rf, k=2, data_dir=tmp_path, pass_ks=(1, 2),
              bootstrap_iters=50)
    with pytest.raises(ValueError, match="allow_code_execution=true"):  # refused before the data is read
        evaluate(**kw, out_dir=tmp_path / "refused")
    assert not (tmp_path / "refused").exists()
    df = evaluate(**kw, out_dir=tmp_path / "out", allow_code_execution=True)
    avg = df[(df.metric == "avg@k") & (df.k == 2)].value.item()
    pass2 = df[(df.metric == "pass@k") & (df.k == 2)].value.item()
    assert avg == pytest.approx(100 * (0.5 + 1.0 + 0.0) / 3)  # mean over problems of the share right
    assert pass2 == pytest.approx(100 * 2 / 3)  # two of three problems solved at least once
    samples = [json.loads(line) for line in (tmp_path / "out" / "samples_livecodebench.jsonl").read_text().splitlines()]
    statuses = {s["problem"][:10]: s["status"] for s in samples}
    assert ["ok", "no_answer"] in statuses.values()
    # the sandbox's failure reasons reach the samples file (a wrong answer is named as such)
    by_problem = {s["problem"]: s for s in samples}
    assert by_problem[rows["abc999_a"]["question_content"]]["reason"][1] == "test 0: wrong answer"
    assert pd.read_csv(tmp_path / "out" / "summary.csv").benchmark.eq("livecodebench").all()


def test_a_broken_sandbox_is_an_error_not_zero_scores(docs, monkeypatch):
    from harness import sandbox
    from harness.sandbox import RunResult

    broken = RunResult("setup_error", 125, "", "SANDBOX-SETUP-ERROR: x", 0.1, "cannot switch uid")
    monkeypatch.setattr(sandbox, "run_python", lambda *a, **k: broken)
    monkeypatch.setattr(sandbox, "_CHECKED", {})
    with pytest.raises(RuntimeError, match="sandbox .* does not work.*cannot switch uid"):
        U.score(docs["abc999_a"], [fence(SUM_OK)], allow_code_execution=True)


def test_a_broken_driver_is_an_error_not_zero_scores(docs, monkeypatch):
    """An interpreter without ctypes (simulated: the driver imports a module that does not exist) would make
    every response fail; the one known-correct run before scoring turns that into an error."""
    monkeypatch.setattr(U, "DRIVER", U.DRIVER.replace("import ctypes,", "import no_such_module_here,"))
    U.check_driver.cache_clear()
    try:
        with pytest.raises(RuntimeError, match="driver does not work.*no_such_module_here"):
            U.score(docs["abc999_a"], [fence(SUM_OK)], allow_code_execution=True)
    finally:
        U.check_driver.cache_clear()


# ---------------------------------------------------------------- the verdict channel

def _rec(i, status="ok", **kw):
    return json.dumps(dict(i=i, status=status, **kw)) + "\n"


def test_result_protocol_is_strict():
    ok = [_rec(0, output="a"), _rec(1, output="b"), _rec(2, output="c")]
    assert U.parse_records("".join(ok), 3) == ([json.loads(x) for x in ok], "")
    assert U.parse_records(ok[0] + _rec(1, "error", reason="boom"), 3)[1] == ""  # stops at the first failure
    assert U.parse_records(_rec(-1, "error", reason="does not compile"), 3)[1] == ""
    assert U.parse_records("", 3) == ([], "")  # nothing reported: run_tests fails it as incomplete
    bad = {
        "duplicate": ok[0] + ok[0] + ok[0],
        "out of order": ok[1] + ok[0] + ok[2],
        "skipped id": ok[0] + ok[2],
        "garbled line": ok[0] + "{garbage" + ok[1],
        "incomplete last line": "".join(ok)[:-3],
        "too many": "".join(ok) + _rec(3, output="d"),
        "after a failure": ok[0] + _rec(1, "error", reason="x") + _rec(2, output="c"),
        "ok without output": _rec(0),
        "not a record": "[1, 2]\n",
        "id not an int": _rec("0", output="a"),
        "late compile error": ok[0] + _rec(-1, "error", reason="x"),
    }
    for what, text in bad.items():
        assert U.parse_records(text, 3)[1], what


# A submitted program that goes for the driver's result pipe: pidfd_getfd (and /proc/<pid>/fd) on its parent,
# then forged records for test 0 (whose expected output it knows from the prompt), in three variants.
FORGE = """
import ctypes, json, os
libc = ctypes.CDLL(None, use_errno=True)
ppid, got, errs = os.getppid(), [], set()
pidfd = libc.syscall(434, ppid, 0)  # pidfd_open
for fd in range(3, 16):
    new = libc.syscall(438, pidfd, fd, 0)  # pidfd_getfd
    if new >= 0:
        got.append(new)
    else:
        errs.add(ctypes.get_errno())
    try:
        got.append(os.open(f"/proc/{ppid}/fd/{fd}", os.O_WRONLY))
    except OSError:
        pass
rec = lambda i: json.dumps({"i": i, "status": "ok", "output": "3\\n7\\n"}) + "\\n"
forged = {"duplicates": rec(0) * 3, "out_of_order": rec(2) + rec(1) + rec(0),
          "garbled": rec(0) * 3 + '{"glue": "'}[VARIANT]
for fd in got:
    try:
        os.write(fd, forged.encode())
    except OSError:
        pass
raise RuntimeError(f"FORGE fds={len(got)} errnos={sorted(errs)}")
"""


def test_forging_program_cannot_pass(docs, monkeypatch):
    """The driver is non-dumpable, so the forger cannot even take its pipe (EPERM); and with that defence
    removed (a dumpable driver), the forged records reach the harness but the strict protocol fails them all."""
    doc = docs["abc999_a"]  # 3 tests; test 0 prints "3\n7\n"
    variants = ["duplicates", "out_of_order", "garbled"]
    progs = [fence(FORGE.replace("[VARIANT]", f"[{v!r}]")) for v in variants]
    for s in U.score(doc, progs, workers=3, allow_code_execution=True):
        assert not s.correct and "FORGE fds=0 errnos=[1]" in s.reason, s  # EPERM on every descriptor
    dumpable = U.DRIVER.replace("ctypes.CDLL(None).prctl(4, 0, 0, 0, 0) != 0", "False")
    assert dumpable != U.DRIVER
    monkeypatch.setattr(U, "DRIVER", dumpable)
    tests, fn = U.tests_of(doc)
    for v in variants:
        code = U.extract_code(fence(FORGE.replace("[VARIANT]", f"[{v!r}]")))
        ok, status, reason = U.run_tests(code, tests, fn, timeout_s=5, allow_code_execution=True)
        assert not ok and reason.startswith("result protocol violated"), (v, reason)
