"""The mini task: "pick the largest item of each round", written as a dense derivation.

A problem has `rounds` rounds of `items` numbers each, or of `min_items`..`items` numbers when `min_items` is set
(0 to `values`-1, one token each, all distinct within the problem). Rounds are labelled A, B, C, ...; the
answer names each round and its largest number:

    prompt:  A : 2 14 9 6 | B : 1 4 12 7 | C : 0 19 5 3 ?
    answer:  A 14 ; B 12 ; C 19 ;

Per round the answer has one decision (the number, the "fork") and two deterministic tokens (the label and
";"); with <eos>, 3 of the 10 answer tokens are forks (30%). The reward is 1 only for the exact answer
(whitespace-normalised) and 0 otherwise. Design notes (docs/mini.md): an earlier version also asked for a
letter paired with the chosen number, looked up in the prompt; a 0.6M-parameter model did not learn that
lookup within the warm-start budget, so the items are bare numbers.

Departures from the paper (whose task is competition maths): the task is synthetic, the reward is exact
match rather than mathematical equivalence, and prompts carry no chat template or instruction text.
A `TaskFormat` names the shape of the problems; it is stored in the config.json of every checkpoint trained on
it (`write_format`; save_pretrained keeps it through RL) and `check_format` refuses a mismatch, because a silent format change between the warm
start, RL and evaluation ruins runs without an error.
"""
from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

LABELS = tuple("ABCDEFGH")
NUMBERS = tuple(str(i) for i in range(30))
SYMBOLS = (":", "|", "?", ";")
FORMAT_KEY = "mini_task"  # config.json entry holding the TaskFormat a checkpoint was trained on
TASK_VERSION = 1  # bump on any change to the text of prompts or answers


class FormatMismatch(ValueError):
    """A checkpoint was trained on a different task format than the one requested."""


@dataclass(frozen=True)
class TaskFormat:
    rounds: int = 3  # rounds per problem (labels A, B, ...)
    items: int = 4   # items per round (the most, when min_items is set)
    values: int = 20  # numbers are drawn from 0 .. values-1, without replacement over the problem
    min_items: int = 0  # 0: every round has `items` numbers; else each round has min_items..items (uniform)
    version: int = TASK_VERSION

    def __post_init__(self) -> None:
        if not 1 <= self.rounds <= len(LABELS):
            raise ValueError(f"rounds={self.rounds}: must be 1..{len(LABELS)}")
        if self.items < 2:
            raise ValueError(f"items={self.items}: must be at least 2")
        if self.min_items and not 2 <= self.min_items <= self.items:
            raise ValueError(f"min_items={self.min_items}: must be 0 (fixed) or in 2..items={self.items}")
        if self.values > len(NUMBERS):
            raise ValueError(f"values={self.values}: at most {len(NUMBERS)}")
        if self.rounds * self.items > self.values:
            raise ValueError(f"rounds*items={self.rounds * self.items}: numbers are distinct within a problem, "
                             f"so at most values={self.values}")

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | None) -> "TaskFormat":
        cfg = dict(cfg or {})
        unknown = set(cfg) - {"rounds", "items", "values", "min_items", "version"}
        if unknown:
            raise ValueError(f"unknown task format keys: {sorted(unknown)}")
        return cls(**{k: int(v) for k, v in cfg.items()})

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def answer_tokens(self) -> int:
        """Answer length in tokens, without the end-of-sequence token."""
        return 3 * self.rounds


Round = list[int]  # the round's numbers, in prompt order


def sample_rounds(rng: random.Random, fmt: TaskFormat) -> list[Round]:
    sizes = [rng.randint(fmt.min_items, fmt.items) if fmt.min_items else fmt.items for _ in range(fmt.rounds)]
    nums = rng.sample(range(fmt.values), sum(sizes))
    return [nums[sum(sizes[:r]):sum(sizes[:r + 1])] for r in range(fmt.rounds)]


def best_index(rnd: Round) -> int:
    return max(range(len(rnd)), key=rnd.__getitem__)


def format_prompt(rounds: list[Round]) -> str:
    return " | ".join(f"{LABELS[r]} : " + " ".join(map(str, rnd)) for r, rnd in enumerate(rounds)) + " ?"


def format_answer(rounds: list[Round], picks: Iterable[int]) -> str:
    return " ".join(f"{LABELS[r]} {rounds[r][i]} ;" for r, i in enumerate(picks))


