"""Answer checking: extraction, equivalence, and that hostile outputs are scored wrong and counted, never hang."""
import os
import signal
import time

import pytest

from harness.core.scoring import (KILL_GRACE_S, Score, ScoringPool, extract_boxed, normalize_answer, score_math,
                             value_bits)


@pytest.mark.parametrize("text, expected", [
    ("so the answer is \\boxed{25}.", "25"),
    ("\\boxed{1} then \\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),  # the last box wins
    ("\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}", "\\left( 3, \\frac{\\pi}{2} \\right)"),  # nested braces
    ("\\fbox{7}", "7"),
    ("The answer is $\\boxed 5$.", "5"),
    ("no box here", None),
    ("\\boxed{1} and finally \\boxed{\\frac{1}{2", None),  # the last box is unbalanced: no answer
    ("\\boxedx{3}", None),
])
def test_extract_boxed(text, expected):
    assert extract_boxed(text) == expected


def test_normalize_answer_strips_presentation_only():
    assert normalize_answer("\\text{Evelyn}") == normalize_answer("Evelyn")
    assert normalize_answer("90^\\circ") == "90"
    assert normalize_answer("$\\left(1, 2\\right)$") == "(1,2)"
    assert normalize_answer("12") != normalize_answer("21")


def test_equivalent_forms_are_correct_and_wrong_ones_are_not():
    responses = ["\\boxed{25}", "\\boxed{0.5}", "\\boxed{(3, \\frac{\\pi}{2})}", "\\boxed{27}", "\\boxed{24}",
                 "\\boxed{x^2+1}", "\\boxed{Evelyn}"]
    golds = ["025", "\\frac{1}{2}", "\\left( 3, \\frac{\\pi}{2} \\right)", "27.0", "025",
             "(x+1)^2-2x", "\\text{Evelyn}"]
    scores = score_math(responses, golds, workers=2)
    assert [s.correct for s in scores] == [True, True, True, True, False, True, True]
    assert all(s.status == "ok" for s in scores)
    assert scores[1] == Score(True, "0.5", "ok")


def test_hostile_outputs_are_wrong_counted_and_bounded():
    timeout_s = 1.0
    responses = [
        "\\boxed{2^{2^{2^{2^{2^{2}}}}}}",  # a power tower: bounded from the parsed tree, never evaluated
        "x" * 1_000_000,  # a megabyte, no answer
        "y" * 1_000_000 + "\\boxed{3}",  # a megabyte, then a correct answer
        "\\boxed{\\frac{1}{2",  # broken LaTeX
        "\\boxed{" + "1+" * 5000 + "1}",  # an answer too long to parse
        "\\boxed{(10^{10})!}",
        "\\boxed{\\frac{\\sqrt{}}{}}",
        None,  # not even a string
    ]
    golds = ["10", "1", "3", "1", "1", "1", "1", "1"]
    t0 = time.monotonic()
    scores = score_math(responses, golds, timeout_s=timeout_s, workers=2)  # type: ignore[arg-type]
    elapsed = time.monotonic() - t0
    assert [s.status for s in scores] == ["error", "no_answer", "ok", "no_answer", "error", "error",
                                          scores[6].status, "no_answer"]
    assert [s.correct for s in scores] == [False, False, True, False, False, False, False, False]
    assert elapsed < 10


def test_slow_sample_times_out_and_is_counted():
    # 60 nested fractions take sympy ~0.5 s; with a 0.05 s budget the interval timer stops it
    nested = "\\boxed{" + "\\frac{1}{1+" * 60 + "1" + "}" * 60 + "}"
    scores = score_math([nested, "\\boxed{2}"], ["12", "2"], timeout_s=0.05, workers=1)
    assert scores[0] == Score(False, scores[0].extracted, "timeout")
    assert scores[1].correct


def test_hung_worker_is_killed_and_replaced():
    # a worker that stops answering (here: SIGSTOP, as a hang in C code that no signal interrupts) is killed
    # after timeout_s + KILL_GRACE_S; its sample is "timeout", the rest of its chunk is rescored elsewhere
    pool = ScoringPool(1)
    try:
        assert pool.run([(0, "1", "1")], timeout_s=1.0) == {0: (True, "ok")}  # warm: the worker is ready
        os.kill(pool._workers[0].proc.pid, signal.SIGSTOP)
        t0 = time.monotonic()
        out = pool.run([(0, "5", "5"), (1, "6", "7"), (2, "\\frac{1}{2}", "0.5")], timeout_s=0.5)
        assert time.monotonic() - t0 < 0.5 + KILL_GRACE_S + 5
        assert out == {0: (False, "timeout"), 1: (False, "ok"), 2: (True, "ok")}
    finally:
        pool.close()


def test_in_process_mode_matches_pool():
    responses = ["\\boxed{3}", "\\boxed{\\frac{2}{4}}", "none", "\\boxed{7}"]
    golds = ["3", "0.5", "1", "8"]
    assert score_math(responses, golds, workers=0) == score_math(responses, golds, workers=2)


def test_bad_arguments_fail_loudly():
    with pytest.raises(ValueError, match="2 responses but 1 golds"):
        score_math(["a", "b"], ["1"])
    with pytest.raises(ValueError, match="timeout_s"):
        score_math(["a"], ["1"], timeout_s=0)


def test_thousands_separators_and_lists():
    scores = score_math(["\\boxed{1000}", "\\boxed{2754108}", "\\boxed{1,000}"], ["1,000", "27,54,108", "1000"],
                        workers=0)
    assert [s.correct for s in scores] == [True, False, True]


def test_value_bits_bounds_growth_without_evaluating():
    import sympy

    two = sympy.Integer(2)
    # 2^10: base 2 has 2 bits, exponent 10 has 4 bits (< 2^4), so the bound is 2 * 2^4 = 32 >= log2(2^10) = 10
    assert value_bits(sympy.Pow(two, 10, evaluate=False)) == 32
    assert value_bits(sympy.Integer(10) ** 100) < 1e6
    tower = sympy.Pow(two, sympy.Pow(two, sympy.Pow(two, 65536, evaluate=False), evaluate=False), evaluate=False)
    assert value_bits(tower) == float("inf")
    assert value_bits(sympy.factorial(sympy.Integer(10) ** 10, evaluate=False)) > 1e6  # ~10^10 * 35 bits
    assert value_bits(sympy.Symbol("x") ** 2) < 10  # symbols are not numeric growth


def test_number_against_a_function_of_variables():
    # a varying expression is never a number; a constant in disguise still is
    scores = score_math(["\\boxed{4}", "\\boxed{\\sin^2 x + \\cos^2 x}", "\\boxed{2x}", "\\boxed{x - x + 7}"],
                        ["\\frac{e^{-2 t}}{15}+C_{1} e^{t}", "1", "70", "7"], workers=0)
    assert [s.correct for s in scores] == [False, True, False, True]


def test_shortcuts_agree_with_plain_math_verify(real_math_dir):
    # the fast path (string/number shortcuts, numeric "clearly different", number vs varying expression,
    # parse cache) against a plain reference: normalised-string equality or math_verify.verify, on pairs of
    # benchmark golds (same, another problem's, a number, gold + 1) over several seeds
    import json
    import random

    from math_verify import LatexExtractionConfig, parse, verify

    from harness.core.scoring import _check
    from harness.tasks.math.utils import gold_of

    golds = []
    for name in ("aime24", "amc23", "math500", "minerva_math", "olympiadbench"):
        with open(real_math_dir / f"{name}.jsonl", encoding="utf-8") as f:
            golds += [gold_of(json.loads(x)) for x in f if x.strip()]
    cfg = [LatexExtractionConfig(boxed_match_priority=0)]

    def reference(answer, gold):
        if normalize_answer(answer) == normalize_answer(gold) and normalize_answer(gold):
            return True
        g = parse("\\boxed{" + gold + "}", extraction_config=cfg, parsing_timeout=5)
        p = parse("\\boxed{" + answer + "}", extraction_config=cfg, parsing_timeout=5)
        return bool(g and p and verify(g, p, timeout_seconds=5))

    disagree = []
    for seed in range(3):
        rng = random.Random(seed)
        for gold in rng.sample(golds, 25):
            for answer in (gold, rng.choice(golds), str(rng.randint(0, 999)), gold + "+1"):
                fast, status = _check(answer, gold, 5.0)
                if status == "ok" and fast != reference(answer, gold):
                    disagree.append((answer, gold, fast))
    assert not disagree, disagree[:5]
