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
recorded in its status and the others go on. Launchers: `local` (jobs=N at once) and `slurm` (every cell's jobs
submitted at once through submitit; harness/slurm.py).
"""
from __future__ import annotations

import copy
import dataclasses
import fnmatch
import functools
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf

from harness.core import rundir
from harness.core.config import ConfigError, load_config, to_dict
from harness.core.io import QUIET_PROGRESS_ENV, atomic_write_json, provenance, shipped_config
from harness.core.status import BUSY_EXIT, CellBusy, cell_state, hold_cell, read_status, this_process, write_status
from harness.identity import digest, identity



@dataclass(frozen=True)
class Cell:
    """One cell of a grid; everything needed to run it, as plain data."""

    grid: str
    cell_id: str                    # <model>-<variant>-s<seed>-<hash of the training identity>
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
    eval_id: str = ""               # hash of the evaluation identity: results in eval/<eval_id>/
    eval_steps: tuple[int, ...] = ()  # optimiser steps evaluated (the last one is the final model); () for base
    analysis_ids: tuple[str, ...] = ()  # "<name>-<hash>" per analysis: results in analysis/<id>/

    @property
    def eval_only(self) -> bool:
        return self.variant == "base"

    @property
    def eval_labels(self) -> tuple[str, ...]:
        """The evaluation folders of eval/<eval_id>/: "base" or "step-N"."""
        return (rundir.BASE,) if self.eval_only else tuple(rundir.step_name(s) for s in self.eval_steps)

    def to_json(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


# ----------------------------------------------------------------------------------------------
# Planning (pure): grid config -> cells. What each config key covers: harness/identity.yaml


@functools.lru_cache(maxsize=256)
def _composed(name: str, overrides: tuple[str, ...]) -> dict:
    """A resolved config as a plain dict, composed once per planning process (callers must not change it)."""
    return to_dict(load_config(name, overrides))


def _train_config(cell: Cell) -> dict:
    """The resolved `harness train` config of a cell (for a base cell: only its model counts)."""
    if cell.eval_only:
        return _composed("train", (f"model={cell.model}", *cell.train_overrides))
    return _composed("train", tuple(train_overrides_for(cell)))


def eval_overrides_for(cell: Cell, checkpoint: str | None = None, out: Path | None = None) -> list[str]:
    """The `harness eval` overrides of the cell's evaluations (checkpoint and out per evaluated step)."""
    ov = [f"tasks=[{','.join(cell.eval_tasks)}]", f"seed={cell.seed}", *cell.eval_overrides]
    return ov + ([f"checkpoint={checkpoint}"] if checkpoint else []) + ([f"out={out}"] if out else [])


def _analysis_overrides(cell: Cell, a: dict, fields: dict) -> list[str]:
    try:
        return [o.format(**fields) for o in a.get("overrides", [])]
    except (KeyError, IndexError, ValueError) as e:
        raise ConfigError(f"grid analysis {a.get('name')!r}: overrides {list(a.get('overrides', []))} use an unknown "
                          f"placeholder ({e}); placeholders: {{cell_dir}}, {{eval_dir}}, {{base_model}}") from e


def _identify(cell: Cell) -> Cell:
    """The cell with its ids: the training identity names the cell, the evaluation and analysis identities name
    its eval/ and analysis/ folders (so changing an evaluation setting re-evaluates stored weights only)."""
    train_cfg = _train_config(cell)
    train = identity("train", train_cfg)
    if cell.eval_only:
        train = {k: v for k, v in train.items() if k.startswith("model.")}
    cell_id = f"{cell.model}-{cell.variant}-s{cell.seed}-{digest(train)}"
    eval_id = digest(identity("eval", _composed("eval", tuple(eval_overrides_for(cell)))))
    steps: tuple[int, ...] = ()
    if not cell.eval_only:
        max_steps = int(train_cfg["trainer"]["max_steps"])
        every = cell.eval_every
        steps = tuple(sorted({*(range(every, max_steps, every) if every else ()), max_steps}))
    fields = _placeholders(eval_id, steps)
    ids = tuple(f"{a['name']}-" + digest(identity("analyze", _composed(
        f"analyze/{a['name']}", tuple(_analysis_overrides(cell, a, fields))))) for a in cell.analyses)
    return dataclasses.replace(cell, cell_id=cell_id, eval_id=eval_id, eval_steps=steps, analysis_ids=ids)


