"""Small, dependable file helpers: atomic writes and provenance.

Every number the harness writes carries its provenance (`provenance()`), and every file is
written atomically (`atomic_write_*`): a reader sees the old file or the new one, never half.
"""
from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = REPO_ROOT / "configs"

_LIBS = ("torch", "transformers", "trl", "lm_eval", "math-verify", "hydra-core", "tokenizers",
         "accelerate", "vllm", "deepspeed", "pandas", "entropy-harness")


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write `text` to `path` via a temporary file in the same folder and os.replace."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def atomic_write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> Path:
    return atomic_write_text(path, "".join(json.dumps(r, default=str) + "\n" for r in rows))


def append_jsonl(path: str | os.PathLike, row: dict) -> None:
    """Append one line and flush it (metrics logs: a crash loses at most the line being written)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(row, default=str) + "\n")
        f.flush()


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def git_hash(short: bool = False) -> str:
    """The repository's HEAD commit, with '+dirty' when the tree has uncommitted changes; 'unknown' outside git."""
    try:
        h = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
                           timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except Exception:
        return "unknown"
    h = h[:10] if short else h
    return h + ("+dirty" if dirty else "")


def library_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in _LIBS:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def provenance(config: Any = None, **extra: Any) -> dict:
    """Provenance block attached to every result file: git hash, versions, host, time, and the config (left out
    when the file sits next to the config it names, e.g. a run directory's config.yaml by its sha256)."""
    if config is not None and not isinstance(config, dict):
        from omegaconf import OmegaConf
        config = OmegaConf.to_container(config, resolve=True)
    return {
        "git_hash": git_hash(),
        "versions": library_versions(),
        "host": platform.node(),
        "platform": platform.platform(),
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **({"config": config} if config is not None else {}),
        **extra,
    }
