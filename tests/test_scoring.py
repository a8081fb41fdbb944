"""Answer checking: extraction, equivalence, and that hostile outputs are scored wrong and counted, never hang."""
import time

import pytest

from harness.scoring import Score, extract_boxed, normalize_answer, score_math


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
        "\\boxed{2^{2^{2^{2^{2^{2}}}}}}",  # sympy evaluates 2^(2^65536) in C: only the outer kill stops it
        "x" * 1_000_000,  # a megabyte, no answer
        "y" * 1_000_000 + "\\boxed{3}",  # a megabyte, then a correct answer
        "\\boxed{\\frac{1}{2",  # broken LaTeX
        "\\boxed{" + "1+" * 5000 + "1}",  # an answer too long to parse
        "\\boxed{\\frac{\\sqrt{}}{}}",
        None,  # not even a string
    ]
    golds = ["10", "1", "3", "1", "1", "1", "1"]
    t0 = time.monotonic()
    scores = score_math(responses, golds, timeout_s=timeout_s, workers=2)  # type: ignore[arg-type]
    elapsed = time.monotonic() - t0
    assert [s.status for s in scores] == ["timeout", "no_answer", "ok", "no_answer", "error", scores[5].status,
                                          "no_answer"]
    assert [s.correct for s in scores] == [False, False, True, False, False, False, False]
    assert elapsed < 2 * (timeout_s + 1.0) + 5  # bounded: one kill per hung sample, plus restart
    # the pool survives the kill and keeps scoring
    assert score_math(["\\boxed{4}"], ["4"], workers=2)[0].correct


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
