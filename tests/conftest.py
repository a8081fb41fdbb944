"""Shared test setup: everything offline, small thread counts, data from ../shared/data/math."""
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SHARED_MATH = REPO.parent / "shared" / "data" / "math"


@pytest.fixture(scope="session")
def math_data_dir() -> Path:
    if not (SHARED_MATH / "MANIFEST.json").exists():
        pytest.skip(f"benchmark copies not found at {SHARED_MATH}")
    return SHARED_MATH
