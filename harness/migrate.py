"""Move a grid's results written before evaluation ids (#15) to the identity layout, training nothing.

    python -m harness.migrate grid=mini [results_dir=results] [dry_run=true]

Before: runs/<grid>/<model>-<variant>-s<seed>-<old hash>/ with eval/step-N/ and analysis/<files>; the old hash
covered every trainer, evaluation and analysis setting. After: runs/<grid>/<cell id>/ with eval/<eval id>/step-N/
and analysis/<name>-<id>/ (harness/runner.py, harness/identity.py). Each old cell is matched to the planned cell
of the same (model, variant, seed), and each part moves only where what is on disk is shown to have the planned
identity:
- training: the training identity of train/config.yaml (the resolved config it was trained with) gives the planned
  cell id. An eval-only (base) cell has no training config: its old id, recomputed from today's configs with the
  old formula (`old_cell_id`), must equal its folder name, i.e. nothing it was made with has changed;
- each evaluation: the evaluation identity of the config recorded in every results_<task>.json gives the planned
  evaluation id;
- each analysis: the config recorded in <name>.provenance.json has the identity the planned analysis would have
  on this cell's paths.
A part that does not match stays where it is and is named; the next `harness run` redoes it.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from harness.core.config import ConfigError, load_config, to_dict
from harness.core.io import atomic_write_json
from harness.identity import digest, identity
from harness.runner import Cell, _analysis_overrides, eval_settings, plan, train_overrides_for


def old_cell_id(cell: Cell) -> str:
    """The id the runner gave a cell before #15: a hash over the resolved training and evaluation configs."""
    def resolved(name, overrides, drop):
        d = to_dict(load_config(name, overrides))
        return {k: v for k, v in d.items() if k not in drop}

    r = {"eval": resolved("eval", list(cell.eval_overrides), ("model", "out")), "eval_tasks": cell.eval_tasks,
         "eval_every": cell.eval_every, "analyses": cell.analyses}
    if cell.eval_only:
        r["model"] = resolved("train", [f"model={cell.model}", *cell.train_overrides], ())["model"]
    else:
        r["train"] = resolved("train", train_overrides_for(cell), ("out", "resume"))
    return f"{cell.model}-{cell.variant}-s{cell.seed}-{digest(r)}"


def _training_matches(cell: Cell, old: Path) -> str:
    """'' when the old cell's weights are the planned cell's, else why not."""
    if cell.eval_only:
        was = old_cell_id(cell)
        return "" if was == old.name else f"its configs changed since it ran (old formula now gives {was})"
    cfg_file = old / "train" / "config.yaml"
    if not cfg_file.exists():
        return "no train/config.yaml"
    from omegaconf import OmegaConf

    got = digest(identity("train", OmegaConf.to_container(OmegaConf.load(cfg_file), resolve=True)))
    want = cell.cell_id.rsplit("-", 1)[1]
    return "" if got == want else f"trained with training identity {got}, planned {want}"


def _eval_matches(cell: Cell, step_dir: Path) -> str:
    results = sorted(step_dir.glob("results_*.json"))
    if not results or not (step_dir / "summary.csv").exists():
        return "incomplete evaluation"
    for r in results:
        config = (json.loads(r.read_text()).get("provenance") or {}).get("config")
        if not isinstance(config, dict):
            return f"{r.name} records no config"
        got = digest(identity("eval", config))
        if got != cell.eval_id:
            return f"{r.name}: evaluation identity {got}, planned {cell.eval_id}"
    return ""


def _analysis_id(cell: Cell, a: dict, prov: Path, old: Path) -> str | None:
    """The planned id of analysis `a` if the output described by `prov` is what the plan would run, else None."""
    config = json.loads(prov.read_text()).get("config")
    if not isinstance(config, dict):
        return None
    was = Path(config.get("out") or old / "analysis").parent  # the cell folder it ran in (maybe another machine's)
    last = cell.eval_labels[-1]
    fields = {"cell_dir": was, "eval_dir": was / "eval" / last,
              "base_model": config.get("model_path") or config.get("base") or ""}
    planned = to_dict(load_config(f"analyze/{a['name']}", _analysis_overrides(cell, a, fields)))
    if identity("analyze", planned) != identity("analyze", config):
        return None
    return cell.analysis_ids[cell.analyses.index(a)]