def _placeholders(eval_id: str, steps: tuple[int, ...]) -> dict:
    """Analysis identities see placeholders, not this machine's paths; {eval_dir} names the evaluation's id."""
    last = rundir.step_name(steps[-1]) if steps else rundir.BASE
    return {"cell_dir": "CELL_DIR", "eval_dir": f"CELL_DIR/eval/{eval_id}/{last}", "base_model": "BASE_MODEL"}


def train_overrides_for(cell: Cell, out_dir: Path | None = None) -> list[str]:
    """The `harness train` overrides that define this cell's training run."""
    ov = [f"model={cell.model}", f"variant={cell.variant}", f"trainer={cell.trainer}",
          f"data={cell.data}", f"seed={cell.seed}", *cell.train_overrides]
    if cell.eval_every:  # the weights of every evaluated step (the resumable full states: trainer.save_steps)
        ov.append(f"trainer.save_weights_steps={cell.eval_every}")
    if out_dir is not None:  # where it runs, and its name and group in TensorBoard / W&B (none change the weights)
        ov += [f"out={out_dir}", f"log.run_name={cell.cell_id}", f"log.group={cell.grid}"]
    return ov


def plan(grid: DictConfig) -> list[Cell]:
    """All cells of a grid, in a stable order: models x variants x seeds (base cells first)."""
    g = to_dict(grid) if isinstance(grid, DictConfig) else dict(grid)
    for key in ("name", "models", "variants", "seeds", "trainer", "data"):
        if key not in g or g[key] in (None, []):
            raise ConfigError(f"grid {g.get('name', '?')!r} has no {key!r}")
    ev = g.get("eval") or {}
    resources = g.get("resources") or {}
    per_model = g.get("model_overrides") or {}
    for model, mo in per_model.items():
        if model not in g["models"] or not isinstance(mo, dict) or set(mo) - {"train", "eval"}:
            raise ConfigError(f"grid {g['name']!r}: model_overrides.{model} must name one of the grid's models "
                              f"({', '.join(g['models'])}) and hold only `train` and `eval` override lists")
    cells = []
    for model in g["models"]:
        mo = per_model.get(model) or {}
        variants = (["base"] if g.get("base_eval") else []) + list(g["variants"])
        for variant in variants:
            for seed in (g["seeds"] if variant != "base" else [g["seeds"][0]]):
                base = variant == "base"
                cell = Cell(
                    grid=g["name"], cell_id="", model=model, variant=variant, seed=int(seed),
                    trainer=g["trainer"], data=g["data"],
                    # a base cell trains nothing: only overrides of its model apply
                    train_overrides=tuple(o for o in [*(g.get("train_overrides") or []), *(mo.get("train") or [])]
                                          if not base or o.startswith("model.")),
                    eval_tasks=tuple(ev.get("tasks") or []),
                    eval_overrides=tuple([*(ev.get("overrides") or []), *(mo.get("eval") or [])]),
                    eval_every=None if base else ev.get("every_n_steps"),
                    resources=dict(resources.get(model) or resources.get("default") or {}),
                    analyses=tuple(a for a in (g.get("analyses") or []) if _applies(a, variant, int(seed))),
                )
                cells.append(_identify(cell))
    return cells


def _applies(analysis: dict, variant: str, seed: int) -> bool:
    """A grid's `analyses` entry: {name, variants: [..] | null (all trained) , seeds: [..] | null, overrides}."""
    from ablations import ANALYSES

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


def check_run(cfg: DictConfig) -> None:
    """`harness run` / `harness status` values and the grid's own lists, before planning."""
    from harness.core.config import require_int, require_seed

    require_int(cfg.jobs, "jobs", 1)
    for key in ("models", "variants", "seeds"):
        if not isinstance(cfg.grid.get(key), (list, ListConfig)) or not cfg.grid.get(key):
            raise ConfigError(f"grid.{key}={cfg.grid.get(key)!r} is not valid: expected a non-empty list")
    for s in cfg.grid.seeds:
        require_seed(s, "grid.seeds")
    every = (cfg.grid.get("eval") or {}).get("every_n_steps")
    if every is not None:
        require_int(every, "grid.eval.every_n_steps", 1)


