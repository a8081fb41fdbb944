"""The lm-eval task folder of the harness: one subfolder per task family (math/, code/, gpqa/, mini/).

Loaded with `lm_eval.tasks.TaskManager(include_path=TASKS_DIR, include_defaults=False)` by `harness eval`, and
usable from stock lm-eval (`lm_eval --include_path harness/tasks --tasks aime2024 ...`, docs/evaluation.md); the
plug-in contract (every task's `metadata.scorer`, the `problem`/`gold` doc fields) is in docs/evaluation.md.

No task or group here may have the name of an lm-eval built-in (tests/test_eval_tasks.py checks it against the
installed lm-eval): with `--include_path` a same-named task of ours would replace lm-eval's. Three math tasks
were renamed for that (issue 13); `RENAMED` maps the old names, which older result and replay files carry.
"""
from pathlib import Path

TASKS_DIR = Path(__file__).resolve().parent

RENAMED = {"aime24": "aime2024", "aime25": "aime2025", "minerva_math": "minerva"}  # old name -> current name


def current_name(name: str) -> str:
    """A task name as it is now (an old name of a renamed task -> its new name; any other name unchanged)."""
    return RENAMED.get(name, name)


def count_responses(doc: dict, results: list) -> dict:
    """lm-eval's per-doc metric (every task's `process_results`, through its utils.py): the number of responses
    kept; scoring happens in harness.evaluation with the task's `metadata.scorer`."""
    return {"n_responses": len(results[0]) if results and isinstance(results[0], list) else len(results)}
