"""`backend=replay`: re-score generations made elsewhere, without a model.

The file is JSONL, one line per problem: `{"task": "aime2024", "problem": "<text>", "responses": ["...", ...]}`
(optional `lengths` and `truncated`: per response, as written by our own samples files). Lines are matched to the
benchmark's problems by their text (whitespace collapsed). A line whose problem is not in the benchmark is an
error; benchmark problems without a line are left out and counted (`n_missing` in the results JSON). A task
renamed since the file was written (aime24 -> aime2024, harness.tasks.RENAMED) is read under its current name.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from harness.tasks import current_name


def problem_key(text: str) -> str:
    return re.sub(r"\s+", " ", str(text)).strip()


def read_replay(path: str | Path) -> dict[str, list[dict]]:
    """task -> its lines, in file order; checks every line's shape first."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"replay_file {path} does not exist")
    by_task: dict[str, list[dict]] = {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{n}: not JSON ({e})") from e
            missing = [k for k in ("task", "problem", "responses") if k not in row]
            if missing or not isinstance(row.get("responses"), list):
                raise ValueError(f"{path}:{n}: needs task, problem and a list of responses (missing {missing})")
            by_task.setdefault(current_name(str(row["task"])), []).append(row)
    return by_task


def match(task: str, docs: list[dict], rows: list[dict]) -> tuple[list[tuple[dict, dict]], int]:
    """Pair each replay row with the benchmark doc of the same problem text; returns (pairs in benchmark order,
    number of benchmark problems without a row)."""
    index: dict[str, int] = {}
    for i, d in enumerate(docs):
        index.setdefault(problem_key(d["problem"]), i)
    found: dict[int, dict] = {}
    unknown = []
    for row in rows:
        i = index.get(problem_key(row["problem"]))
        if i is None:
            unknown.append(row["problem"])
        elif i in found:
            raise ValueError(f"replay: task {task}: problem appears twice: {str(row['problem'])[:80]!r}")
        else:
            found[i] = row
    if unknown:
        raise ValueError(f"replay: task {task}: {len(unknown)} problem(s) not in the benchmark, e.g. "
                         f"{str(unknown[0])[:100]!r}")
    pairs = [(docs[i], found[i]) for i in sorted(found)]
    return pairs, len(docs) - len(found)
