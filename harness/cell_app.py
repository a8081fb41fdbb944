"""SLURM launcher: each cell is one job of a Hydra multirun through hydra-submitit-launcher.

`harness run grid=paper launcher=slurm` groups the cells by their resources and, per group, runs

    python -m harness.cell_app -m cell_dir=DIR1,DIR2,... hydra/launcher=submitit_slurm \
        hydra.launcher.nodes=N hydra.launcher.gpus_per_node=G hydra.launcher.timeout_min=... ...

A cell has two jobs (harness/slurm.py `jobs`): `phase=train`, where every node (one task per node) runs
`accelerate launch` with DeepSpeed ZeRO-3 (configs/accelerate/zero3.yaml) over all the job's nodes, vLLM generating
the rollouts (TRL's `use_vllm`, colocated with training: `trainer.vllm`); then `phase=eval` on its own GPUs, which evaluates
the stored weights (vLLM data parallel over the job's GPUs), runs the analyses and writes status.json. `launcher.executor=submitit_local` runs the same path on one machine
(no accelerate: the cell runs in the job's process), which is how the tests exercise it. The submitting side is
harness/slurm.py.
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import hydra
from omegaconf import DictConfig

from harness.core.io import CONFIG_DIR, shipped_config


def _accelerate_train(cell, cdir: Path, launcher: dict) -> None:
    """Run this node's share of the cell's training under accelerate + DeepSpeed ZeRO-3."""
    import submitit

    from harness.runner import train_overrides_for

    env = submitit.JobEnvironment()
    gpus = int(cell.resources.get("gpus_per_node", 8))
    # the launcher's accelerate file and the DeepSpeed file it names: as given, else the package's copy (an installed
    # package has no configs/ in the current directory); the job runs in the submitting folder, paths stay relative
    accelerate = shipped_config(launcher.get("accelerate_config", "configs/accelerate/zero3.yaml"))
    import yaml

    ds = (yaml.safe_load(accelerate.read_text()).get("deepspeed_config") or {}).get("deepspeed_config_file")
    cmd = ["accelerate", "launch", "--config_file", str(accelerate),
           *(["--deepspeed_config_file", str(shipped_config(ds))] if ds else []),
           "--num_machines", str(env.num_nodes), "--machine_rank", str(env.node),
           "--main_process_ip", env.hostnames[0], "--main_process_port", "29500",
           "--num_processes", str(env.num_nodes * gpus),
           "-m", "harness.cli", "train", *train_overrides_for(cell, cdir / "train"),
           "resume=true",
           "trainer.use_vllm=true"]
    subprocess.run(cmd, check=True)


@hydra.main(config_path=str(CONFIG_DIR), config_name="cell", version_base="1.3")
def cell_job(cfg: DictConfig) -> str:
    """One SLURM job = one cell. Returns the cell's final state."""
    import json

    from harness.runner import load_cell, read_status, run_cell

    cdir = Path(cfg.cell_dir)
    launcher = json.loads(os.environ.get("HARNESS_LAUNCHER", "{}"))
    if "SLURM_JOB_ID" in os.environ and launcher.get("executor") == "submitit_slurm":
        cell = load_cell(cdir)
        import submitit

        node = submitit.JobEnvironment().node
        run_cell(cdir, train_fn=lambda: _accelerate_train(cell, cdir, launcher), write=(node == 0), phase=cfg.phase,
                 eval_overrides=tuple(cfg.eval_overrides))
    else:
        run_cell(cdir, phase=cfg.phase, eval_overrides=tuple(cfg.eval_overrides))
    return read_status(cdir)["state"]


if __name__ == "__main__":
    cell_job()
