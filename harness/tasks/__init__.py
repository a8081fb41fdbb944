"""The lm-eval task folder of the harness: one subfolder per task family (math/, code/, gpqa/, mini/).

Loaded with `lm_eval.tasks.TaskManager(include_path=TASKS_DIR, include_defaults=False)`; the plug-in contract
(every task's `metadata.scorer`, the `problem`/`gold` doc fields) is in docs/evaluation.md.
"""
from pathlib import Path

TASKS_DIR = Path(__file__).resolve().parent


def count_responses(doc: dict, results: list) -> dict:
    """lm-eval's per-doc metric (every task's `process_results`, through its utils.py): the number of responses
    kept; scoring happens in harness.evaluation with the task's `metadata.scorer`."""
    return {"n_responses": len(results[0]) if results and isinstance(results[0], list) else len(results)}
