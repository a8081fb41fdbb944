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

from harness.config import load_config
from harness.runner import plan, read_status

pytestmark = pytest.mark.slow
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "math"


def tiny_grid(results_dir: Path) -> list[str]:
    """A 3-cell grid (base eval, full, top20) on the tiny random model: 4 optimiser steps, 2 per rollout batch
    (configs/trainer/dapo_cpu.yaml), checkpoints and evaluations every 2 steps, i.e. at rollout boundaries: TRL
    does not save a half-used rollout buffer, so only a resume at a boundary can repeat the same samples."""
    return [
        "grid=mini", f"results_dir={results_dir}", "report=false", "grid.models=[tiny]", "grid.variants=[full,top20]",
        "grid.trainer=dapo_cpu", "grid.data=local", "grid.base_eval=true",
        f"grid.train_overrides=['data.path={SHARED}/aime24.jsonl','data.limit=8','trainer.max_steps=4',"
        "'trainer.dynamic_sampling=false','trainer.max_completion_length=12','trainer.overlong_buffer=4']",
        "grid.eval.tasks=[aime24]", "grid.eval.every_n_steps=2",
        f"grid.eval.overrides=['k=2','limit=2','data_dir={SHARED}','generation.max_gen_toks=8']",
    ]


def harness_run(args, **kw):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen([sys.executable, "-m", "harness.cli", "run", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True, **kw)


def results(results_dir: Path) -> dict:
    out = {}
    for summary in sorted((results_dir / "runs" / "mini").glob("*/eval/*/summary.csv")):
        df = pd.read_csv(summary).drop(columns=["model"])
        out[f"{summary.parents[2].name}/{summary.parent.name}"] = df.to_dict("records")
    for metrics in sorted((results_dir / "runs" / "mini").glob("*/train/metrics.jsonl")):
        rows = [json.loads(l) for l in metrics.read_text().splitlines()]
        out[metrics.parents[1].name + "/metrics"] = [
            {k: v for k, v in r.items() if k in ("step", "loss", "reward_mean", "entropy_mean", "grad_norm")}
            for r in rows]
    return out


@pytest.mark.skipif(not SHARED.exists(), reason="needs ../shared/data/math")
def test_killed_run_resumes_to_the_same_results(tmp_path):
    ref_dir, kill_dir = tmp_path / "ref", tmp_path / "killed"
    ref = harness_run(tiny_grid(ref_dir))
    out, _ = ref.communicate(timeout=900)
    assert ref.returncode == 0, out

    cells = plan(load_config("run", tiny_grid(kill_dir)).grid)
    base, full, top20 = (kill_dir / "runs" / "mini" / c.cell_id for c in cells)
    proc = harness_run(tiny_grid(kill_dir))
    deadline = time.time() + 900
    # kill the whole run once `full` has a checkpoint but has not finished training
    while not (full / "train" / "checkpoints" / "checkpoint-2" / "trainer_state.json").exists():
        assert proc.poll() is None and time.time() < deadline, proc.stdout.read() if proc.poll() is not None else ""
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert read_status(base)["state"] == "complete"
    assert read_status(full)["state"] == "running"   # killed: never got to say otherwise
    assert read_status(top20)["state"] == "pending"
    base_mtime = (base / "status.json").stat().st_mtime_ns

    again = harness_run(tiny_grid(kill_dir))
    out, _ = again.communicate(timeout=900)
    assert again.returncode == 0, out
    assert "3 cells, 2 to run" in out
    assert (base / "status.json").stat().st_mtime_ns == base_mtime, "a complete cell was run again"
    assert json.loads((full / "train" / "provenance.json").read_text())["resumed_from"].endswith("checkpoint-2")

    a, b = results(ref_dir), results(kill_dir)
    assert a.keys() == b.keys() and len(a) == 1 + 2 * 2 + 2   # base + 2 cells x 2 evaluated steps, + 2 metrics logs
    assert a == b


@pytest.mark.skipif(not SHARED.exists(), reason="needs ../shared/data/math")
def test_slurm_launcher_path_with_submitit_local_executor(tmp_path):
    """launcher=slurm goes through hydra-submitit-launcher; its local executor runs the same path here."""
    args = tiny_grid(tmp_path) + ["grid.variants=[full]", "grid.base_eval=false", "grid.eval.every_n_steps=null",
                                  "launcher=slurm", "launcher.executor=submitit_local"]
    proc = harness_run(args)
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, out
    assert "hydra/launcher=submitit_local" in out
    (cell,) = plan(load_config("run", args).grid)
    cdir = tmp_path / "runs" / "mini" / cell.cell_id
    assert read_status(cdir)["state"] == "complete"
    assert (cdir / "eval" / "step-4" / "summary.csv").exists()
    assert list((tmp_path / "runs" / "mini" / ".submitit").rglob("*_log.out")), "submitit wrote no job log"
