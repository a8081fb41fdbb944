"""The foundation both libraries stand on: file I/O and provenance (`io`), config loading (`config`), answer
checking (`scoring`) and the run-directory contract (`rundir`).

Nothing here imports `trainers`, `ablations` or any other part of `harness`; `tests/test_architecture.py`
checks it.
"""
