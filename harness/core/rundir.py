"""The contract of a training run directory and of evaluation folder names, in one place.

`trainers/train.py` writes a run directory; the runner, the evaluation, the analyses and the report read it, each
through these functions:

    config.yaml                  the resolved config (the only copy; other files name its sha256)
    provenance.json              git hash, library versions, host, the config's sha256
    metrics.jsonl                one line per optimiser step
    checkpoints/checkpoint-N/    TRL checkpoints (full state for resuming: weights, optimizer, scheduler, RNG; the
                                 last `save_total_limit` kept); complete once trainer_state.json (written last) is
                                 readable
    weights/step-N/              the model's weights (its dtype: 16-bit for the Qwen3 presets) and tokenizer after N
                                 steps, for evaluation curves and analyses (`save_weights_steps`); written to
                                 weights/.step-N.tmp and renamed, so a folder there is complete
    final/                       save_pretrained layout of the final model + tokenizer
    summary.json                 written last: the run has finished when it is readable

An evaluation of the untrained model is named `base`; of the model after N optimiser steps, `step-N`.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

CONFIG = "config.yaml"
PROVENANCE = "provenance.json"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
FINAL = "final"
CHECKPOINTS = "checkpoints"
WEIGHTS = "weights"
BASE = "base"


def complete_checkpoints(run_dir: str | Path, drop_partial: bool = False) -> dict[int, Path]:
    """`run_dir/checkpoints/checkpoint-N` by step, only complete ones: transformers writes trainer_state.json last,
    so a checkpoint without a readable one was cut off by a kill. `drop_partial` deletes those."""
    out = {}
    for p in Path(run_dir, CHECKPOINTS).glob("checkpoint-*"):
        step = p.name.removeprefix("checkpoint-")
        if not step.isdigit():
            continue
        try:
            json.loads((p / "trainer_state.json").read_text())
            out[int(step)] = p
        except (FileNotFoundError, json.JSONDecodeError):
            if drop_partial:
                shutil.rmtree(p, ignore_errors=True)
    return dict(sorted(out.items()))


def weights_dir(run_dir: str | Path, step: int) -> Path:
    """Where the weights of step N are saved for evaluation (weights/step-N/)."""
    return Path(run_dir, WEIGHTS, step_name(step))


def saved_weights(run_dir: str | Path) -> dict[int, Path]:
    """The intermediate models on disk by step: weights/step-N/, else a complete checkpoint-N (it holds the weights
    too; runs written before weights/ existed). The final model is `final_model`."""
    out = {s: p for s, p in complete_checkpoints(run_dir).items()}
    for p in Path(run_dir, WEIGHTS).glob("step-*"):
        step = parse_step(p.name)
        if step is not None and (p / "config.json").exists():
            out[step] = p
    return dict(sorted(out.items()))


def read_summary(run_dir: str | Path) -> dict | None:
    """summary.json of a finished run (None when the run has not finished or the file is unreadable)."""
    try:
        summary = json.loads(Path(run_dir, SUMMARY).read_text())
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return summary if isinstance(summary, dict) else None


def is_finished(run_dir: str | Path) -> bool:
    """Training finished: summary.json, written after final/, is readable. The weights may since have gone (they
    never enter git): `final_model` says whether they are on disk."""
    return read_summary(run_dir) is not None


def final_model(run_dir: str | Path) -> Path | None:
    """The finished run's final model folder, None when the run has not finished or its weights are not on disk."""
    final = Path(run_dir, FINAL)
    return final if is_finished(run_dir) and (final / "config.json").exists() else None


def final_step(run_dir: str | Path) -> int:
    """The optimiser step of a finished run's final/ model (summary.json's global_step)."""
    summary = read_summary(run_dir)
    if summary is None or not isinstance(summary.get("global_step"), int):
        raise FileNotFoundError(f"{Path(run_dir)}: training has not finished ({SUMMARY} missing or unreadable)")
    return summary["global_step"]


def model_dir(path: str) -> str:
    """A training run directory -> its final model folder; any other path or hub id unchanged."""
    p = Path(path).expanduser()
    if p.is_dir() and not (p / "config.json").exists() and (p / FINAL / "config.json").exists():
        return str(p / FINAL)
    return str(p) if p.exists() else path


def step_name(step: int) -> str:
    """The evaluation folder name of the model after `step` optimiser steps."""
    return f"step-{int(step)}"


def parse_step(name: str) -> int | None:
    """`step-N` -> N, `base` -> 0, anything else -> None."""
    if name == BASE:
        return 0
    head, _, num = name.partition("-")
    return int(num) if head == "step" and num.isdigit() else None


def eval_dirs(parent: str | Path) -> dict[str, Path]:
    """The evaluation folders under `parent` ({"base": .., "step-N": ..}), base first, then by step."""
    found = [(parse_step(d.name), d) for d in Path(parent).glob("*") if d.is_dir()]
    named = sorted(((s, d.name != BASE, d) for s, d in found if s is not None), key=lambda t: t[:2])
    return {d.name: d for _, _, d in named}


def config_sha256(run_dir: str | Path) -> str:
    """sha256 of the run's config.yaml: how provenance.json and summary.json name the config they belong to."""
    return hashlib.sha256(Path(run_dir, CONFIG).read_bytes()).hexdigest()