def validate_cells(cells: list[Cell], results_dir: str | Path, files: bool = True) -> None:
    """Every cell's training, evaluation and analysis settings, checked as `harness train`, `harness eval` and
    `harness analyze` will check them, before the first cell runs (and in dry_run): an unknown task or a bad value
    inside a grid fails here, not after a cell has trained. Each distinct setting is checked once. `files=False`
    leaves out what depends on this machine (model folders, data files): a dry run notes those separately."""
    import importlib

    from harness.evaluation.cli import check_config
    from trainers.train import validate as validate_train

    def planned(name: str, overrides: list[str], **keys) -> DictConfig:  # plan()'s composition, reused
        return OmegaConf.create({**copy.deepcopy(_composed(name, tuple(overrides))), **keys})

    seen: set = set()
    for cell in cells:
        cdir = cell_dir(results_dir, cell)
        try:
            key = ("train", cell.model, cell.variant, cell.trainer, cell.data, cell.train_overrides, cell.eval_only)
            if not cell.eval_only and key not in seen:
                validate_train(planned("train", train_overrides_for(cell), out=str(cdir / "train")), files=files)
            seen.add(key)
            key = ("eval", cell.eval_tasks, cell.eval_overrides)
            if key not in seen:
                check_config(planned("eval", eval_overrides_for(cell)), check_model=False)
            seen.add(key)
            fields = _placeholders(cell.eval_id, cell.eval_steps)
            for a in cell.analyses:
                key = ("analysis", a["name"], tuple(a.get("overrides", [])), cell.eval_only)
                if key in seen:
                    continue
                seen.add(key)
                ov = _analysis_overrides(cell, a, fields)
                run = {} if cell.eval_only or any(o.startswith("run=") for o in ov) else {"run": "CELL_DIR"}
                importlib.import_module(f"ablations.{a['name']}").check(
                    planned(f"analyze/{a['name']}", ov, out="CELL_DIR/analysis", **run), files=False)
        except ConfigError as e:
            raise ConfigError(f"grid {cell.grid}, cell {cell.cell_id}: {e}") from e


# ----------------------------------------------------------------------------------------------
# Cell state on disk


def cell_dir(results_dir: str | Path, cell: Cell) -> Path:
    return Path(results_dir) / "runs" / cell.grid / cell.cell_id


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


def weights(cell: Cell, cdir: Path, step: int) -> Path | None:
    """The trained weights of `step` on disk (the final model for the last step), None when absent."""
    train_dir = cdir / "train"
    if step == cell.eval_steps[-1]:
        return rundir.final_model(train_dir)

    return rundir.saved_weights(train_dir).get(step)


def missing_evals(cell: Cell, cdir: Path) -> list[str]:
    """The cell's evaluations (eval/<eval_id>/<label>/) not yet written (summary.csv is written last)."""
    return [label for label in cell.eval_labels if not (cdir / "eval" / cell.eval_id / label / "summary.csv").exists()]


def pending(cell: Cell, cdir: Path) -> tuple[str, ...]:
    """What the cell still has to do, read from its files: some of "train", "eval", "analysis".

    "train" when training has not finished, or when an evaluation or analysis still to run needs weights that
    are not on disk (weights never enter git: a fresh clone holds results, not models)."""
    evals = missing_evals(cell, cdir)
    analyses = [a for a in cell.analysis_ids if not (cdir / "analysis" / a / f"{a.rsplit('-', 1)[0]}.csv").exists()]
    work = []
    if not cell.eval_only:
        need = [rundir.parse_step(label) for label in evals] + ([cell.eval_steps[-1]] if analyses else [])
        if not rundir.is_finished(cdir / "train") or any(weights(cell, cdir, s) is None for s in need):
            work.append("train")
    return tuple(work + (["eval"] if evals else []) + (["analysis"] if analyses else []))


def is_done(cell: Cell, cdir: Path) -> bool:
    """Complete for this plan: status.json says so for these evaluation and analysis ids, and nothing is missing."""
    st = read_status(cdir)
    return (st["state"] == "complete" and st.get("eval_id") == cell.eval_id
            and list(st.get("analyses") or []) == list(cell.analysis_ids) and not pending(cell, cdir))


def eval_settings(cell: Cell, eval_root: Path) -> None:
    """eval/<eval_id>/eval.json: the settings the evaluation id stands for (written once)."""
    if not (eval_root / "eval.json").exists():
        atomic_write_json(eval_root / "eval.json", {
            "eval_id": cell.eval_id, "overrides": eval_overrides_for(cell),
            "identity": identity("eval", to_dict(load_config("eval", eval_overrides_for(cell))))})


def _evaluate(cell: Cell, model_path: str, out_dir: Path, extra: tuple[str, ...] = ()) -> None:
    """Evaluate one model into out_dir (eval/<eval_id>/<label>/) unless it is already there (summary.csv is
    written last). eval/<eval_id>/eval.json records the settings the id stands for."""
    if (out_dir / "summary.csv").exists():
        return
    from harness.evaluation import main as eval_main

    eval_settings(cell, out_dir.parent)
    rc = eval_main(load_config("eval", [*eval_overrides_for(cell, model_path, out_dir), *extra]))
    if rc:
        raise RuntimeError(f"evaluation of {model_path} exited with {rc}")