def make_problem(rng: random.Random, fmt: TaskFormat) -> dict:
    rounds = sample_rounds(rng, fmt)
    return {"prompt": format_prompt(rounds), "answer": format_answer(rounds, map(best_index, rounds))}


def noisy_pick(rng: random.Random, rnd: Round, p_correct: float) -> int:
    """The best item with probability p_correct; otherwise the runner-up or a random wrong item (half each)."""
    order = sorted(range(len(rnd)), key=lambda i: -rnd[i])
    if rng.random() < p_correct:
        return order[0]
    return order[1] if rng.random() < 0.5 else rng.choice(order[1:])


def noisy_trace(rng: random.Random, fmt: TaskFormat, p_correct: float) -> dict:
    """A warm-start example: each round picks its largest number with probability p_correct."""
    rounds = sample_rounds(rng, fmt)
    return {"prompt": format_prompt(rounds),
            "answer": format_answer(rounds, [noisy_pick(rng, rnd, p_correct) for rnd in rounds])}


def make_problems(fmt: TaskFormat, n: int, seed: int, exclude: Iterable[str] = ()) -> list[dict]:
    """`n` distinct problems from `seed`, none of whose prompts is in `exclude`."""
    rng, seen, out = random.Random(f"mini-{seed}"), set(exclude), []
    while len(out) < n:
        p = make_problem(rng, fmt)
        if p["prompt"] not in seen:
            seen.add(p["prompt"])
            out.append(p)
    return out


def normalize(text: str) -> str:
    return " ".join(text.split())


def is_correct(completion: str, answer: str) -> bool:
    return normalize(completion) == normalize(answer)


def reward(completions: list, answer: list[str], **_: Any) -> list[float]:
    """TRL reward function: 1.0 for the exact answer, else 0.0 (conversational completions use their text)."""
    texts = [c if isinstance(c, str) else c[-1]["content"] for c in completions]
    return [float(is_correct(t, a)) for t, a in zip(texts, answer, strict=True)]


def eval_problems(cfg_data: Mapping[str, Any]) -> list[dict]:
    """The held-out in-distribution problems (what `mini_id` evaluates)."""
    return make_problems(TaskFormat.from_config(cfg_data.get("format")), int(cfg_data.get("n_eval", 200)),
                         int(cfg_data.get("eval_seed", 1_000_003)))


def load_train(cfg_data: Mapping[str, Any]):
    """Trainer data loader: `n_train` problems (columns prompt, answer), disjoint from the held-out set.

    If `model_path` is set (relative: to the current directory), the model's stored format must match
    (`check_format`).
    """
    import datasets

    fmt = TaskFormat.from_config(cfg_data.get("format"))
    if cfg_data.get("model_path"):
        check_format(Path(cfg_data["model_path"]).expanduser().absolute(), fmt)
    held_out = [p["prompt"] for p in eval_problems(cfg_data)]
    rows = make_problems(fmt, int(cfg_data.get("n_train", 4096)), int(cfg_data.get("seed", 0)), exclude=held_out)
    return datasets.Dataset.from_list([{"prompt": r["prompt"], "answer": r["answer"]} for r in rows])


def write_format(model_dir: str | Path, fmt: TaskFormat) -> Path:
    """Record `fmt` in the model's config.json (key `mini_task`), so every save_pretrained copy keeps it."""
    from harness.core.io import atomic_write_json

    path = Path(model_dir) / "config.json"
    config = json.loads(path.read_text())
    config[FORMAT_KEY] = fmt.to_dict()
    return atomic_write_json(path, config)


def read_format(model_dir: str | Path) -> TaskFormat:
    path = Path(model_dir) / "config.json"
    config = json.loads(path.read_text()) if path.exists() else {}
    if FORMAT_KEY not in config:
        raise FormatMismatch(f"{path} has no `{FORMAT_KEY}` entry: {model_dir} was not trained on the mini task")
    return TaskFormat.from_config(config[FORMAT_KEY])


def check_format(model_dir: str | Path, fmt: TaskFormat) -> None:
    """Refuse to use a checkpoint trained on another task format."""
    stored = read_format(model_dir)
    if stored != fmt:
        raise FormatMismatch(f"{model_dir} was trained on task format {stored.to_dict()}, "
                             f"but {fmt.to_dict()} was requested; rebuild the warm start or fix the config")
