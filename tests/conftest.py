"""Shared test setup: everything offline, small thread counts.

Math data: `math_data_dir` is the small committed fixture set (tests/fixtures/math, same files and fields as the
benchmarks), so trainer, evaluation, runner and report tests run in any clone. `real_math_dir` is the real
benchmark copies in ../shared/data/math, for the tests whose point is the real data (gold answers, sizes): without
them such a test is skipped, except under CI=true, where it fails.
"""
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SHARED_MATH = REPO.parent / "shared" / "data" / "math"
FIXTURE_MATH = REPO / "tests" / "fixtures" / "math"


def require(path: Path, what: str) -> Path:
    """`path` if it exists; else skip, or fail under CI=true (CI must never pass by skipping)."""
    if path.exists():
        return path
    message = f"{what} not found at {path}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{message} (CI=true: tests that need it fail rather than skip)")
    pytest.skip(message)


@pytest.fixture(scope="session")
def math_data_dir() -> Path:
    """Small committed math fixtures (six benchmark files with the real fields)."""
    return FIXTURE_MATH


@pytest.fixture(scope="session")
def real_math_dir() -> Path:
    """The real benchmark copies (../shared/data/math)."""
    return require(SHARED_MATH / "MANIFEST.json", "benchmark copies").parent


@pytest.fixture(scope="session")
def shared_paper_dir() -> Path:
    """The paper's published numbers as handed to the project (../shared/paper)."""
    return require(REPO.parent / "shared" / "paper" / "published.csv", "the paper's CSV files").parent