def _run_analyses(cell: Cell, cdir: Path) -> None:
    """The grid's analyses for this cell, each into <cell>/analysis/<name>-<id>/ (skipped when its CSV is there).

    Overrides may name `{cell_dir}`, `{eval_dir}` (the cell's last evaluation) and `{base_model}`."""
    import importlib

    todo = [(a, aid) for a, aid in zip(cell.analyses, cell.analysis_ids)
            if not (cdir / "analysis" / aid / f"{a['name']}.csv").exists()]
    fields = {"cell_dir": cdir, "eval_dir": cdir / "eval" / cell.eval_id / cell.eval_labels[-1], "base_model": ""}
    if any("{base_model}" in o for a, _ in todo for o in a.get("overrides", [])):
        fields["base_model"] = base_model_path(cell, cdir.parents[2])
    for a, aid in todo:
        out = cdir / "analysis" / aid
        ov = _analysis_overrides(cell, a, fields) + [f"out={out}"]
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


PHASES = ("all", "train", "eval")


def run_cell(cdir: str | Path, train_fn=None, write: bool = True, phase: str = "all",
             eval_overrides: tuple[str, ...] = ()) -> None:
    """Do what the cell still needs (`pending`): train (resuming from a checkpoint), evaluate the steps not yet
    evaluated under its evaluation id, run its analyses; status.json is written last.

    `phase`: "all" (the local launcher), or the two jobs of a cluster cell, so that evaluation never holds the
    training nodes: "train" (train only; the status is left `pending`) and "eval" (evaluate and analyse the stored
    weights; never trains). `eval_overrides` are performance settings of the job (e.g. vllm.data_parallel_size):
    one that would change the evaluation id is refused. `train_fn` replaces the in-process training (the SLURM
    path runs accelerate); with `write=False` (non-zero nodes of a multi-node job) the process only trains.
    """
    if phase not in PHASES:
        raise ConfigError(f"phase={phase!r} is not valid; choose one of: {', '.join(PHASES)}")
    cdir = Path(cdir)
    cell = load_cell(cdir)
    t0 = time.time()
    lock = hold_cell(cdir) if write else None  # raises CellBusy before anything is written
    if write:
        write_status(cdir, "running", phase=phase, **this_process())
    try:
        timings = {}
        if "train" in pending(cell, cdir):
            if phase == "eval":
                raise RuntimeError(f"{cell.cell_id}: the weights to evaluate are not on disk; its training job "
                                   "must run first")
            train_fn() if train_fn else _train_local(cell, cdir / "train")
            timings["train_s"] = round(time.time() - t0, 1)
        if not write:
            return
        if phase == "train":
            write_status(cdir, "pending", phase="eval", note="trained; evaluation still to run", **timings)
            return
        t1 = time.time()
        _check_eval_overrides(cell, eval_overrides)
        for label in cell.eval_labels:
            out = cdir / "eval" / cell.eval_id / label
            if (out / "summary.csv").exists():
                continue
            model = base_model_path(cell, cdir.parents[2]) if cell.eval_only else \
                str(weights(cell, cdir, rundir.parse_step(label)))
            _evaluate(cell, model, out, eval_overrides)
        timings["eval_s"] = round(time.time() - t1, 1)
        t2 = time.time()
        _run_analyses(cell, cdir)
        if cell.analyses:
            timings["analysis_s"] = round(time.time() - t2, 1)
        write_status(cdir, "complete", wall_s=round(time.time() - t0, 1), **timings, steps=_progress(cdir),
                     eval_id=cell.eval_id, analyses=list(cell.analysis_ids), provenance=provenance())
    except BaseException as e:  # recorded, then re-raised so the process exits non-zero
        if write:
            write_status(cdir, "failed", error=f"{type(e).__name__}: {e}", phase=phase,
                         traceback=traceback.format_exc()[-4000:], wall_s=round(time.time() - t0, 1))
        raise
    finally:
        if lock:
            lock.close()


def _check_eval_overrides(cell: Cell, extra: tuple[str, ...]) -> None:
    """A job's own evaluation settings must leave the evaluation id as planned (performance keys only)."""
    if extra and digest(identity("eval", _composed("eval", (*eval_overrides_for(cell), *extra)))) != cell.eval_id:
        raise ConfigError(f"evaluation overrides {list(extra)} would change the evaluation id of {cell.cell_id}: "
                          "only settings that change no result may be set per job (docs/runner.md)")


