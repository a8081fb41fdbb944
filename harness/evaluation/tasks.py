"""Task loading: names and groups -> lm-eval tasks configured for k-sample evaluation, plus their scorers.

Only the harness's own task folder is indexed (`TaskManager(include_path=harness/tasks, include_defaults=False)`).
A task is built from its YAML (includes resolved) with the evaluation protocol laid over it (`protocol_overrides`),
so every family is generated and scored the same way (docs/evaluation.md, "The task plug-in contract").
"""
from __future__ import annotations

import importlib
import inspect
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Sequence

from harness.tasks import RENAMED, TASKS_DIR, count_responses


@lru_cache(maxsize=1)
def task_manager():
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=str(TASKS_DIR), include_defaults=False)


def expand_tasks(tasks: str | Sequence[str]) -> list[str]:
    """Task and group names (a comma-separated string or a list) -> leaf task names, in order, no duplicates."""
    from lm_eval.tasks._index import Kind

    names = [t.strip() for t in tasks.split(",")] if isinstance(tasks, str) else [str(t) for t in tasks]
    index = task_manager().task_index
    out: list[str] = []

    def add(name: str, seen: tuple[str, ...] = ()) -> None:
        entry = index.get(name)
        if entry is None and name in RENAMED:
            raise ValueError(f"task {name!r} is now called {RENAMED[name]!r} (renamed so as not to replace "
                             f"lm-eval's built-in {name!r}); use tasks={RENAMED[name]}")
        if entry is None:
            groups = sorted(n for n, e in index.items() if e.kind == Kind.GROUP)
            leaves = sorted(n for n, e in index.items() if e.kind == Kind.TASK)
            raise ValueError(f"unknown task or group {name!r}; groups: {', '.join(groups)}; "
                             f"tasks: {', '.join(leaves)}")
        if entry.kind == Kind.GROUP:
            if name in seen:
                raise ValueError(f"group {name!r} includes itself")
            for child in entry.cfg.get("task", []):
                add(child if isinstance(child, str) else child["task"], seen + (name,))
        elif entry.kind == Kind.TAG:
            for child in sorted(entry.tags):
                add(child, seen)
        elif name not in out:
            out.append(name)

    for n in names:
        if n:
            add(n)
    if not out:
        raise ValueError("no tasks given")
    return out


def raw_config(name: str) -> dict[str, Any]:
    """The task's YAML with includes merged and `!function`s resolved."""
    from lm_eval.tasks._yaml_loader import load_yaml

    return load_yaml(task_manager().task_index[name].yaml_path, resolve_func=True, recursive=True)


def data_file_name(name: str) -> str:
    """The file a task reads from a data_dir: its `metadata.data_file` (the benchmark copies keep their file names,
    e.g. aime24.jsonl for aime2024), else `<task>.jsonl`."""
    return str((raw_config(name).get("metadata") or {}).get("data_file") or f"{name}.jsonl")


def data_file(name: str, data_dir: str | Path) -> Path:
    path = Path(data_dir).expanduser() / data_file_name(name)
    if not path.is_file():
        raise FileNotFoundError(f"data_dir: task {name!r} needs {path}, which does not exist")
    return path.resolve()


def protocol_overrides(k: int, temperature: float, top_p: float, max_gen_toks: int,
                       until: Sequence[str] | None = None) -> dict[str, Any]:
    """The evaluation protocol as task-config keys (docs/evaluation.md, step 1)."""
    gen: dict[str, Any] = {"do_sample": temperature > 0, "temperature": float(temperature),
                           "max_gen_toks": int(max_gen_toks)}
    if temperature > 0:
        gen["top_p"] = float(top_p)
    if until is not None:
        gen["until"] = list(until)
    return {
        "repeats": int(k),
        "num_fewshot": 0,
        "generation_kwargs": gen,
        "filter_list": [{"name": "all", "filter": [{"function": "take_first_k", "k": int(k)}]}],
        "process_results": count_responses,
        "metric_list": [{"metric": "n_responses", "aggregation": "mean", "higher_is_better": True}],
    }


def task_max_gen_toks(cfg: dict) -> int:
    return int((cfg.get("metadata") or {}).get("max_gen_toks")
               or (cfg.get("generation_kwargs") or {}).get("max_gen_toks") or 2048)


