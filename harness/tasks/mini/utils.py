"""The mini tasks' data and scorer (lm-eval custom_dataset, process_docs, score).

Problems are generated, not downloaded: `dataset(**kwargs)` is called by lm-eval with the task's
`dataset_kwargs` (format, problem count, seed) merged with its `metadata`, and returns the same problems for
the same arguments. The in-distribution set uses the training format and a seed disjoint from training
(harness.mini.task.load_train excludes its prompts); the out-of-distribution set changes the format.
"""
from __future__ import annotations

from harness.mini.task import TaskFormat, is_correct, make_problems, normalize
from harness.core.scoring import Score
from harness.tasks import count_responses  # noqa: F401  (the YAML's process_results: utils.count_responses)


def dataset(rounds: int, items: int, values: int, n: int, seed: int, min_items: int = 0, **_metadata):
    """DatasetDict {"test": n problems with columns prompt, answer} of the given format."""
    import datasets

    fmt = TaskFormat(rounds=rounds, items=items, values=values, min_items=min_items)
    rows = [{"prompt": p["prompt"], "answer": p["answer"]} for p in make_problems(fmt, n, seed)]
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})


def process_docs(ds):
    """Rows with prompt/answer (generated, or a data_dir file of the same layout) -> docs with problem, gold."""
    return ds.map(lambda d: {"problem": d["prompt"], "gold": d["answer"]})


def score(doc: dict, responses: list[str]) -> list[Score]:
    """Exact match of the whole (whitespace-normalised) response with the gold derivation."""
    out = []
    for r in responses:
        text = normalize(r if isinstance(r, str) else "")
        out.append(Score(correct=bool(text) and is_correct(text, doc["gold"]), extracted=text or None,
                         status="ok" if text else "no_answer"))
    return out