# ----------------------------------------------------------------------------------------------
# The grid: plan, dry run, local launcher, status table


def _select(cfg: DictConfig) -> tuple[list[Cell], list[Cell]]:
    cells = plan(cfg.grid)
    if cfg.get("only"):
        cells = [c for c in cells if fnmatch.fnmatch(c.cell_id, cfg.only)]
    todo = []
    for c in cells:
        cdir = cell_dir(cfg.results_dir, c)
        if is_done(c, cdir) or (read_status(cdir)["state"] == "failed" and not cfg.retry_failed):
            continue
        todo.append(c)
    return cells, todo


def cell_command(cell: Cell, cfg: DictConfig) -> str:
    cdir = cell_dir(cfg.results_dir, cell)
    if cfg.launcher.name == "slurm":
        return f"sbatch: {' then '.join(p for p, _ in cell_jobs(cell, cdir))} job (scripts: dry_run=true)"
    return f"{sys.executable} -m harness.runner {cdir}"


def cell_env(threads: int) -> dict:
    """The environment a cell runs in, under either launcher: `threads` for torch, no progress bars (log.txt)."""
    return {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false",
            **QUIET_PROGRESS_ENV}


def cell_jobs(cell: Cell, cdir: Path) -> list[tuple[str, tuple]]:
    """The jobs a cell still needs on a cluster: [(phase, (nodes, gpus per node, hours, evaluation overrides))].

    A cell that still trains gets a training job (its `nodes` x `gpus_per_node` for `hours`); every cell to run gets
    an evaluation job of its own (one node, `eval_gpus` for `eval_hours` per evaluation still missing, vLLM data
    parallel over them; at least 15 minutes for the analyses and start-up), so evaluating never holds the training
    nodes."""
    r = cell.resources
    out = []
    if "train" in pending(cell, cdir):
        out.append(("train", (r.get("nodes", 1), r.get("gpus_per_node", 0), float(r.get("hours", 1)), ())))
    missing = len(missing_evals(cell, cdir))
    gpus = int(r.get("eval_gpus", 0))
    extra = (f"vllm.data_parallel_size={gpus}",) if gpus > 1 else ()
    out.append(("eval", (1, gpus, max(float(r.get("eval_hours", 0)) * missing, 0.25), extra)))
    return out


def _with_jobs(cells: list[Cell], cfg: DictConfig) -> list[tuple]:
    """(cell, folder, its jobs) per cell: what harness/slurm.py plans the sbatch submissions from."""
    return [(c, cell_dir(cfg.results_dir, c), cell_jobs(c, cell_dir(cfg.results_dir, c))) for c in cells]


def _mark(cell: Cell, cdir: Path) -> str:
    """The plan's word for a cell to run, by its most expensive part: train | retrain (training finished, but
    weights a new evaluation or analysis needs are not on disk) | eval (stored weights) | analyse | status
    (only status.json is rewritten)."""
    work = pending(cell, cdir)
    if "train" in work:
        return "retrain" if rundir.is_finished(cdir / "train") else "train"
    return "eval" if "eval" in work else "analyse" if work else "status"


def print_plan(cells: list[Cell], todo: list[Cell], cfg: DictConfig) -> None:
    """One line per cell: what it still needs (train | eval: stored weights only | analyse | status: only
    status.json is rewritten | done), resources and command; then totals."""
    todo_ids = {c.cell_id for c in todo}
    marks = {c.cell_id: _mark(c, cell_dir(cfg.results_dir, c)) if c.cell_id in todo_ids else "done" for c in cells}
    counts = {m: sum(v == m for v in marks.values()) for m in ("train", "retrain", "eval", "analyse", "status", "done")}
    print(f"grid {cfg.grid.name}: {len(cells)} cells, {len(todo)} to run: {counts['train']} to train, "
          f"{counts['retrain']} to retrain (weights not on disk), "
          f"{counts['eval']} to evaluate (stored weights), {counts['analyse']} to analyse, "
          f"{counts['status']} status only; {counts['done']} done "
          f"(launcher={cfg.launcher.name}, results in {Path(cfg.results_dir) / 'runs' / cfg.grid.name})")
    gpu_h = eval_gpu_h = 0.0
    n_evals = 0
    for c in cells:
        r, cdir = c.resources, cell_dir(cfg.results_dir, c)
        nodes, gpus, hours = r.get("nodes", 1), r.get("gpus_per_node", 0), float(r.get("hours", 0))
        gpu_h += nodes * gpus * hours if marks[c.cell_id] in ("train", "retrain") else 0
        # the evaluation job: the cell's evaluations still missing, on its own GPUs (never the training nodes)
        todo_evals = missing_evals(c, cdir) if c.cell_id in todo_ids else []
        egpus, ehours = int(r.get("eval_gpus", 0)), float(r.get("eval_hours", 0))
        n_evals += len(todo_evals)
        eval_gpu_h += len(todo_evals) * egpus * ehours
        print(f"  [{marks[c.cell_id]:<7}] {c.cell_id:<44} eval {c.eval_id}  {nodes} node(s) x {gpus} GPU(s) x "
              f"{hours:g} h; {len(todo_evals)} evaluation(s) x {egpus} GPU(s) x {ehours:g} h   {cell_command(c, cfg)}")

    print(f"totals: {len(todo)} cells to run, {counts['train'] + counts['retrain']} to train, "
          f"{gpu_h:g} training GPU-hours (estimated); {n_evals} evaluations, {eval_gpu_h:g} evaluation GPU-hours "
          f"(estimated, in evaluation jobs of their own under launcher=slurm)")


