"""The lm-eval task folder of the harness: one subfolder per task family (math/, code/, gpqa/, mini/).

Loaded with `lm_eval.tasks.TaskManager(include_path=TASKS_DIR, include_defaults=False)`; the plug-in contract
(every task's `metadata.scorer`, the `problem`/`gold` doc fields) is in docs/evaluation.md.
"""
from pathlib import Path

TASKS_DIR = Path(__file__).resolve().parent
