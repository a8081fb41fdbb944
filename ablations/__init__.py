"""The paper's token-entropy analyses, one module per analysis (`harness analyze <name>`, configs/analyze/<name>.yaml).

Each module's `main(cfg) -> int` is the command; shared reading of runs and responses is in `common`, the pure
entropy math in `token_entropy`.
"""

ANALYSES = ("entropy", "overlap", "shift", "temperature")