def _prepare(cells: list[Cell], cfg: DictConfig) -> None:
    """Write each cell's definition (cell.json, rewritten when its evaluation or analyses changed), make a finished
    training whose weights are needed but gone train again, and prepare each base model once (e.g. the mini warm
    start) for the cells that train or read it."""
    models = set()
    for c in cells:
        cdir = cell_dir(cfg.results_dir, c)
        cdir.mkdir(parents=True, exist_ok=True)
        if not (cdir / "cell.json").exists() or json.loads((cdir / "cell.json").read_text()) != c.to_json():
            atomic_write_json(cdir / "cell.json", c.to_json())
        work = pending(c, cdir)
        if "train" in work and (cdir / "train" / "summary.json").exists():
            print(f"{c.cell_id}: the weights its evaluations need are not on disk; training again from scratch")
            (cdir / "train" / "summary.json").unlink()
            for d in ("final", "checkpoints"):
                shutil.rmtree(cdir / "train" / d, ignore_errors=True)
        if c.eval_only or "train" in work or "analysis" in work:
            models.add(c.model)
    for model in sorted(models):  # once per model, before cells start in parallel
        path = base_model_path(next(c for c in cells if c.model == model), cfg.results_dir)
        print(f"model {model}: {path}")


def _run_local(todo: list[Cell], cfg: DictConfig) -> int:
    from tqdm import tqdm

    jobs = max(1, int(cfg.jobs))
    threads = max(1, (os.cpu_count() or 1) // jobs)
    env = {**os.environ, **cell_env(threads)}
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
                                    stdout=log, stderr=subprocess.STDOUT)  # in this folder: relative paths stay
            running[c.cell_id] = (c, proc, log)
        time.sleep(0.5)
        for cid, (c, proc, log) in list(running.items()):
            if proc.poll() is None:
                continue
            log.close()
            del running[cid]
            state = read_status(cell_dir(cfg.results_dir, c))
            if proc.returncode == BUSY_EXIT:  # another process runs it: its status is that process's to write
                tqdm.write(f"skipped {cid}: being run by another process (pid {state.get('pid')} on "
                           f"{state.get('host')})")
            elif proc.returncode != 0 or state["state"] != "complete":
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
    from harness.core.config import require_output_dir

    check_run(cfg)
    require_output_dir(cfg.results_dir, "results_dir")
    cells, todo = _select(cfg)
    if cfg.get("only") and not cells:
        raise ConfigError(f"only={cfg.only!r} matches none of the cells of grid {cfg.grid.name} "
                          f"(ids look like {plan(cfg.grid)[0].cell_id}; `harness status` lists them)")
    validate(cells)  # every config composes before any compute
    slurm = cfg.launcher.name == "slurm"
    if slurm:  # cells whose jobs are still in the queue are left to them
        from harness import slurm as sl

        for cid, ids in sl.queued({c.cell_id: cell_dir(cfg.results_dir, c) for c in todo}).items():
            print(f"{cid}: job(s) {' '.join(ids)} still in the queue: not submitted again")
            todo = [c for c in todo if c.cell_id != cid]
    if cfg.dry_run:
        validate_cells(cells, cfg.results_dir, files=False)  # every value of every cell
        print_plan(cells, todo, cfg)
        jobs = sl.plan_jobs(_with_jobs(todo, cfg), cfg) if slurm else []
        try:
            validate_cells(todo, cfg.results_dir, files=True)
            if jobs:
                sl.check_cluster(jobs, cfg)
        except ConfigError as e:
            print(f"note: running this plan here would stop before its first cell: {e}")
        if slurm:
            sl.print_scripts(jobs)
        return 0
    validate_cells(todo, cfg.results_dir)  # every cell that will run, before the first one starts
    if slurm and todo:
        sl.check_cluster(sl.plan_jobs(_with_jobs(todo, cfg), cfg), cfg)  # a request no node can satisfy would wait forever
    _prepare(todo, cfg)  # only the cells that will run: a finished grid needs no warm start
    print_plan(cells, todo, cfg)
    if slurm and todo:  # planned again: _prepare may have found weights gone, adding training jobs
        failed = sl.submit(sl.plan_jobs(_with_jobs(todo, cfg), cfg), cfg, CellJob)
        print(f"grid {cfg.grid.name}: submitted the jobs of {len(todo) - failed} of {len(todo)} cells "
              f"(`harness status grid={cfg.grid.name}` follows them, `harness cancel grid={cfg.grid.name}` cancels them)")
        return min(failed, 125)
    failed = _run_local(todo, cfg)
    print(f"grid {cfg.grid.name}: {len(todo) - failed} of {len(todo)} cells completed, {failed} failed")
    if cfg.get("report") and (failed < len(todo) or not todo):  # something new, or a finished grid
        from harness.report import main as report_main

        report_main(load_config("report", [f"grid={cfg.grid.name}", f"results_dir={cfg.results_dir}"]))
    return min(failed, 125)