def build_task(name: str, *, k: int, temperature: float, top_p: float, max_gen_toks: int | None,
               data_dir: str | Path | None = None, extra_generation: dict | None = None):
    """A ConfigurableTask for `name` with the protocol applied (and its data from data_dir, if given).
    `extra_generation`: backend-specific sampling keys added when sampling (e.g. top_k off)."""
    from lm_eval.api.task import ConfigurableTask

    cfg = raw_config(name)
    gen = dict(cfg.get("generation_kwargs") or {})
    gen.pop("seed", None)  # a seed in the generation kwargs makes every repeat identical on vLLM
    cfg["generation_kwargs"] = gen
    over = protocol_overrides(k, temperature, top_p, max_gen_toks or task_max_gen_toks(cfg), gen.get("until", []))
    cfg.update(over)
    cfg["generation_kwargs"] = {**gen, **over["generation_kwargs"]}
    if temperature <= 0:
        cfg["generation_kwargs"].pop("top_p", None)
    else:
        cfg["generation_kwargs"].update(extra_generation or {})
    if data_dir is not None:
        cfg.update(dataset_path="json", dataset_name=None, test_split="test",
                   dataset_kwargs={"data_files": {"test": str(data_file(name, data_dir))}})
        for key in ("training_split", "validation_split", "fewshot_split", "custom_dataset"):
            cfg.pop(key, None)
    for key in ("tag", "group", "task_list"):
        cfg.pop(key, None)
    try:
        return ConfigurableTask(config=cfg)
    except (ConnectionError, OSError) as e:  # offline, not downloaded, gated (datasets raises these kinds)
        if data_dir is not None:
            raise
        where = cfg.get("dataset_path") or (cfg.get("dataset_kwargs") or {}).get("path")
        raise ValueError(f"task {name}: cannot load its dataset {where!r} ({type(e).__name__}); without network, "
                         f"set data_dir=DIR to a folder holding {data_file_name(name)} "
                         "(e.g. data_dir=../shared/data/math)"
                         ) from None


@dataclass(frozen=True)
class TaskInfo:
    name: str
    version: Any
    scorer: str
    source: str
    path: str


def task_info(name: str) -> TaskInfo:
    cfg = raw_config(name)
    meta = cfg.get("metadata") or {}
    if "scorer" not in meta or "version" not in meta:
        raise ValueError(f"task {name!r} ({task_manager().task_index[name].yaml_path}) lacks metadata.scorer or "
                         "metadata.version (docs/evaluation.md)")
    source = meta.get("source") or f"{cfg.get('dataset_path')} ({cfg.get('test_split')})"
    return TaskInfo(name, meta["version"], meta["scorer"], source, str(task_manager().task_index[name].yaml_path))


def load_scorer(spec: str) -> tuple[Callable, Callable | None]:
    """`module.path:function` -> (score(doc, responses), optional score_batch(docs, responses_lists))."""
    module_name, _, fn_name = spec.partition(":")
    if not fn_name:
        raise ValueError(f"scorer {spec!r} must look like 'module.path:function'")
    module = importlib.import_module(module_name)
    fn = getattr(module, fn_name)
    batch = getattr(module, f"{fn_name}_batch", None)
    return fn, batch


def call_scorer(fn: Callable, batch: Callable | None, docs: list[dict], responses: list[list[str]],
                timeout_s: float) -> list[list]:
    """Score every problem's responses; passes `timeout_s` when the scorer accepts it."""
    def kw(f):
        return {"timeout_s": timeout_s} if "timeout_s" in inspect.signature(f).parameters else {}

    if batch is not None:
        out = batch(docs, responses, **kw(batch))
    else:
        out = [fn(d, r, **kw(fn)) for d, r in zip(docs, responses)]
    for d, r, s in zip(docs, responses, out):
        if len(s) != len(r):
            raise RuntimeError(f"scorer returned {len(s)} scores for {len(r)} responses "
                               f"(problem {str(d.get('problem'))[:60]!r})")
    return out


def list_tasks(data_dir: str | Path | None = None) -> list[dict]:
    """One row per task: name, size (rows of data_dir's file when given, else the YAML's metadata.size), source,
    version, scorer, the groups that contain it."""
    from lm_eval.tasks._index import Kind

    index = task_manager().task_index
    groups: dict[str, list[str]] = {}
    for gname, e in index.items():
        if e.kind == Kind.GROUP:
            for t in expand_tasks([gname]):
                groups.setdefault(t, []).append(gname)
    rows = []
    for name in sorted(n for n, e in index.items() if e.kind == Kind.TASK):
        info = task_info(name)
        size: Any = (raw_config(name).get("metadata") or {}).get("size", "?")
        if data_dir is not None and (Path(data_dir) / data_file_name(name)).is_file():
            with open(Path(data_dir) / data_file_name(name), encoding="utf-8") as f:
                size = sum(1 for line in f if line.strip())
        rows.append({"task": name, "size": size, "version": info.version, "source": info.source,
                     "scorer": info.scorer, "groups": ",".join(sorted(groups.get(name, [])))})
    return rows


def read_docs(task) -> list[dict]:
    """The task's evaluation docs (after process_docs), as plain dicts."""
    return [dict(d) for d in task.eval_docs]


def to_jsonable(x: Any) -> Any:
    return json.loads(json.dumps(x, default=str))
