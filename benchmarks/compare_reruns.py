"""Do a grid's verdicts hold on a rerun? Compares two reports of the same grid (e.g. two disjoint seed sets).

Reads each report folder's significance.csv and equivalence.csv (written by `harness report`) and prints, per
variant and benchmark, both differences to the reference with their CIs and verdicts, and how the verdicts
compare:
- `same`: the same verdict;
- `moved`: one run says higher / lower (or equivalent / different), the other inconclusive: a borderline case;
- `REVERSED`: higher in one, lower in the other (or equivalent in one, different in the other);
- `untested`: either side has too few seeds.
The last lines count them. It decides nothing itself; docs/mini.md records what it printed for the mini grid.

    .venv/bin/python benchmarks/compare_reruns.py /tmp/seedsA/mini /tmp/seedsB/mini [--metric avg@k]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

KEY = ["model", "variant", "benchmark"]
OPPOSITE = {("higher", "lower"), ("lower", "higher"), ("equivalent", "different"), ("different", "equivalent")}
DECIDED = {"higher", "lower", "equivalent", "different"}


def compare(a: str, b: str) -> str:
    if a == b:
        return "same"
    if "too few seeds" in (a, b) or "" in (a, b):
        return "untested"
    if (a, b) in OPPOSITE:
        return "REVERSED"
    return "moved" if (a in DECIDED) != (b in DECIDED) else "changed"


def load(report_dir: Path, name: str, metric: str) -> pd.DataFrame:
    path = report_dir / name
    if not path.is_file():
        sys.exit(f"{path}: not found (run `harness report` for that results folder first)")
    df = pd.read_csv(path, keep_default_na=False, na_values=[""])
    df = df[df["metric"] == metric]
    if df.empty:
        sys.exit(f"{path}: no rows with metric {metric!r} (metrics there: {sorted(set(pd.read_csv(path)['metric']))})")
    return df


def table(dir_a: Path, dir_b: Path, name: str, metric: str, label: str) -> tuple[pd.DataFrame, list[str]]:
    a, b = load(dir_a, name, metric), load(dir_b, name, metric)
    m = a.merge(b, on=KEY, how="outer", suffixes=("_a", "_b"), indicator=True)
    lines = []
    for _, r in m.iterrows():
        if r["_merge"] != "both":
            lines.append(f"| {r['variant']} | {r['benchmark']} | only in {'A' if r['_merge'] == 'left_only' else 'B'} "
                         "| | |")
            continue
        cmp = compare(str(r["verdict_a"]), str(r["verdict_b"]))
        cells = [f"{r[f'diff_{s}']:+.2f} [{r[f'ci_low_{s}']:+.2f}, {r[f'ci_high_{s}']:+.2f}] {r[f'verdict_{s}']} "
                 f"({int(r[f'n_seeds_{s}'])}/{int(r[f'n_seeds_ref_{s}'])} seeds)" for s in ("a", "b")]
        lines.append(f"| {r['variant']} | {r['benchmark']} | {cells[0]} | {cells[1]} | {cmp} |")
        m.loc[_, "compare"] = cmp
    head = [f"{label} ({metric}, {name}): difference to the reference [CI] verdict (seeds variant/reference)", "",
            "| variant | benchmark | A | B | A vs B |", "| --- | --- | --- | --- | --- |"]
    return m, head + lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("report_a", type=Path, help="report folder of run A (holds significance.csv)")
    ap.add_argument("report_b", type=Path, help="report folder of run B")
    ap.add_argument("--metric", default="avg@k", help="metric family to compare (default avg@k, the table's Acc)")
    args = ap.parse_args(argv)
    counts: dict[str, int] = {}
    for name, label in (("significance.csv", "Differences"), ("equivalence.csv", "Equivalence")):
        m, lines = table(args.report_a, args.report_b, name, args.metric, label)
        print("\n".join(lines) + "\n")
        for c in m.get("compare", pd.Series(dtype=str)).dropna():
            counts[c] = counts.get(c, 0) + 1
    print("A vs B: " + ", ".join(f"{k} {counts.get(k, 0)}" for k in ("same", "moved", "REVERSED", "changed",
                                                                       "untested")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
