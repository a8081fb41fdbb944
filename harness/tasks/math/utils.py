"""Shared code of the math tasks: the data (hub or local files), raw rows -> docs with `problem` and `gold`, the
scorer, and the per-problem metrics stock lm-eval reports.

`process_docs` accepts both the dataset-hub layouts named in each YAML and the local files of
../shared/data/math (MANIFEST.json): the problem is the first of `problem`, `Problem`, `question`; the gold is
the first of `answer`, `Answer`, `final_answer` (a list is joined with ", "; a float such as 27.0 becomes "27";
`$` signs are removed), else the last \\boxed{} of `solution` (Minerva's OCW files).
"""
from __future__ import annotations

from pathlib import Path

from harness.core.scoring import Score, extract_boxed, score_math

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


def dataset(path: str | None = None, split: str | None = None, name: str | None = None,
            data_dir: str | None = None, data_file: str | None = None, **_metadata):
    """lm-eval's `custom_dataset` hook (called with the task's metadata and dataset_kwargs): {"test": rows} from
    `data_dir/data_file` when a data_dir is given (stock lm-eval: --metadata '{"data_dir": DIR}'), else the hub
    dataset `path` (`name`, `split`). Offline without data_dir: a ConnectionError saying what to pass."""
    import datasets

    if data_dir:
        f = Path(data_dir).expanduser() / str(data_file)
        if not f.is_file():
            raise FileNotFoundError(f"data_dir: {f} does not exist (the task reads {data_file} from data_dir)")
        return datasets.DatasetDict({"test": datasets.load_dataset("json", data_files=str(f), split="train")})
    try:
        return datasets.DatasetDict({"test": datasets.load_dataset(path, name, split=split)})
    except (ConnectionError, OSError) as e:
        first = str(e).splitlines()[0] if str(e) else ""
        raise ConnectionError(f"cannot load {path} ({split}): {type(e).__name__}: {first}; without network, give "
                              f"a folder holding {data_file} (stock lm-eval: --metadata "
                              f"'{{\"data_dir\": \"DIR\"}}')") from None


def process_results(doc: dict, results: list) -> dict:
    """lm-eval's per-problem metrics under stock lm-eval: `acc` = the share of the k responses judged correct by
    the task scorer (avg@k), `pass_at_k` = 1.0 if any is, `n_responses` = k. (`harness eval` replaces these by
    its own metrics, computed from every response's verdict.)"""
    responses = results[0] if results and isinstance(results[0], list) else list(results)
    correct = [s.correct for s in score(doc, [str(r) for r in responses])]
    n = len(correct)
    return {"acc": sum(correct) / n if n else 0.0, "pass_at_k": float(any(correct)), "n_responses": n}


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
