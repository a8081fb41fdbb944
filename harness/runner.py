"""The matrix runner: `harness run grid=NAME` runs every cell of a grid that is not complete.

A cell is one (model, variant, seed, trainer preset, eval suite). Its id is derived from its resolved
config (readable prefix + hash), its directory is `<results_dir>/runs/<grid>/<cell_id>/`:

    cell.json     the cell definition: train overrides, eval overrides, resources (written first)
    log.txt       everything the cell printed
    train/        the training run directory (metrics.jsonl, checkpoints/, final/)
    eval/step-N/  evaluation directories (summary.csv, results_*.json, samples_*.jsonl)
    eval/base/    eval-only cells (variant "base"): the untrained model
    status.json   written last and atomically: {"state": "complete" | "failed" | "running", ...}

A cell is complete only when status.json says so. Rerunning the same command skips complete cells,
resumes an unfinished cell from its last training checkpoint and skips evaluations already written.
Each cell runs in its own process (`python -m harness.runner CELL_DIR`), so a crash in one cell is
recorded in its status and the others go on. Launchers: `local` (jobs=N at once) and `slurm`
(hydra-submitit-launcher; see harness/cell_app.py).
"""
from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from harness.core.config import ConfigError, load_config, to_dict
from harness.core.io import REPO_ROOT, atomic_write_json, provenance

STATES = ("pending", "running", "complete", "failed")


