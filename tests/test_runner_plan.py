"""Grids are data: every grid composes, and the plans have the cells and resources the paper needs."""

import json

import pytest

from harness.cli import main as cli
from harness.core.config import ConfigError, load_config
from harness.core.io import CONFIG_DIR
from harness.runner import plan, validate

GRIDS = sorted(p.stem for p in (CONFIG_DIR / "grid").glob("*.yaml"))


@pytest.mark.parametrize("grid", GRIDS)
def test_every_grid_composes_and_plans(grid):
    cfg = load_config("run", [f"grid={grid}"])
    cells = plan(cfg.grid)
    validate(cells)
    assert cells, grid
    assert len({c.cell_id for c in cells}) == len(cells)


def test_paper_grid_dry_run_lists_nine_cells_with_resources(capsys, tmp_path):
    assert cli(["run", "grid=paper", "dry_run=true", f"results_dir={tmp_path}"]) == 0
    out = capsys.readouterr().out
    lines = [l for l in out.splitlines() if l.strip().startswith("[train  ]")]
    assert len(lines) == 9
    # 32B: 8 nodes x 8 GPUs x 144 h (configs/grid/paper.yaml), 8B: 2 x 8 x 72
    assert sum("qwen3_32b" in l and "8 node(s) x 8 GPU(s) x 144 h" in l for l in lines) == 3
    assert sum("qwen3_8b" in l and "2 node(s) x 8 GPU(s) x 72 h" in l for l in lines) == 3
    # totals: 3 x (2*8*72 + 4*8*96 + 8*8*144) = 3 x (1152 + 3072 + 9216) = 40320 GPU-hours
    assert "9 cells to run, 9 to train, 40320 training GPU-hours" in out
    assert not any(tmp_path.iterdir()), "a dry run writes nothing"


def test_rho_grid_dry_run_lists_twelve_cells(capsys, tmp_path):
    assert cli(["run", "grid=rho", "dry_run=true", f"results_dir={tmp_path}"]) == 0
    lines = [l for l in capsys.readouterr().out.splitlines() if l.strip().startswith("[train  ]")]
    assert len(lines) == 12
    for v in ("top10", "top20", "top50", "full"):
        assert sum(f"-{v}-" in l for l in lines) == 3


def test_cell_ids_are_stable_and_follow_the_config():
    a = [c.cell_id for c in plan(load_config("run", ["grid=paper"]).grid)]
    b = [c.cell_id for c in plan(load_config("run", ["grid=paper"]).grid)]
    assert a == b
    changed = plan(load_config("run", ["grid=paper", "grid.train_overrides=['trainer.learning_rate=2e-6']"]).grid)
    assert not set(a) & {c.cell_id for c in changed}


def test_unknown_variant_in_a_grid_fails_before_compute(tmp_path):
    with pytest.raises(ConfigError, match="variant"):
        plan(load_config("run", ["grid=paper", "grid.variants=[top20,top33]"]).grid)
    assert cli(["run", "grid=nosuchgrid", f"results_dir={tmp_path}"]) == 2


def test_a_cell_is_never_run_by_two_processes_at_once(tmp_path):
    """Two `harness run`s of one grid (or a job started twice) would train one cell twice into one folder: the
    second cell process finds the cell's lock held, exits with BUSY_EXIT and writes nothing, so the first one's
    `running` status stands and the local launcher does not mark the cell failed."""
    import shutil
    import subprocess
    import sys

    from harness.core.io import REPO_ROOT
    from harness.core.status import BUSY_EXIT, hold_cell, this_process, write_status

    (src,) = sorted((REPO_ROOT / "results" / "runs" / "mini").glob("mini-base-s0-*"))
    cdir = tmp_path / "results" / "runs" / "mini" / src.name
    shutil.copytree(src, cdir)
    write_status(cdir, "running", **this_process())
    before = (cdir / "status.json").read_bytes()
    held = hold_cell(cdir)
    r = subprocess.run([sys.executable, "-m", "harness.runner", str(cdir)], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == BUSY_EXIT, r.stderr[-2000:]
    assert "is being run by another process" in r.stderr and f"pid {this_process()['pid']}" in r.stderr
    assert (cdir / "status.json").read_bytes() == before
    held.close()  # released: the same command now runs the cell (a base cell: evaluation done, nothing to compute)
    r = subprocess.run([sys.executable, "-m", "harness.runner", str(cdir)], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads((cdir / "status.json").read_text())["state"] == "complete"
