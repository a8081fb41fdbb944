"""Shared code of the math tasks: raw rows -> docs with `problem` and `gold`; the scorer.

`process_docs` accepts both the dataset-hub layouts named in each YAML and the local files of
../shared/data/math (MANIFEST.json): the problem is the first of `problem`, `Problem`, `question`; the gold is
the first of `answer`, `Answer`, `final_answer` (a list is joined with ", "; a float such as 27.0 becomes "27";
`$` signs are removed), else the last \\boxed{} of `solution` (Minerva's OCW files).
"""
from __future__ import annotations

from harness.core.scoring import Score, extract_boxed, score_math
from harness.tasks import count_responses  # noqa: F401  (the YAML's process_results: utils.count_responses)

PROBLEM_FIELDS = ("problem", "Problem", "question")
GOLD_FIELDS = ("answer", "Answer", "final_answer")


def gold_of(doc: dict) -> str:
    """The reference answer of a raw row, as a string (see the module docstring for the rules)."""
    for key in GOLD_FIELDS:
        value = doc.get(key)
        if value is None or value == "" or value == []:
            continue
        if isinstance(value, list):
            return ", ".join(str(v).replace("$", "").strip() for v in value)
        if isinstance(value, float):
            return str(int(value)) if value.is_integer() else repr(value)
        return str(value).replace("$", "").strip()
    boxed = extract_boxed(doc.get("solution") or "")
    if boxed is None:
        raise ValueError(f"no gold answer in row with keys {sorted(doc)}")
    return boxed


def problem_of(doc: dict) -> str:
    for key in PROBLEM_FIELDS:
        if isinstance(doc.get(key), str) and doc[key].strip():
            return doc[key]
    raise ValueError(f"no problem text in row with keys {sorted(doc)}")


def process_docs(dataset):
    """datasets.Dataset of raw rows -> the same rows plus `problem` and `gold` (str)."""
    return dataset.map(lambda d: {"problem": problem_of(d), "gold": gold_of(d)})


def score(doc: dict, responses: list[str], timeout_s: float = 5.0) -> list[Score]:
    """The task scorer (metadata.scorer): the last \\boxed{} of each response against `doc["gold"]`."""
    return score_math(responses, [doc["gold"]] * len(responses), timeout_s=timeout_s)


def score_batch(docs: list[dict], responses: list[list[str]], timeout_s: float = 5.0) -> list[list[Score]]:
    """Same verdicts as `score` on each doc, in one call (all problems' samples share the worker pool)."""
    flat = [r for rs in responses for r in rs]
    golds = [d["gold"] for d, rs in zip(docs, responses) for _ in rs]
    scores = score_math(flat, golds, timeout_s=timeout_s)
    out, i = [], 0
    for rs in responses:
        out.append(scores[i:i + len(rs)])
        i += len(rs)
    return out