@dataclass(frozen=True)
class Cell:
    """One cell of a grid; everything needed to run it, as plain data."""

    grid: str
    cell_id: str
    model: str                      # model preset name (configs/model/<model>.yaml)
    variant: str                    # variant preset (configs/variant/) or "base" (eval only)
    seed: int
    trainer: str
    data: str
    train_overrides: tuple[str, ...]
    eval_tasks: tuple[str, ...]
    eval_overrides: tuple[str, ...]
    eval_every: int | None
    resources: dict = field(default_factory=dict, hash=False, compare=False)
    analyses: tuple = ()            # entropy analyses run in the cell after evaluation (ablations/)

    @property
    def eval_only(self) -> bool:
        return self.variant == "base"

    def to_json(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


# ----------------------------------------------------------------------------------------------
# Planning (pure): grid config -> cells


def _cell_id(cell: Cell) -> str:
    """Readable prefix + a hash of the cell's *resolved* configs (training and evaluation).

    Editing a preset that a cell uses gives it a new id (a new cell, run afresh); editing nothing
    keeps every id, so finished cells are found again. Output paths are not part of the hash.
    """
    resolved = {"eval": _resolved("eval", list(cell.eval_overrides), drop=("model", "out")),
                "eval_tasks": cell.eval_tasks, "eval_every": cell.eval_every, "analyses": cell.analyses}
    if cell.eval_only:
        resolved["model"] = _resolved("train", [f"model={cell.model}", *cell.train_overrides], drop=())["model"]
    else:
        resolved["train"] = _resolved("train", train_overrides_for(cell), drop=("out", "resume"))
    digest = hashlib.sha256(json.dumps(resolved, sort_keys=True, default=str).encode()).hexdigest()[:8]
    return f"{cell.model}-{cell.variant}-s{cell.seed}-{digest}"


def _resolved(name: str, overrides: list[str], drop: tuple[str, ...]) -> dict:
    d = to_dict(load_config(name, overrides))
    for k in drop:
        d.pop(k, None)
    return d


def train_overrides_for(cell: Cell, out_dir: Path | None = None) -> list[str]:
    """The `harness train` overrides that define this cell's training run."""
    ov = [f"model={cell.model}", f"variant={cell.variant}", f"trainer={cell.trainer}",
          f"data={cell.data}", f"seed={cell.seed}", *cell.train_overrides]
    if cell.eval_every:
        ov.append(f"trainer.save_steps={cell.eval_every}")
    if out_dir is not None:
        ov.append(f"out={out_dir}")
    return ov


def plan(grid: DictConfig) -> list[Cell]:
    """All cells of a grid, in a stable order: models x variants x seeds (base cells first)."""
    g = to_dict(grid) if isinstance(grid, DictConfig) else dict(grid)
    for key in ("name", "models", "variants", "seeds", "trainer", "data"):
        if key not in g or g[key] in (None, []):
            raise ConfigError(f"grid {g.get('name', '?')!r} has no {key!r}")
    ev = g.get("eval") or {}
    resources = g.get("resources") or {}
    cells = []
    for model in g["models"]:
        variants = (["base"] if g.get("base_eval") else []) + list(g["variants"])
        for variant in variants:
            for seed in (g["seeds"] if variant != "base" else [g["seeds"][0]]):
                base = variant == "base"
                cell = Cell(
                    grid=g["name"], cell_id="", model=model, variant=variant, seed=int(seed),
                    trainer=g["trainer"], data=g["data"],
                    # a base cell trains nothing: only overrides of its model apply
                    train_overrides=tuple(o for o in (g.get("train_overrides") or [])
                                          if not base or o.startswith("model.")),
                    eval_tasks=tuple(ev.get("tasks") or []),
                    eval_overrides=tuple(ev.get("overrides") or []),
                    eval_every=None if base else ev.get("every_n_steps"),
                    resources=dict(resources.get(model) or resources.get("default") or {}),
                    analyses=tuple(a for a in (g.get("analyses") or []) if _applies(a, variant, int(seed))),
                )
                cells.append(dataclasses.replace(cell, cell_id=_cell_id(cell)))
    return cells


def _applies(analysis: dict, variant: str, seed: int) -> bool:
    """A grid's `analyses` entry: {name, variants: [..] | null (all trained) , seeds: [..] | null, overrides}."""
    from harness.cli import ANALYSES

    if analysis.get("name") not in ANALYSES:
        raise ConfigError(f"grid analysis {analysis.get('name')!r} unknown; choose one of: {', '.join(ANALYSES)}")
    variants = analysis.get("variants")
    if variants is None:
        return variant != "base"
    seeds = analysis.get("seeds")
    return variant in variants and (seeds is None or seed in seeds)


def validate(cells: list[Cell]) -> None:
    """Reject a grid that lists a cell twice (plan() has already composed every cell's configs)."""
    seen: set[tuple] = set()
    for cell in cells:
        key = (cell.model, cell.variant, cell.seed)
        if key in seen:
            raise ConfigError(f"grid lists cell {key} twice")
        seen.add(key)


# ----------------------------------------------------------------------------------------------
# Cell state on disk


def cell_dir(results_dir: str | Path, cell: Cell) -> Path:
    return Path(results_dir) / "runs" / cell.grid / cell.cell_id


def read_status(cdir: Path) -> dict:
    try:
        return json.loads((cdir / "status.json").read_text())
    except FileNotFoundError:
        return {"state": "pending"}
    except (json.JSONDecodeError, OSError) as e:
        return {"state": "failed", "error": f"unreadable status.json: {e}"}


def write_status(cdir: Path, state: str, **extra) -> None:
    assert state in STATES, state
    atomic_write_json(cdir / "status.json", {"state": state, "time_utc": time.strftime(
        "%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **extra})


def this_process() -> dict:
    """What a `running` status records about its writer: pid, host and the process's start time (boot clock
    ticks, /proc), so that a later reader can tell a live cell from one whose process is gone."""
    return {"pid": os.getpid(), "host": platform.node(), "pid_start": _proc_stat(os.getpid())[1]}


def _proc_stat(pid: int) -> tuple[str | None, str | None]:
    """(state letter, start time) of a process on this host from /proc/<pid>/stat; (None, None) if unreadable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None, None
    return fields[0], fields[19]  # stat fields 3 (state) and 22 (starttime)


def process_alive(status: dict) -> bool | None:
    """Whether the process a `running` status names still runs: True/False on its own host; None where that
    cannot be told (another host, e.g. a SLURM node seen from the login node, or no pid recorded)."""
    pid, host = status.get("pid"), status.get("host")
    if not isinstance(pid, int) or isinstance(pid, bool) or host != platform.node():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, under another user
    state, start = _proc_stat(pid)
    if state == "Z":  # exited, not yet reaped by its parent
        return False
    return not (start and status.get("pid_start") and start != status["pid_start"])  # pid reused by another


def cell_state(status: dict) -> tuple[str, str]:
    """(state to show, note) of a cell from its status.json: a `running` cell whose process is gone on this
    host is `interrupted` (the next `harness run` resumes it)."""
    state = str(status.get("state", "pending"))
    if state != "running":
        return state, str(status.get("error") or "")
    alive = process_alive(status)
    where = f"pid {status.get('pid')} on {status.get('host')}"
    if alive is False:
        return "interrupted", f"{where} is gone: killed or crashed before recording a result; harness run resumes it"
    if alive is None:
        return "running", (f"{where}: not checkable from {platform.node()}" if status.get("pid") is not None
                           else "no process recorded")
    return "running", where


def _progress(cdir: Path) -> int:
    """Optimiser steps logged so far by the cell's training run."""
    try:
        with open(cdir / "train" / "metrics.jsonl", "rb") as f:
            return sum(1 for _ in f)
    except FileNotFoundError:
        return 0


def _last_metrics(cdir: Path) -> dict:
    try:
        lines = (cdir / "train" / "metrics.jsonl").read_text().strip().splitlines()
        return json.loads(lines[-1]) if lines else {}
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


# ----------------------------------------------------------------------------------------------
# Running one cell (in its own process)


def _evaluate(cell: Cell, model_path: str, out_dir: Path) -> None:
    """Evaluate one checkpoint into out_dir unless it is already there (summary.csv is written last)."""
    if (out_dir / "summary.csv").exists():
        return
    from harness.evaluation import main as eval_main

    cfg = load_config("eval", [f"checkpoint={model_path}", f"tasks=[{','.join(cell.eval_tasks)}]",
                               f"out={out_dir}", f"seed={cell.seed}", *cell.eval_overrides])
    rc = eval_main(cfg)
    if rc:
        raise RuntimeError(f"evaluation of {model_path} exited with {rc}")


def _run_analyses(cell: Cell, cdir: Path) -> None:
    """The grid's analyses for this cell, into <cell>/analysis/ (skipped when their CSV is there).

    Overrides may name `{cell_dir}`, `{eval_dir}` (the cell's last evaluation) and `{base_model}`."""
    import importlib

    evals = sorted((cdir / "eval").glob("*/summary.csv"), key=lambda p: (p.parent.name != "base",
                   int(p.parent.name.split("-")[1]) if p.parent.name.startswith("step-") else -1))
    fields = {"cell_dir": cdir, "eval_dir": evals[-1].parent if evals else cdir / "eval", "base_model": ""}
    if any("{base_model}" in o for a in cell.analyses for o in a.get("overrides", [])):
        fields["base_model"] = base_model_path(cell, cdir.parents[2])
    for a in cell.analyses:
        out = cdir / "analysis"
        if (out / f"{a['name']}.csv").exists():
            continue
        ov = [o.format(**fields) for o in a.get("overrides", [])] + [f"out={out}"]
        if not cell.eval_only and not any(o.startswith("run=") for o in ov):
            ov.append(f"run={cdir}")
        rc = importlib.import_module(f"ablations.{a['name']}").main(load_config(f"analyze/{a['name']}", ov))
        if rc:
            raise RuntimeError(f"analysis {a['name']} exited with {rc}")


def base_model_path(cell: Cell, results_dir: str | Path = "results") -> str:
    """The untrained model of a cell as a local folder or hub id, prepared on demand (trainers.train).

    A mini warm start is built by its `model.prepare` hook; a tiny random model is built once into
    `<results_dir>/cache/tiny/` (the same bytes every training cell of that seed starts from).
    """
    from trainers.train import resolve_model_path

    model_ov = [o for o in cell.train_overrides if o.startswith("model.")]
    model = load_config("train", [f"model={cell.model}", *model_ov]).model
    return resolve_model_path(model, cache_dir=Path(results_dir) / "cache" / "tiny")


def load_cell(cdir: Path) -> Cell:
    return Cell(**{k: (tuple(v) if isinstance(v, list) else v)
                   for k, v in json.loads((Path(cdir) / "cell.json").read_text()).items()})


def _train_local(cell: Cell, train_dir: Path) -> None:
    from trainers.train import train

    # resume=true: continue from the last complete checkpoint if there is one, else start afresh
    train(load_config("train", train_overrides_for(cell, train_dir) + ["resume=true"]))


def run_cell(cdir: str | Path, train_fn=None, write: bool = True) -> None:
    """Train (resuming if a checkpoint exists) and evaluate one cell; status.json is written last.

    `train_fn` replaces the in-process training (the SLURM path runs accelerate); with `write=False`
    (non-zero nodes of a multi-node job) the process only trains.
    """
    cdir = Path(cdir)
    cell = load_cell(cdir)
    t0 = time.time()
    if write:
        write_status(cdir, "running", **this_process())
    try:
        timings = {}
        if cell.eval_only:
            _evaluate(cell, base_model_path(cell, cdir.parents[2]), cdir / "eval" / "base")
            timings["eval_s"] = round(time.time() - t0, 1)
        else:
            train_dir = cdir / "train"
            if not (train_dir / "final" / "config.json").exists():
                train_fn() if train_fn else _train_local(cell, train_dir)
            timings["train_s"] = round(time.time() - t0, 1)
            if not write:
                return
            t1 = time.time()
            if cell.eval_every:
                from trainers.train import complete_checkpoints

                for step, ckpt in complete_checkpoints(train_dir).items():
                    _evaluate(cell, str(ckpt), cdir / "eval" / f"step-{step}")
            final_step = int(_last_metrics(cdir).get("step", 0))
            _evaluate(cell, str(train_dir / "final"), cdir / "eval" / f"step-{final_step}")
            timings["eval_s"] = round(time.time() - t1, 1)
        t2 = time.time()
        _run_analyses(cell, cdir)
        if cell.analyses:
            timings["analysis_s"] = round(time.time() - t2, 1)
        write_status(cdir, "complete", wall_s=round(time.time() - t0, 1), **timings,
                     steps=_progress(cdir), provenance=provenance())
    except BaseException as e:  # recorded, then re-raised so the process exits non-zero
        if write:
            write_status(cdir, "failed", error=f"{type(e).__name__}: {e}",
                         traceback=traceback.format_exc()[-4000:], wall_s=round(time.time() - t0, 1))
        raise


# ----------------------------------------------------------------------------------------------
# The grid: plan, dry run, local launcher, status table


def _select(cfg: DictConfig) -> tuple[list[Cell], list[Cell]]:
    cells = plan(cfg.grid)
    if cfg.get("only"):
        cells = [c for c in cells if fnmatch.fnmatch(c.cell_id, cfg.only)]
    todo = []
    for c in cells:
        state = read_status(cell_dir(cfg.results_dir, c))["state"]
        if state == "complete" or (state == "failed" and not cfg.retry_failed):
            continue
        todo.append(c)
    return cells, todo


def cell_command(cell: Cell, cfg: DictConfig) -> str:
    cdir = cell_dir(cfg.results_dir, cell)
    if cfg.launcher.name == "slurm":
        return (f"srun accelerate launch --config_file {cfg.launcher.accelerate_config} "
                f"-m harness.cli train {' '.join(train_overrides_for(cell, cdir / 'train'))}")
    return f"{sys.executable} -m harness.runner {cdir}"


def print_plan(cells: list[Cell], todo: list[Cell], cfg: DictConfig) -> None:
    print(f"grid {cfg.grid.name}: {len(cells)} cells, {len(todo)} to run "
          f"(launcher={cfg.launcher.name}, results in {Path(cfg.results_dir) / 'runs' / cfg.grid.name})")
    gpu_h = 0.0
    todo_ids = {c.cell_id for c in todo}
    for c in cells:
        r = c.resources
        nodes, gpus, hours = r.get("nodes", 1), r.get("gpus_per_node", 0), float(r.get("hours", 0))
        gpu_h += nodes * gpus * hours if c.cell_id in todo_ids else 0
        mark = "run " if c.cell_id in todo_ids else "done"
        print(f"  [{mark}] {c.cell_id:<44} {nodes} node(s) x {gpus} GPU(s) x {hours:g} h   "
              f"{cell_command(c, cfg)}")
    print(f"totals: {len(todo)} cells to run, {gpu_h:g} GPU-hours (estimated)")


def _prepare(cells: list[Cell], cfg: DictConfig) -> None:
    """Write each cell's definition and prepare each base model once (e.g. the mini warm start)."""
    for c in cells:
        cdir = cell_dir(cfg.results_dir, c)
        cdir.mkdir(parents=True, exist_ok=True)
        if not (cdir / "cell.json").exists():
            atomic_write_json(cdir / "cell.json", c.to_json())
    for model in sorted({c.model for c in cells}):  # once per model, before cells start in parallel
        path = base_model_path(next(c for c in cells if c.model == model), cfg.results_dir)
        print(f"model {model}: {path}")


def _run_local(todo: list[Cell], cfg: DictConfig) -> int:
    from tqdm import tqdm

    jobs = max(1, int(cfg.jobs))
    threads = max(1, (os.cpu_count() or 1) // jobs)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "TOKENIZERS_PARALLELISM": "false"}
    queue, running, failed = list(todo), {}, []
    bar = tqdm(total=len(todo), desc=f"grid {cfg.grid.name}", unit="cell", mininterval=1.0,
               disable=None)  # no bar when the output is not a terminal; the done/FAILED lines stay
    while queue or running:
        while queue and len(running) < jobs:
            c = queue.pop(0)
            cdir = cell_dir(cfg.results_dir, c)
            log = open(cdir / "log.txt", "a")
            log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} start {c.cell_id}\n")
            log.flush()
            proc = subprocess.Popen([sys.executable, "-m", "harness.runner", str(cdir)], env=env,
                                    stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT)
            running[c.cell_id] = (c, proc, log)
        time.sleep(0.5)
        for cid, (c, proc, log) in list(running.items()):
            if proc.poll() is None:
                continue
            log.close()
            del running[cid]
            state = read_status(cell_dir(cfg.results_dir, c))
            if proc.returncode != 0 or state["state"] != "complete":
                failed.append(c)
                if state["state"] != "failed":  # killed from outside before it could say so
                    write_status(cell_dir(cfg.results_dir, c), "failed", error=f"exit {proc.returncode}")
                tqdm.write(f"FAILED {cid}: {read_status(cell_dir(cfg.results_dir, c)).get('error')}"
                           f" (log: {cell_dir(cfg.results_dir, c) / 'log.txt'})")
            else:
                tqdm.write(f"done   {cid} ({state.get('wall_s')} s)")
            bar.update(1)
        bar.set_postfix_str(" ".join(f"{cid.split('-s')[0]}:{_progress(cell_dir(cfg.results_dir, c))}st"
                                     for cid, (c, _, _) in running.items()))
    bar.close()
    return len(failed)


def main(cfg: DictConfig) -> int:
    cells, todo = _select(cfg)
    validate(cells)  # every config composes before any compute
    if cfg.dry_run:
        print_plan(cells, todo, cfg)
        return 0
    _prepare(todo, cfg)  # only the cells that will run: a finished grid needs no warm start
    print_plan(cells, todo, cfg)
    if cfg.launcher.name == "slurm":
        from harness.cell_app import submit

        failed = submit([cell_dir(cfg.results_dir, c) for c in todo], todo, cfg)
    else:
        failed = _run_local(todo, cfg)
    print(f"grid {cfg.grid.name}: {len(todo) - failed} of {len(todo)} cells completed, {failed} failed")
    if cfg.get("report") and (failed < len(todo) or not todo):  # something new, or a finished grid
        from harness.report import main as report_main

        report_main(load_config("report", [f"grid={cfg.grid.name}", f"results_dir={cfg.results_dir}"]))
    return min(failed, 125)


def status_rows(cfg: DictConfig) -> list[dict]:
    rows = []
    for c in plan(cfg.grid):
        cdir = cell_dir(cfg.results_dir, c)
        st = read_status(cdir)
        state, note = cell_state(st)
        last = _last_metrics(cdir)
        rows.append({
            "cell": c.cell_id, "state": state, "steps": _progress(cdir),
            "reward": None if "reward_mean" not in last else round(float(last["reward_mean"]), 3),
            "wall_s": st.get("wall_s"), "note": note[:70],
            "log": str(cdir / "log.txt"),
        })
    return rows


def status_main(cfg: DictConfig) -> int:
    import pandas as pd

    df = pd.DataFrame(status_rows(cfg))
    with pd.option_context("display.max_rows", None, "display.width", 200, "display.max_colwidth", 70):
        print(df.to_string(index=False))
    counts = df["state"].value_counts().to_dict()
    print("  ".join(f"{k}: {v}" for k, v in counts.items()))
    return 0


if __name__ == "__main__":
    run_cell(sys.argv[1])
