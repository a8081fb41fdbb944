"""The runner end to end on a tiny grid: a run killed part-way and started again gives the same results as an
uninterrupted run, and finished cells are not run again."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from harness.core.config import load_config
from harness.runner import plan, read_status

pytestmark = pytest.mark.slow


# A shortened warm start with its quality gate opened (tests/test_mini.py uses the same): seconds instead of minutes.
WARM = ["model.warmstart.hidden_size=16", "model.warmstart.num_layers=1", "model.warmstart.num_heads=2",
        "model.warmstart.num_kv_heads=1", "model.warmstart.intermediate_size=32", "model.warmstart.steps=3",
        "model.warmstart.batch_size=4", "model.warmstart.gate_problems=8", "model.warmstart.gate_success=[0,1]",
        "model.warmstart.gate_max_fixed_entropy=100", "model.warmstart.gate_min_fork_entropy=0"]


def tiny_grid(results_dir: Path, base: Path | None = None) -> list[str]:
    """The `mini` grid, shortened: base eval + full + top20 (seed 0), 8 optimiser steps of which 4 per rollout
    batch (configs/trainer/dapo_mini.yaml), checkpoints and evaluations every 4 steps, i.e. at rollout boundaries:
    TRL does not save a half-used rollout buffer, so only a resume at a boundary can repeat the same samples.
    The grid's analyses (entropy on the base, overlap and shift on trained seed-0 cells) run as configured."""
    train = [f"model.path={base or results_dir / 'base'}", *WARM, "trainer.max_steps=8", "data.n_train=64",
             "trainer.save_steps=4"]  # full states to resume from (evaluated weights: eval.every_n_steps)
    return [
        "grid=mini", f"results_dir={results_dir}", "report=false", "grid.variants=[full,top20]", "grid.seeds=[0]",
        f"grid.train_overrides=[{','.join(repr(o) for o in train)}]", "grid.eval.every_n_steps=4",
        "grid.eval.overrides=['k=4','limit=20']",
    ]


def harness_run(args, **kw):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen([sys.executable, "-m", "harness.cli", "run", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True, **kw)


def results(results_dir: Path) -> dict:
    out = {}
    for summary in sorted((results_dir / "runs" / "mini").glob("*/eval/*/*/summary.csv")):
        df = pd.read_csv(summary).drop(columns=["model"])
        out[f"{summary.parents[3].name}/{summary.parents[1].name}/{summary.parent.name}"] = df.to_dict("records")
    for metrics in sorted((results_dir / "runs" / "mini").glob("*/train/metrics.jsonl")):
        rows = [json.loads(l) for l in metrics.read_text().splitlines()]
        out[metrics.parents[1].name + "/metrics"] = [
            {k: v for k, v in r.items() if k in ("step", "loss", "reward_mean", "entropy_mean", "grad_norm")}
            for r in rows]
    for table in sorted((results_dir / "runs" / "mini").glob("*/analysis/*/*.csv")):
        if table.stem in ("entropy", "overlap", "shift"):
            out[f"{table.parents[2].name}/{table.parent.name}/{table.stem}"] = \
                pd.read_csv(table).round(6).to_dict("records")
    return out


def test_killed_run_resumes_to_the_same_results(tmp_path):
    ref_dir, kill_dir, warm = tmp_path / "ref", tmp_path / "killed", tmp_path / "warm"  # one warm start: same ids
    ref = harness_run(tiny_grid(ref_dir, warm))
    out, _ = ref.communicate(timeout=900)
    assert ref.returncode == 0, out

    cells = plan(load_config("run", tiny_grid(kill_dir, warm)).grid)
    base, full, top20 = (kill_dir / "runs" / "mini" / c.cell_id for c in cells)
    proc = harness_run(tiny_grid(kill_dir, warm) + ["jobs=1"])  # one cell at a time: base, then full (killed), top20
    deadline = time.time() + 900
    # kill the whole run once `full` has a checkpoint but has not finished training
    while not (full / "train" / "checkpoints" / "checkpoint-4" / "trainer_state.json").exists():
        assert proc.poll() is None and time.time() < deadline, proc.stdout.read() if proc.poll() is not None else ""
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert read_status(base)["state"] == "complete"
    assert read_status(full)["state"] == "running"   # killed: never got to say otherwise
    assert read_status(top20)["state"] == "pending"
    base_mtime = (base / "status.json").stat().st_mtime_ns

    again = harness_run(tiny_grid(kill_dir, warm))
    out, _ = again.communicate(timeout=900)
    assert again.returncode == 0, out
    assert "3 cells, 2 to run" in out
    assert (base / "status.json").stat().st_mtime_ns == base_mtime, "a complete cell was run again"
    assert json.loads((full / "train" / "provenance.json").read_text())["resumed_from"].endswith("checkpoint-4")

    # a third run has nothing to do: no cell reruns and the (deleted) warm start is not rebuilt
    import shutil

    shutil.rmtree(warm)
    third = harness_run(tiny_grid(kill_dir, warm))
    out, _ = third.communicate(timeout=300)
    assert third.returncode == 0 and "3 cells, 0 to run" in out, out
    assert not warm.exists()

    a, b = results(ref_dir), results(kill_dir)
    assert a.keys() == b.keys() and len(a) == 1 + 2 * 2 + 2 + 5   # base + 2 cells x 2 evaluated steps, 2 metrics logs, 5 analysis tables
    assert a == b

    # another evaluation setting: the stored weights are evaluated again beside the first evaluation, nothing trains
    metrics_mtime = (full / "train" / "metrics.jsonl").stat().st_mtime_ns
    k2 = [o if not o.startswith("grid.eval.overrides") else "grid.eval.overrides=['k=2','limit=20']"
          for o in tiny_grid(kill_dir, warm)]
    fourth = harness_run(k2)
    out, _ = fourth.communicate(timeout=600)
    assert fourth.returncode == 0 and "3 cells, 3 to run: 0 to train, 0 to retrain" in out, out
    assert (full / "train" / "metrics.jsonl").stat().st_mtime_ns == metrics_mtime, "training ran again"
    new = {c.cell_id: c.eval_id for c in plan(load_config("run", k2).grid)}
    for c in cells:
        assert new[c.cell_id] != c.eval_id
        cdir = kill_dir / "runs" / "mini" / c.cell_id
        assert (cdir / "eval" / c.eval_id).is_dir() and (cdir / "eval" / new[c.cell_id]).is_dir()  # side by side
        assert read_status(cdir)["eval_id"] == new[c.cell_id]