def status_rows(cfg: DictConfig) -> list[dict]:
    """One row per cell; cells submitted to SLURM also get `jobs` (phase:id of the last submission) and
    `scheduler` (each job's state from squeue / sacct)."""
    from harness.slurm import is_active, scheduler_states, submitted

    cells = plan(cfg.grid)
    jobs = {c.cell_id: submitted(cell_dir(cfg.results_dir, c)) for c in cells}
    states = scheduler_states(sorted({j["job_id"] for v in jobs.values() for j in v}))
    rows = []
    for c in cells:
        cdir = cell_dir(cfg.results_dir, c)
        st = read_status(cdir)
        state, note = cell_state(st)
        own = jobs[c.cell_id]
        known = [states.get(j["job_id"]) for j in own if states.get(j["job_id"]) != "unknown"]
        if own and state == "running" and len(known) == len(own) and not any(map(is_active, known)):
            state, note = "interrupted", "its jobs have left the queue; harness run resubmits it"
        last = _last_metrics(cdir)
        rows.append({
            "cell": c.cell_id, "state": state, "needs": " ".join(pending(c, cdir)) or "-",
            "steps": _progress(cdir),
            "reward": None if "reward_mean" not in last else round(float(last["reward_mean"]), 3),
            "wall_s": st.get("wall_s"), "note": note[:70],
            **({"jobs": " ".join(f"{j['phase']}:{j['job_id']}" for j in own) or "-",
                "scheduler": " ".join(states.get(j["job_id"], "gone") for j in own) or "-"}
               if any(jobs.values()) else {}),
            "log": str(cdir / "log.txt"),
        })
    return rows


def status_main(cfg: DictConfig) -> int:
    import pandas as pd

    check_run(cfg)
    if not Path(cfg.results_dir).is_dir():
        raise ConfigError(f"results_dir={str(cfg.results_dir)!r} does not exist: no grid has run there "
                          f"(`harness run results_dir={cfg.results_dir}` starts one)")

    df = pd.DataFrame(status_rows(cfg))
    with pd.option_context("display.max_rows", None, "display.width", 200, "display.max_colwidth", 70):
        print(df.to_string(index=False))
    counts = df["state"].value_counts().to_dict()
    print("  ".join(f"{k}: {v}" for k, v in counts.items()))
    return 0


def cancel_main(cfg: DictConfig) -> int:
    """`harness cancel grid=NAME [only=GLOB]`: cancel (scancel) the queued and running jobs of the grid's cells
    (every `<results_dir>/runs/<grid>/<cell>/slurm/jobs.json`; `only`: the cells whose id matches). A cancelled cell
    keeps what it wrote; the next `harness run` resubmits it and it resumes from its last complete checkpoint."""
    from harness.slurm import is_active, scheduler_states, submitted

    check_run(cfg)
    if shutil.which("scancel") is None:
        raise ConfigError("harness cancel: `scancel` is not on PATH: run it on the SLURM login node the grid was "
                          "submitted from")
    grid_dir = Path(cfg.results_dir) / "runs" / cfg.grid.name
    cdirs = [f.parents[1] for f in sorted(grid_dir.glob("*/slurm/jobs.json"))
             if not cfg.get("only") or fnmatch.fnmatch(f.parents[1].name, cfg.only)]
    ids = {c.name: [j["job_id"] for j in submitted(c)] for c in cdirs}
    states = scheduler_states(sorted({j for v in ids.values() for j in v}))
    n = 0
    for name, own in ids.items():
        active = [j for j in own if is_active(states.get(j))]
        if active:
            subprocess.run(["scancel", *active], check=True, timeout=60)
            print(f"cancelled {name}: job(s) {' '.join(active)}")
            n += 1
    print(f"grid {cfg.grid.name}: cancelled the jobs of {n} cell(s); {len(cdirs)} submitted cell(s) in {grid_dir}")
    return 0