def migrate_cell(cell: Cell, old: Path, new: Path, dry_run: bool) -> list[str]:
    """Move what matches; return the notes (what moved, what did not and why)."""
    notes = []
    why = _training_matches(cell, old)
    if why:
        return [f"{old.name}: not moved ({why})"]
    if new.exists() and new != old:
        return [f"{old.name}: not moved ({new} exists)"]
    moves: list[tuple[Path, Path]] = []
    for step_dir in sorted(p for p in (old / "eval").glob("*") if p.name == "base" or p.name.startswith("step-")):
        why = _eval_matches(cell, step_dir)
        if why:
            notes.append(f"{old.name}/eval/{step_dir.name}: stays ({why})")
        else:
            moves.append((step_dir, old / "eval" / cell.eval_id / step_dir.name))
    moved_analyses = []
    files = [p for p in (old / "analysis").glob("*") if p.is_file()]
    for a in sorted(cell.analyses, key=lambda a: -len(a["name"])):  # shift_bins.* belongs to shift
        prov = old / "analysis" / f"{a['name']}.provenance.json"
        aid = _analysis_id(cell, a, prov, old) if prov.exists() else None
        mine = [p for p in files if p.name.split(".")[0] == a["name"] or p.name.startswith(a["name"] + "_")]
        files = [p for p in files if p not in mine]
        if aid is None:
            notes.append(f"{old.name}/analysis/{a['name']}: stays (no matching provenance)")
            continue
        moves += [(p, old / "analysis" / aid / p.name) for p in mine]
        moved_analyses.append(aid)
    evals = {dst.name for src, dst in moves if dst.parent.name == cell.eval_id}
    notes.append(f"{old.name} -> {cell.cell_id}: {len(evals)} evaluation(s) to eval/{cell.eval_id}/, "
                 f"analyses {moved_analyses or 'none'}")
    if dry_run:
        return notes
    for src, dst in moves:
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, dst)
    if evals:
        eval_settings(cell, old / "eval" / cell.eval_id)
    status_file = old / "status.json"
    status = json.loads(status_file.read_text()) if status_file.exists() else {"state": "pending"}
    status.update(eval_id=cell.eval_id, analyses=[a for a in cell.analysis_ids if a in moved_analyses],
                  migrated_from=old.name)
    atomic_write_json(status_file, status)
    atomic_write_json(old / "cell.json", cell.to_json())
    os.replace(old, new)
    return notes


def migrate(grid_cfg, results_dir: Path, dry_run: bool = False) -> list[str]:
    cells = plan(grid_cfg)
    runs = Path(results_dir) / "runs" / cells[0].grid
    by_key = {(c.model, c.variant, c.seed): c for c in cells}
    notes = []
    for old in sorted(p for p in runs.iterdir() if (p / "cell.json").exists()):
        d = json.loads((old / "cell.json").read_text())
        cell = by_key.get((d.get("model"), d.get("variant"), d.get("seed")))
        if cell is None:
            notes.append(f"{old.name}: not in the grid's plan; left as it is")
        elif old.name == cell.cell_id and d.get("eval_id") == cell.eval_id:
            notes.append(f"{old.name}: already migrated")
        else:
            notes += migrate_cell(cell, old, runs / cell.cell_id, dry_run)
    return notes


def main(argv: list[str] | None = None) -> int:
    """`run` overrides (grid=, results_dir=, dry_run=): the grid's plan decides where each cell goes."""
    try:
        cfg = load_config("run", sys.argv[1:] if argv is None else argv)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for line in migrate(cfg.grid, Path(cfg.results_dir), bool(cfg.dry_run)):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
