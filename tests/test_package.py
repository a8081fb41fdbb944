"""Installed like a package: `pip install` (not editable) of a copy of the project, run from another folder, finds its
configs, task files and published numbers in the package, and writes every relative path into the user's folder,
child processes included; nothing is read from or written into a checkout."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.core.io import REPO_ROOT

pytestmark = pytest.mark.slow

# what the wheel is built from (pyproject.toml's packages, the configs and published numbers they link to)
SOURCES = ("pyproject.toml", "README.md", "harness", "trainers", "ablations", "configs", "results/published")
# tests/test_runner_e2e.py's shortened warm start: seconds instead of minutes
WARM = ["model.warmstart.hidden_size=16", "model.warmstart.num_layers=1", "model.warmstart.num_heads=2",
        "model.warmstart.num_kv_heads=1", "model.warmstart.intermediate_size=32", "model.warmstart.steps=3",
        "model.warmstart.batch_size=4", "model.warmstart.gate_problems=8", "model.warmstart.gate_success=[0,1]",
        "model.warmstart.gate_max_fixed_entropy=100", "model.warmstart.gate_min_fork_entropy=0"]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The project pip-installed (no dependencies, not editable) into a folder of its own, from a copy of its files
    that has no git metadata, with pip started in an unrelated folder."""
    root = tmp_path_factory.mktemp("package")
    src, site, elsewhere = root / "src", root / "site", root / "elsewhere"
    elsewhere.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
    for name in SOURCES:
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        if (REPO_ROOT / name).is_dir():
            shutil.copytree(REPO_ROOT / name, src / name, symlinks=True, ignore=ignore)
        else:
            shutil.copy2(REPO_ROOT / name, src / name)
    res = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                          "--no-index", "--target", str(site), str(src)], cwd=elsewhere, capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    shutil.rmtree(src)  # the installed copy must not need its source
    return site


def _harness(site: Path, cwd: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    # the console script pip wrote, with the installed copy first on the path (ahead of any editable install)
    env = {**os.environ, "PYTHONPATH": str(site), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([str(site / "bin" / "harness"), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_the_package_holds_its_data_and_runs_from_any_folder(installed, tmp_path):
    site = installed
    for f in ("harness/configs/train.yaml", "harness/configs/grid/mini.yaml", "harness/configs/deepspeed/zero3.json",
              "harness/tasks/math/math500.yaml", "harness/reporting/published/published.csv"):
        assert (site / f).is_file() and not (site / f).is_symlink(), f
    assert not (site / "configs").exists() and not (site / "results").exists()

    work = tmp_path / "work"
    work.mkdir()
    where = subprocess.run([sys.executable, "-c", "import harness.core.io as io; print(io.CONFIG_DIR); "
                            "print(io.git_hash())"], cwd=work, env={**os.environ, "PYTHONPATH": str(site)},
                           capture_output=True, text=True)
    assert where.stdout.split() == [str(site / "harness" / "configs"), "unknown"]

    # the runner and its cell processes: a relative results_dir and the warm start's relative model.path land here
    train = ["model.path=warm", *WARM]
    res = _harness(site, work, "run", "results_dir=rel", "report=false", "grid.variants=[full]", "grid.seeds=[0]",
                   "only=*base*", f"grid.train_overrides=[{','.join(repr(o) for o in train)}]",
                   "grid.eval.overrides=['k=2','limit=4']", "grid.analyses=[]")
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    (cell,) = (work / "rel" / "runs" / "mini").glob("mini-base-s0-*")
    assert (cell / "status.json").is_file() and '"complete"' in (cell / "status.json").read_text()
    assert (work / "warm" / "config.json").is_file()
    assert sorted(p.name for p in work.iterdir()) == ["rel", "warm", "warm.lock"]  # nothing else here ...
    assert sorted(p.name for p in site.iterdir() if not p.name.endswith(".dist-info")) == \
        ["ablations", "bin", "harness", "trainers"]  # ... nor into the package
