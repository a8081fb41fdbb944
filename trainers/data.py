"""Training data loaders: `load(cfg_data) -> datasets.Dataset` with columns `prompt` (str) and `answer` (str).

A data config names its loader and reward by import path (configs/data/*.yaml), so a new task needs no trainer
change. Config keys read here:
- `path`: a local JSONL or parquet file of problem/answer rows (`load_local`, and `load_dapo_math` when set)
- `hub_id`, `hub_config`, `split`: the hub dataset for `load_dapo_math` (used only when `path` is empty)
- `problem_key` / `answer_key`: column names (null = the first present of problem/question/prompt, answer/...)
- `template`: the prompt; `{question}` is replaced by the problem (plain replace, so `\\boxed{}` is safe)
- `limit`: keep the first N problems after de-duplication (null = all)

`load_arithmetic` generates small arithmetic problems offline (no file, no hub): the default data of
`harness train`, so the smallest run works on a fresh machine; `n` problems from `seed`.

Both file/hub loaders de-duplicate by problem text (DAPO-Math-17K repeats each problem about 100 times) and keep the
first occurrence. Rows of BytedTsinghua-SIA/DAPO-Math-17k (a chat `prompt` in DAPO's "Answer: $Answer" template
and `reward_model.ground_truth`) are converted back to problem/answer by stripping that template; the paper's
own template (the default `template`) is then applied.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

PAPER_TEMPLATE = ("User:\n{question}\nPlease reason step by step, and put your final answer within \\boxed{}.\n\n"
                  "Assistant:\n")
DAPO_PREFIX = ("Solve the following math problem step by step. The last line of your response should be of the "
               "form Answer: $Answer (without quotes) where $Answer is the answer to the problem.\n\n")
DAPO_SUFFIX = '\n\nRemember to put your answer on its own line after "Answer:".'
PROBLEM_KEYS = ("problem", "question", "prompt")
ANSWER_KEYS = ("answer", "solution_answer", "gold", "ground_truth")


def _get(cfg: Any, key: str, default: Any = None) -> Any:
    v = cfg.get(key, default) if hasattr(cfg, "get") else getattr(cfg, key, default)
    return default if v is None else v


def read_rows(path: str | Path) -> list[dict]:
    """Rows of a .jsonl / .json (list) / .parquet file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"data file not found: {path}")
    if path.suffix == ".parquet":
        import pandas as pd

        return pd.read_parquet(path).to_dict("records")
    if path.suffix == ".jsonl":
        with open(path, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]
    if path.suffix == ".json":
        rows = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(rows, list):
            return rows
    raise ValueError(f"data file {path}: expected .jsonl, .parquet or a .json list of rows")


def problem_and_answer(row: dict, problem_key: str | None = None, answer_key: str | None = None) -> tuple[str, str]:
    """(problem, answer) of one row; understands plain rows and DAPO-Math-17k's chat + reward_model rows."""
    chat = row.get("prompt")
    if "reward_model" in row and hasattr(chat, "__len__") and not isinstance(chat, str) and problem_key is None:
        content = str(row["prompt"][-1]["content"])
        if content.startswith(DAPO_PREFIX):
            content = content[len(DAPO_PREFIX):]
        if content.endswith(DAPO_SUFFIX):
            content = content[: -len(DAPO_SUFFIX)]
        return content.strip(), str(row["reward_model"]["ground_truth"]).strip()
    pk = problem_key or next((k for k in PROBLEM_KEYS if k in row), None)
    ak = answer_key or next((k for k in ANSWER_KEYS if k in row), None)
    if pk is None or pk not in row or ak is None or ak not in row:
        raise ValueError(f"row has no problem/answer columns (looked for {problem_key or PROBLEM_KEYS} and "
                         f"{answer_key or ANSWER_KEYS}); columns: {sorted(row)}")
    answer = row[ak]
    if hasattr(answer, "__len__") and not isinstance(answer, str):  # a list of accepted answers (list / array)
        answer = answer[0]
    return str(row[pk]).strip(), str(answer).strip()


def to_dataset(rows: list[dict], cfg_data: Any):
    """De-duplicated, templated `datasets.Dataset(prompt, answer, problem)`."""
    from datasets import Dataset

    template = _get(cfg_data, "template", PAPER_TEMPLATE)
    if "{question}" not in template:
        raise ValueError("data.template must contain {question}")
    limit = _get(cfg_data, "limit")
    seen, out = set(), {"prompt": [], "answer": [], "problem": []}
    for row in rows:
        problem, answer = problem_and_answer(row, _get(cfg_data, "problem_key"), _get(cfg_data, "answer_key"))
        if problem in seen:
            continue
        seen.add(problem)
        out["prompt"].append(template.replace("{question}", problem))
        out["answer"].append(answer)
        out["problem"].append(problem)
        if limit is not None and len(out["prompt"]) >= int(limit):
            break
    if not out["prompt"]:
        raise ValueError("no training problems were loaded")
    return Dataset.from_dict(out)


def load_local(cfg_data: Any):
    """Problems from `cfg_data.path` (JSONL / parquet)."""
    path = _get(cfg_data, "path")
    if not path:
        raise ValueError("data.path is required: a local JSONL or parquet file of problem/answer rows")
    return to_dataset(read_rows(path), cfg_data)


def load_dapo_math(cfg_data: Any):
    """DAPO-Math-17K from the hub (`hub_id`, `hub_config`, `split`), or from `path` when it is set."""
    if _get(cfg_data, "path"):
        return load_local(cfg_data)
    from datasets import load_dataset

    ds = load_dataset(_get(cfg_data, "hub_id"), _get(cfg_data, "hub_config"), split=_get(cfg_data, "split", "train"))
    return to_dataset(ds, cfg_data)


def load_arithmetic(cfg_data: Any):
    """`n` problems "What is a + b?" / "What is a * b?" with 1 <= a, b <= `max_operand`, from `seed` (offline)."""
    import random


    n, hi, seed = int(_get(cfg_data, "n", 64)), int(_get(cfg_data, "max_operand", 20)), int(_get(cfg_data, "seed", 0))
    if n < 1 or hi < 1:
        raise ValueError(f"data.n={n} and data.max_operand={hi} must be positive")
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        a, b, op = rng.randint(1, hi), rng.randint(1, hi), rng.choice("+*")
        sym = "+" if op == "+" else "\\times"
        rows.append({"problem": f"What is ${a} {sym} {b}$?", "answer": str(a + b if op == "+" else a * b)})
    return to_dataset(rows, cfg_data)
