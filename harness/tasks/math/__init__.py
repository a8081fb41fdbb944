"""The paper's six math benchmarks (lm-eval YAML tasks); shared code in utils.py."""
