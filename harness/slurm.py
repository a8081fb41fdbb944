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

from harness.core.io import REPO_ROOT


def submit(cell_dirs: list[Path], cells: list, cfg: DictConfig) -> None:
    """Launch cells as a Hydra multirun per resource group (blocks until the jobs end)."""
    launcher = OmegaConf.to_container(cfg.launcher, resolve=True)
    groups: dict[tuple, list[Path]] = {}
    for cdir, cell in zip(cell_dirs, cells):
        r = cell.resources
        key = (r.get("nodes", 1), r.get("gpus_per_node", 0), float(r.get("hours", 1)))
        groups.setdefault(key, []).append(Path(cdir).resolve())
    for (nodes, gpus, hours), dirs in groups.items():
        sweep_dir = dirs[0].parent / ".submitit"
        ov = [f"cell_dir={','.join(map(str, dirs))}", f"hydra/launcher={launcher['executor']}",
              f"hydra.sweep.dir={sweep_dir}", f"hydra.launcher.timeout_min={max(1, int(hours * 60))}"]
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
        subprocess.run([sys.executable, "-m", "harness.cell_app", "-m", *ov], cwd=REPO_ROOT, env=env)

