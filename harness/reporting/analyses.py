"""Entropy-analysis outputs (`harness analyze`: entropy, overlap, shift, ...) grouped for REPORT.md.

Each output file is placed by its analysis kind (the file stem: overlap.csv and overlap.png are kind `overlap`) and
by the cell it belongs to (results/runs/<grid>/<cell>/analysis/<name>-<id>/, the cell's variant and seed from its cell.json), so
REPORT.md can show all overlap tables together, each headed by variant and seed, then all shift tables, and so on.
For a kind whose CSV has a `step` column, `last_step_table` stacks every cell's last row into one table across
cells (e.g. overlap_vs_base_pct at the final step, per variant and seed).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import pandas as pd

from harness.reporting.load import read_analysis_csv

KIND_ORDER = ("entropy", "entropy_tokens", "overlap", "shift", "shift_bins")  # then others alphabetically


@dataclass
class Entry:
    """One cell's (or the grid folder's) output of one analysis kind: its CSV and/or PNG."""
    kind: str
    cell_id: str          # "" for outputs under results/<grid>/analysis/
    variant: str
    seed: str
    source: str           # grid-level outputs: the path under results/<grid>/analysis/
    csv: Path | None = None
    png: Path | None = None
    table: pd.DataFrame | None = None
    error: str = ""       # why the CSV could not be read
    sort_key: tuple = field(default=(), repr=False)

    @property
    def label(self) -> str:
        if self.cell_id:
            return f"{self.variant}, seed {self.seed} ({self.cell_id})"
        return f"grid analysis ({self.source})"


def cell_dir_of(path: Path) -> Path | None:
    """The cell folder an analysis output belongs to: the one holding its `analysis/` ancestor and a cell.json
    (<cell>/analysis/x.csv or <cell>/analysis/<name>-<id>/x.csv); None for grid-level outputs."""
    owner = next((q.parent for q in Path(path).parents if q.name == "analysis"), None)
    return owner if owner is not None and (owner / "cell.json").exists() else None


def _seed(x) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "?"
    try:
        return str(int(float(x)))
    except (TypeError, ValueError):
        return str(x)


def index(paths: Sequence[Path], cells: pd.DataFrame, variant_order: Sequence[str],
          grid_dir: Path | None = None) -> dict[str, list[Entry]]:
    """kind -> entries (one per cell), kinds in KIND_ORDER then alphabetical, cells by variant order then seed.
    Reads each CSV once (a corrupt one keeps its error, it does not stop the report)."""
    by_path = {str(p): r for p, r in zip(cells["path"], cells.to_dict("records"))} if len(cells) else {}
    vpos = {v: i for i, v in enumerate(variant_order)}
    entries: dict[tuple[str, str], Entry] = {}
    for p in paths:
        p = Path(p)
        owner = cell_dir_of(p)
        cell = by_path.get(str(owner)) if owner is not None else None
        if cell is not None:
            key = (p.stem, cell["cell_id"])
            e = entries.get(key) or Entry(p.stem, cell["cell_id"], str(cell["variant"]), _seed(cell["seed"]), "",
                                          sort_key=(vpos.get(str(cell["variant"]), len(vpos)), str(cell["variant"]),
                                                    _seed(cell["seed"]).zfill(6), cell["cell_id"]))
        else:
            rel = p.relative_to(grid_dir).as_posix() if grid_dir and p.is_relative_to(grid_dir) else p.name
            src = rel.rsplit(".", 1)[0]
            key = (p.stem, src)
            e = entries.get(key) or Entry(p.stem, "", "", "", src, sort_key=(len(vpos) + 1, src))
        entries[key] = e
        if p.suffix == ".png":
            e.png = p
        else:
            e.csv = p
            try:
                e.table = read_analysis_csv(p)
            except Exception as err:  # a corrupt or cut analysis CSV is named and left out, not fatal
                e.error = str(err) or type(err).__name__
    kinds = sorted({k for k, _ in entries}, key=lambda k: (KIND_ORDER.index(k) if k in KIND_ORDER
                                                           else len(KIND_ORDER), k))
    return {k: sorted((e for (kk, _), e in entries.items() if kk == k), key=lambda e: e.sort_key) for k in kinds}


def last_step_table(entries: Sequence[Entry]) -> pd.DataFrame | None:
    """Across cells: each cell's row at its largest `step` (the last such row, e.g. `final`), with variant and seed
    in front; None unless at least two cells have a readable CSV with a `step` column."""
    rows = []
    for e in entries:
        t = e.table
        if not e.cell_id or t is None or "step" not in t.columns or t.empty:
            continue
        steps = pd.to_numeric(t["step"], errors="coerce")
        if steps.isna().all():
            continue
        last = t[steps == steps.max()].iloc[-1]
        rows.append({"variant": e.variant, "seed": e.seed, **last.to_dict(), "cell_id": e.cell_id})
    if len(rows) < 2:
        return None
    return pd.DataFrame(rows)
