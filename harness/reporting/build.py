"""build_report: read a grid's results, compute, write every output (the work behind `harness report`)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from harness.core.io import atomic_write_json, atomic_write_text, provenance
from harness.reporting import analyses as an
from harness.reporting import figures as figs
from harness.reporting import tables as tb
from harness.reporting.document import Parts, render
from harness.reporting.load import SUMMARY_COLUMNS, Issue, load_grid, load_published

# the paper's numbers (results/published/ in the checkout; a link here, so they ship as package data)
PUBLISHED_DIR = Path(__file__).resolve().parent / "published"


@dataclass
class ReportResult:
    out_dir: Path
    files: list[Path] = field(default_factory=list)
    issues: list[Issue] = field(default_factory=list)
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)  # wall seconds per phase
    cpu_timings: dict[str, float] = field(default_factory=dict)  # CPU seconds per phase


def _csv(df: pd.DataFrame, path: Path, files: list[Path]) -> None:
    files.append(atomic_write_text(path, df.to_csv(index=False)))


def check_options(data, opts: tb.Options, step: str | int) -> None:
    """Options that would silently empty a table (a reference variant, a step or a k that no result has) are bad
    input: ConfigError naming the option, the value and what the stored results offer."""
    from harness.core.config import ConfigError, suggest

    complete = data.cells[data.cells["state"] == "complete"]
    if not len(complete):
        return  # nothing to match against; REPORT.md says why the tables are empty
    variants = sorted(set(data.summary.loc[data.summary["variant"] != "base", "variant"].astype(str)))
    if variants and opts.reference not in variants:
        raise ConfigError(f"reference={opts.reference!r} matches no variant with results in grid {data.grid!r}"
                          f"{suggest(opts.reference, variants)}; variants: {', '.join(variants)}")
    if str(step) != "last":
        steps = sorted({int(x.split("-")[1]) for s in complete["steps"] for x in str(s).split() if x != "base"})
        if int(step) not in steps:
            raise ConfigError(f"step={step} was not evaluated in any complete cell of grid {data.grid!r}; "
                              f"evaluated steps: {', '.join(map(str, steps)) or 'none'} (or step=last)")
    if opts.k is not None:
        for label, metric in opts.metrics.items():
            ks = sorted(set(data.summary.loc[data.summary["metric"] == metric, "k"].dropna().astype(int)))
            if ks and int(opts.k) not in ks:
                raise ConfigError(f"k={opts.k}: no {metric} result at k={opts.k} for table {label}; available k: "
                                  f"{', '.join(map(str, ks))} (or k=null: the largest)")


def build_report(results_dir: str | Path, grid: str, out_dir: str | Path | None = None,
                 published_dir: str | Path | None = None, step: str | int = "last", opts: tb.Options | None = None,
                 make_figures: bool = True, scaling_variant: str = "top20", passk_max: int = 16,
                 models: dict | None = None, config: dict | None = None) -> ReportResult:
    """Read results_dir/runs/<grid>/, write everything under out_dir (default results_dir/<grid>).

    models: model preset -> {name, size_b} (configs/report.yaml `models`), the display names of the tables."""
    t0 = time.perf_counter()
    opts = opts or tb.Options()
    results_dir = Path(results_dir)
    out = Path(out_dir) if out_dir else results_dir / grid
    res = ReportResult(out_dir=out)
    clock = [(time.perf_counter(), time.process_time())]

    def lap(name: str) -> None:  # wall and CPU seconds per phase (the CPU time is robust to a busy machine)
        clock.append((time.perf_counter(), time.process_time()))
        res.timings[name] = clock[-1][0] - clock[-2][0]
        res.cpu_timings[name] = clock[-1][1] - clock[-2][1]

    from harness.core.io import git_hash

    commit = git_hash()  # before this run rewrites any tracked output (else the tree always looks dirty)
    data = load_grid(results_dir, grid, step, models)
    check_options(data, opts, step)  # before anything is written
    lap("load")
    issues = list(data.issues)
    pub_dir = Path(published_dir) if published_dir else PUBLISHED_DIR
    try:
        published = load_published(pub_dir)
    except (OSError, ValueError) as e:
        issues.append(Issue(str(pub_dir / "published.csv"), f"unreadable, no published comparison: {e}"))
        published = pd.DataFrame(columns=["model", "variant", "benchmark", "metric", "value", "source"])

    def lookup(cell_id: str, ev: str, benchmark: str):
        return data.samples.get((cell_id, ev), {}).get(benchmark)

    rows = tb.table_rows(data.summary, data.cells)
    long = tb.aggregate(rows, lookup, opts)
    comparison = tb.published_comparison(long, published, opts)
    significance = tb.significance_table(long)
    equivalence = tb.equivalence_table(long)
    seeds = tb.seed_table(rows, opts)
    passk = tb.passk_curves(rows, lookup, opts, passk_max)
    versions = tb.version_checks(data.evals)
    lap("statistics")

    f = res.files
    _csv(data.summary[SUMMARY_COLUMNS], out / "summary.csv", f)
    _csv(data.cells.drop(columns=["path"]), out / "cells.csv", f)
    _csv(long, out / "tables" / "table2_long.csv", f)
    md_tables, tex = {}, []
    for label, metric in opts.metrics.items():
        header, text, numeric = tb.wide_rows(long, label, opts)
        if not text:
            continue
        k = int(long.loc[long["label"] == label, "k"].iloc[0])
        heading = f"Table 2 layout: {label}@{k} ({metric} with k={k})"
        md = tb.markdown_table(header, text)
        md_tables[label] = (md, heading)
        f.append(atomic_write_text(out / "tables" / f"table2_{label.lower()}.md", f"# {heading}\n\n{md}"))
        _csv(pd.DataFrame(numeric), out / "tables" / f"table2_{label.lower()}.csv", f)
        tex.append(tb.latex_table(header, text, f"{label}@{k}, grid {grid}: {tb.legend(opts)}"))
    if tex:
        f.append(atomic_write_text(out / "tables" / "table2.tex", "\n".join(tex)))
    _csv(comparison, out / "published_comparison.csv", f)
    f.append(atomic_write_text(out / "published_comparison.md", tb.df_markdown(comparison)))
    _csv(significance, out / "significance.csv", f)
    _csv(equivalence, out / "equivalence.csv", f)
    f.append(atomic_write_text(out / "tables" / "equivalence.md", tb.df_markdown(equivalence)))
    _csv(seeds, out / "seeds.csv", f)
    _csv(passk, out / "passk.csv", f)
    _csv(versions, out / "versions.csv", f)

    lap("tables")
    figures: dict[str, tuple[Path | None, str]] = {}
    if make_figures:
        fd = out / "figures"
        curves = tb.training_curve_data(data.train, data.summary, data.cells, opts)
        made = {
            "Scaling (Fig. 1b)": (fd / "scaling.png", lambda p: figs.scaling_plot(long, published, opts,
                                                                                  scaling_variant, p)),
            "rho sweep": (fd / "rho_sweep.png", lambda p: figs.rho_sweep_plot(long, opts, p)),
            "Training curves (Fig. 6/7)": (fd / "training_curves.png", lambda p: figs.training_curves(curves, p)),
            "pass@k": (fd / "passk.png", lambda p: figs.passk_plot(passk, opts, p)),
        }
        for title, (target, draw) in made.items():
            figures[title] = draw(target)
            if figures[title][0] is None and target.exists():
                target.unlink()  # a figure from an earlier report that this data no longer makes
        f.extend(p for p, _ in figures.values() if p)
    lap("figures")
    reading_path = next((p for p in (out / "READING.md", results_dir / grid / "READING.md") if p.is_file()), None)
    reading = None
    if reading_path is not None:
        try:
            reading = reading_path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            issues.append(Issue(str(reading_path), f"unreadable, no Reading section: {e}"))
    analysis = an.index(data.analysis, data.cells, opts.variant_order, results_dir / grid / "analysis")
    analysis_tables = {}
    for kind, entries in analysis.items():
        for e in entries:
            if e.error:
                issues.append(Issue(str(e.csv), f"unreadable analysis CSV: {e.error}; left out"))
        t = an.last_step_table(entries)
        if t is not None:
            analysis_tables[kind] = t
            _csv(t, out / "tables" / f"analysis_{kind}_last_step.csv", f)
    extra = {}
    for name, title in (("overlap_table1.csv", "Table 1 (overlap of top-20% entropy positions)"),
                        ("entropy_stats.csv", "Fig. 2 entropy statistics")):
        try:
            extra[title] = pd.read_csv(pub_dir / name, dtype=str, keep_default_na=False)
        except (OSError, ValueError):
            pass
    entropy_cmp = None
    ours_entropy = {}
    for e in analysis.get("entropy", []):
        if e.table is None or e.csv is None:
            continue  # an unreadable CSV is already among the issues
        if not {"statistic", "value"} <= set(e.table.columns):
            issues.append(Issue(str(e.csv), "entropy statistics lack the statistic/value columns; left out"))
            continue
        ours_entropy[e.cell_id or e.source] = e.table[["statistic", "value"]]
    if ours_entropy and "Fig. 2 entropy statistics" in extra:
        entropy_cmp = tb.entropy_comparison(extra["Fig. 2 entropy statistics"], ours_entropy)
        _csv(entropy_cmp, out / "entropy_comparison.csv", f)
    notes = []
    for label, metric in opts.metrics.items():
        k = tb.choose_k(rows, metric, opts.k)
        other = rows[(rows["metric"] == metric) & (rows["k"] != k)]
        if len(other):
            notes.append(f"{label}: {len(other)} result(s) at k = {sorted(set(other['k'].dropna().astype(int)))} are "
                         f"not in the tables (they use k = {k}); they are in summary.csv")
    prov = provenance(config, grid=grid, results_dir=str(results_dir), n_cells=len(data.cells),
                      issues=[vars(i) for i in issues], reading=str(reading_path) if reading is not None else None)
    prov["git_hash"] = commit
    parts = Parts(grid=grid, out_dir=out, provenance=prov, cells=data.cells, issues=issues, versions=versions,
                  eval_times=sorted(e["time_utc"] for e in data.evals if e.get("time_utc")), tables=md_tables,
                  comparison=comparison, significance=significance, equivalence=equivalence, opts=opts,
                  seeds=seeds, figures=figures,
                  analysis=analysis, analysis_tables=analysis_tables, reading=reading, published_extra=extra,
                  entropy_comparison=entropy_cmp, notes=notes)
    f.append(atomic_write_json(out / "provenance.json", prov))
    f.append(atomic_write_text(out / "REPORT.md", render(parts)))
    lap("report")
    res.issues = issues
    res.seconds = time.perf_counter() - t0
    return res