# ----------------------------------------------------------------------------------------------
# Inside a SLURM job (launcher=slurm; harness/slurm.py submits CellJob)


def _stamp(text: str) -> None:
    print(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {text}", flush=True)


def _accelerate_train(cell: Cell, cdir: Path, gpus_per_node: int, launcher: dict) -> None:
    """This node's share of a GPU cell's training: accelerate + DeepSpeed ZeRO-3 over all the job's nodes."""
    import shlex

    import submitit

    import yaml

    env = submitit.JobEnvironment()
    # the launcher's accelerate file and the DeepSpeed file it names: as given, else the package's copy (an installed
    # package has no configs/ in the current directory); the job runs in the submitting folder, paths stay relative
    accelerate = shipped_config(launcher["accelerate_config"])
    ds = (yaml.safe_load(accelerate.read_text()).get("deepspeed_config") or {}).get("deepspeed_config_file")
    cmd = ["accelerate", "launch", "--config_file", str(accelerate),
           *(["--deepspeed_config_file", str(shipped_config(ds))] if ds else []),
           "--num_machines", str(env.num_nodes), "--machine_rank", str(env.node),
           "--main_process_ip", env.hostnames[0], "--main_process_port", "29500",
           "--num_processes", str(env.num_nodes * gpus_per_node),
           "-m", "harness.cli", "train", *train_overrides_for(cell, cdir / "train"), "resume=true",
           "trainer.use_vllm=true"]
    print("running:", shlex.join(cmd), flush=True)
    subprocess.run(cmd, check=True)


class CellJob:
    """The function a job runs (pickled by submitit with its arguments): one phase of one cell.

    Checkpointable (submitit calls `checkpoint` on preemption or timeout, then requeues the job): the requeued job
    calls it again with the same arguments and training resumes from its last complete checkpoint."""

    requeued = False

    def __call__(self, cdir: str, phase: str, gpus_per_node: int, eval_overrides: tuple, launcher: dict) -> str:
        threads = int(os.environ.get("SLURM_CPUS_PER_TASK", 1))
        os.environ.update(cell_env(threads))  # as the local launcher gives a cell, before torch is imported
        cdir_ = Path(cdir)
        cell = load_cell(cdir_)
        _stamp(f"start {cell.cell_id} phase={phase} SLURM job {os.environ.get('SLURM_JOB_ID')} "
               f"(restart {os.environ.get('SLURM_RESTART_COUNT', 0)}) on {platform.node()}, {threads} thread(s)")
        try:
            if phase == "train" and gpus_per_node > 0:
                import submitit

                node = submitit.JobEnvironment().node
                run_cell(cdir_, train_fn=lambda: _accelerate_train(cell, cdir_, gpus_per_node, launcher),
                         write=(node == 0), phase=phase)
            else:  # a CPU cell (or an evaluation job): in this process, as the local launcher runs it
                run_cell(cdir_, phase=phase, eval_overrides=tuple(eval_overrides))
        except SystemExit:
            if self.requeued:  # submitit's handler requeued the job and exits: say so, not `failed`
                write_status(cdir_, "pending", note=f"requeued (SLURM job {os.environ.get('SLURM_JOB_ID')} "
                             "preempted or timed out): resumes from its last complete checkpoint")
            raise
        state = read_status(cdir_)["state"]
        _stamp(f"end {cell.cell_id} phase={phase}: {state}")
        return state

    def checkpoint(self, *args, **kwargs):
        from submitit.helpers import DelayedSubmission

        self.requeued = True
        _stamp("preempted or timed out: requeued; the job resumes from the last complete checkpoint")
        return DelayedSubmission(self, *args, **kwargs)


if __name__ == "__main__":
    from harness.core.io import quiet_progress_unless_terminal

    quiet_progress_unless_terminal()
    try:
        run_cell(sys.argv[1])
    except CellBusy as e:
        print(e, file=sys.stderr)
        raise SystemExit(BUSY_EXIT)
