"""Evaluation through lm-eval: `evaluate()` (Python API), `main` (`harness eval`), `tasks_main` (`harness tasks`).

Modules: tasks.py (task folder, protocol overrides, scorers), backends.py (hf, vllm), replay.py, core.py
(evaluate: generate, score, metrics, files). See docs/evaluation.md.
"""
from harness.evaluation.cli import main, tasks_main
from harness.evaluation.core import evaluate

__all__ = ["evaluate", "main", "tasks_main"]
