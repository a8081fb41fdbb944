"""GPQA-Diamond: four-choice questions; the answer is the letter in the last `\\boxed{}` of the response.

Rows have GPQA's own columns (`Question`, `Correct Answer`, `Incorrect Answer 1..3`, optionally `Record ID`),
as in the gated hub dataset `Idavidrein/gpqa` (config `gpqa_diamond`) and the authors' CSV files. The four
answers are shuffled with a seed derived from the question (sha256 of `Record ID`, else of the question text),
so every run shows the same letters (lm-eval's gpqa task shuffles without a seed). The prompt is the paper's
math prompt with the choices and "the letter of the correct choice" in place of "your final answer".

Scoring: the last `\\boxed{...}` (harness.core.scoring.extract_boxed); its content is read as a letter if it is
one of A-D, optionally in parentheses, in `\\text{}`/`\\textbf{}`, or followed by `)`, `.`, `:` and the
answer text ("B", "(B)", "\\text{B}", "B) 42"). No box -> status "no_answer"; a box without a letter is wrong
with status "ok" and the box content as `extracted`.
"""
from __future__ import annotations

import hashlib
import random
import re

from harness.core.scoring import Score, extract_boxed
from harness.tasks import count_responses  # noqa: F401  (the YAML's process_results: utils.count_responses)

LETTERS = "ABCD"
_ALONE_RE = re.compile(r"\(?\s*([A-Da-d])\s*\)?[.:]?")  # "B", "(b)", "B."
_LEADING_RE = re.compile(r"\(?([A-D])(?:\)|[.:])\s")  # "B) 42", "(B) 42", "B. 42"
_WRAP_RE = re.compile(r"^\\(?:text|textbf|mathrm|mathbf|mbox)\s*\{(.*)\}$", re.S)


def _clean(text) -> str:
    return " ".join(str(text or "").replace(" [title]", ". ").split())


def shuffled_choices(doc: dict) -> tuple[list[str], str]:
    """(the four answers in a fixed per-question order, the letter of the correct one)."""
    for col in ("Question", "Correct Answer", "Incorrect Answer 1", "Incorrect Answer 2", "Incorrect Answer 3"):
        if not _clean(doc.get(col)):
            raise ValueError(f"gpqa: row without {col!r} (columns: {sorted(doc)})")
    right = _clean(doc["Correct Answer"])
    choices = [right] + [_clean(doc[f"Incorrect Answer {i}"]) for i in (1, 2, 3)]
    key = str(doc.get("Record ID") or doc["Question"])
    random.Random(int(hashlib.sha256(key.encode()).hexdigest()[:16], 16)).shuffle(choices)
    return choices, LETTERS[choices.index(right)]


def process_docs(dataset):
    """Rows with GPQA's columns -> docs with `problem` (the question), `choices` and `gold` (a letter)."""
    def one(d):
        choices, gold = shuffled_choices(d)
        return {"problem": _clean(d["Question"]), "choices": choices, "gold": gold}

    return dataset.map(one)


def doc_to_text(doc: dict) -> str:
    options = "\n".join(f"({letter}) {c}" for letter, c in zip(LETTERS, doc["choices"]))
    return (f"User:\n{doc['problem']}\n\n{options}\nPlease reason step by step, and put the letter of the correct "
            "choice (A, B, C or D) within \\boxed{}.\n\nAssistant:\n")


def extract_letter(response: str) -> tuple[str | None, str | None]:
    """(letter or None, the last boxed content or None)."""
    boxed = extract_boxed(response) if isinstance(response, str) else None
    if boxed is None:
        return None, None
    inner = boxed.strip()
    m = _WRAP_RE.match(inner)
    while m:
        inner = m.group(1).strip()
        m = _WRAP_RE.match(inner)
    m = _ALONE_RE.fullmatch(inner) or _LEADING_RE.match(inner)
    return (m.group(1).upper() if m else None), boxed


def score(doc: dict, responses: list[str]) -> list[Score]:
    """The task scorer (metadata.scorer): the letter of each response's last \\boxed{} against `doc["gold"]`."""
    out = []
    for r in responses:
        letter, boxed = extract_letter(r)
        if boxed is None:
            out.append(Score(False, None, "no_answer"))
        else:
            out.append(Score(letter == doc["gold"], letter or boxed, "ok"))
    return out
