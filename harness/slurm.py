"""Submitting a grid's cells to SLURM: a Hydra multirun of harness/cell_app.py per resource group.

`harness run grid=NAME launcher=slurm` calls `submit`; each job then runs `harness.cell_app` (see there).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf



def submit(groups: list[tuple[str, tuple, list[Path]]], cfg: DictConfig) -> None:
    """Launch the cells' jobs, grouped as harness.runner.job_groups makes them ((phase, (nodes, gpus per node,
    hours, evaluation overrides), cell folders)), one Hydra multirun per group: training jobs first (blocks until
    they end), then the evaluation jobs."""
    launcher = OmegaConf.to_container(cfg.launcher, resolve=True)
    for phase, (nodes, gpus, hours, extra), dirs in sorted(groups, key=lambda j: j[0] != "train"):
        sweep_dir = dirs[0].parent / ".submitit"
        ov = [f"cell_dir={','.join(map(str, dirs))}", f"phase={phase}", f"hydra/launcher={launcher['executor']}",
              f"hydra.sweep.dir={sweep_dir}", f"hydra.launcher.timeout_min={max(1, int(hours * 60))}",
              f"eval_overrides=[{','.join(repr(e) for e in extra)}]"]
        if launcher["executor"] == "submitit_slurm":
            ov += [f"hydra.launcher.nodes={nodes}", f"hydra.launcher.gpus_per_node={gpus}",
                   "hydra.launcher.tasks_per_node=1", f"hydra.launcher.cpus_per_task={launcher['cpus_per_task']}",
                   "hydra.launcher.max_num_timeout=3"]
            for k in ("partition", "account", "qos", "constraint", "mem_gb"):
                if launcher.get(k):
                    ov.append(f"hydra.launcher.{k}={launcher[k]}")
            if launcher.get("setup"):
                ov.append(f"hydra.launcher.setup=[{','.join(repr(s) for s in launcher['setup'])}]")
        env = {**os.environ, "HARNESS_LAUNCHER": json.dumps(launcher)}
        print("submitting:", " ".join(ov))
        subprocess.run([sys.executable, "-m", "harness.cell_app", "-m", *ov], env=env)  # in this folder

