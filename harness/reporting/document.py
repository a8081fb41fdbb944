"""REPORT.md: every table, figure and check of a grid in one Markdown file, with a provenance header."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from harness.reporting.analyses import Entry
from harness.reporting.load import Issue
from harness.reporting.tables import Options, df_markdown, legend, markdown_table, model_order


@dataclass
class Parts:
    grid: str
    out_dir: Path
    provenance: dict                         # harness.core.io.provenance() of this report run
    cells: pd.DataFrame
    issues: list[Issue]
    versions: pd.DataFrame                   # tables.version_checks
    eval_times: list[str]
    tables: dict[str, tuple[str, str]]       # label -> (Markdown table, heading)
    comparison: pd.DataFrame
    significance: pd.DataFrame
    equivalence: pd.DataFrame                # tables.equivalence_table
    opts: Options
    seeds: pd.DataFrame
    figures: dict[str, tuple[Path | None, str]]  # title -> (path, reason when absent)
    analysis: dict[str, list[Entry]]         # analyses.index: kind -> one entry per cell
    published_extra: dict[str, pd.DataFrame] = field(default_factory=dict)  # Table 1, Fig. 2 statistics
    entropy_comparison: pd.DataFrame | None = None   # Fig. 2 statistics, published vs our entropy.csv files
    notes: list[str] = field(default_factory=list)
    analysis_tables: dict[str, pd.DataFrame] = field(default_factory=dict)  # kind -> analyses.last_step_table
    reading: str | None = None               # results/<grid>/READING.md, written by a person


def demote(text: str, top: int = 3) -> str:
    """Markdown with its headings shifted so the shallowest is level `top` (code fences left alone); a leading
    `Reading` heading is dropped (the section has that title)."""
    lines = text.strip("\n").splitlines()
    while lines and (not lines[0].strip() or lines[0].lstrip("#").strip().lower() == "reading"
                     and lines[0].startswith("#")):
        lines.pop(0)
    fence, levels = False, []
    for line in lines:
        fence ^= line.lstrip().startswith("```")
        if not fence and line.startswith("#"):
            levels.append(len(line) - len(line.lstrip("#")))
    shift = top - min(levels) if levels else 0
    out, fence = [], False
    for line in lines:
        if line.lstrip().startswith("```"):
            fence = not fence
        out.append("#" * shift + line if not fence and line.startswith("#") and shift > 0 else line)
    return "\n".join(out)


def _analysis_md(p: Parts) -> list[str]:
    """Grouped by analysis kind, each cell's table and figure headed by its variant and seed."""
    out = []
    for kind, entries in p.analysis.items():
        n = sum(1 for e in entries if e.cell_id)
        out += [f"### {kind}" + (f" ({n} cell{'s' if n != 1 else ''})" if n else ""), ""]
        if kind in p.analysis_tables:
            t = p.analysis_tables[kind]
            out += [f"Across cells, each cell's last step ([csv](tables/analysis_{kind}_last_step.csv)):", "",
                    df_markdown(t, "{:.4g}"), ""]
        for e in entries:
            links = f" ([csv]({_rel(e.csv, p.out_dir)}))" if e.csv else ""
            out += [f"#### {kind} — {e.label}{links}", ""]
            if e.csv:
                if e.error:
                    out += [f"Could not read: {e.error}", ""]
                else:
                    df = e.table
                    out += [df_markdown(df.head(20), "{:.4g}") + (f"\n({len(df)} rows; first 20 shown)\n"
                                                                 if len(df) > 20 else ""), ""]
            if e.png:
                out += [f"![{kind} — {e.label}]({_rel(e.png, p.out_dir)})", ""]
    return out


def _rel(path: Path, base: Path) -> str:
    return Path(os.path.relpath(path, base)).as_posix()


def _comparison_md(c: pd.DataFrame) -> list[str]:
    """Compared rows as a table; published rows without a result of ours listed compactly (all are in the CSV)."""
    if c.empty:
        return ["No published numbers loaded."]
    done, missing = c[c["status"] != "no result"], c[c["status"] == "no result"]
    out = [df_markdown(done.drop(columns=["status"])) if len(done) else "None of our results matches a published row."]
    if len(missing):
        out += ["", f"Published rows we have no result for ({len(missing)}; values in published_comparison.csv):", ""]
        for (m, v, met), g in missing.groupby(["model", "variant", "metric"], sort=False):
            out.append(f"- {m} {v} {met}: " + ", ".join(f"{b} {x}" for b, x in zip(g["benchmark"], g["published"])))
    return out


def seeds_per_variant(cells: pd.DataFrame) -> str:
    """'6 seeds: full, top20; 3 seeds: top10' per model, complete trained cells only."""
    c = cells[(cells["state"] == "complete") & (cells["variant"] != "base")]
    parts = []
    for model in model_order(c):
        g = c[c["model"] == model]
        counts = g.groupby("variant", sort=False)["seed"].nunique()
        by_n = "; ".join(f"{n} seed{'s' if n != 1 else ''}: {', '.join(sorted(v.index))}"
                         for n, v in sorted(counts.groupby(counts), reverse=True))
        parts.append(f"{model}: {by_n}")
    return " | ".join(parts) or "no complete trained cell"


def _method_md(p: Parts) -> list[str]:
    o = p.opts
    return ["## How the intervals and tests are made", "",
            f"- Unit of inference: the training run (seed). Seeds per variant: {seeds_per_variant(p.cells)}.",
            f"- Interval of a variant or of a difference, 2+ seeds: seeds and problems as crossed random effects "
            f"(variance between the runs' values plus variance over problems of the seed-averaged scores, minus "
            f"the residual counted in both), Student-t with Welch-Satterthwaite degrees of freedom; arms "
            f"independent, problems paired (harness/reporting/stats.py `run_interval`). One run: problem sampling "
            f"only (marked †).",
            f"- A difference to `{o.reference}` is tested (* and verdict higher / lower / inconclusive at alpha = "
            f"{o.alpha:g}) only when each arm has at least {o.min_seeds} seeds (`min_seeds`); otherwise it reads "
            f"\"too few seeds\" (†).",
            *([f"- Equivalence (the paper's \"top-20% matches full\"): `{o.equivalence_variant}` - `{o.reference}`, "
               f"{100 * (1 - 2 * o.alpha):g}% interval against a margin of ±{o.equivalence_margin:g} points "
               f"(configs/report.yaml gives the reason): equivalent inside, different beyond, else inconclusive "
               f"(TOST)."] if o.equivalence_variant else []),
            "- Exact repeatability: a result repeats bit for bit only on the same CPU type (instruction set, see "
            "each result's provenance `cpu`) with the same thread counts; elsewhere only statistically, within "
            "these intervals.", ""]


def render(p: Parts) -> str:
    prov = p.provenance
    lines = [f"# Report: grid `{p.grid}`", "",
             f"Generated {prov['time_utc']} by `harness report` at commit `{prov['git_hash']}` on {prov['host']}.",
             ""]
    complete = p.cells[p.cells["state"] == "complete"]
    hashes = sorted(set(p.versions.loc[p.versions["kind"] == "git", "version"])) if len(p.versions) else []
    libs = p.versions[p.versions["kind"] == "library"] if len(p.versions) else p.versions
    lines += [f"- cells: {len(p.cells)} found, {len(complete)} complete (only complete cells enter the tables)",
              f"- results produced at commit(s): {', '.join(f'`{h}`' for h in hashes) or 'not recorded'}",
              "- library versions of the evaluations: " + (", ".join(
                  f"{n} {'/'.join(g['version'])}" for n, g in libs.groupby("name", sort=True)) or "not recorded"),
              f"- evaluation dates: {min(p.eval_times)} to {max(p.eval_times)}" if p.eval_times
              else "- evaluation dates: not recorded",
              f"- report libraries: {', '.join(f'{k} {v}' for k, v in prov['versions'].items())}", ""]
    if p.reading is not None:
        lines += ["## Reading", "", "<!-- from READING.md beside this report, written by hand: edit that file -->",
                  "", demote(p.reading), ""]
    lines += ["## Problems with result files", ""]
    if p.issues:
        lines += ["Each of these was checked and left out (docs/report.md, \"What is checked\"); the rest of the "
                  "report is built without it, and `harness report` exits with status 1:", "",
                  markdown_table(["file", "problem"], [[i.path, i.problem] for i in p.issues])]
    else:
        lines += ["None: every cell is complete and every file read was complete and agreed with the other files "
                  "stored for it (row counts, results_<benchmark>.json, cell identity).", ""]
    flagged = p.versions[p.versions["flag"]] if len(p.versions) else p.versions
    lines += ["## Version consistency", ""]
    if not len(p.versions):
        lines += ["No evaluation recorded its provenance (results_<benchmark>.json).", ""]
    elif len(flagged):
        lines += ["**Cells disagree on these versions** (compare their results with care; cells evaluated on different machines repeat only statistically):", "",
                  df_markdown(flagged[["kind", "name", "version", "n_cells", "cells"]])]
    else:
        lines += ["All evaluations agree on library versions, task versions, commit and machine (CPU, instruction "
                  "set, torch's kernel level and threads).", ""]
    mach = p.versions[p.versions["kind"] == "machine"] if len(p.versions) else p.versions
    if len(mach):
        lines += ["Machines of the evaluations: " + "; ".join(
            f"{n} {' / '.join(g['version'])}" for n, g in mach.groupby("name", sort=True)) + ".", ""]
    lines += ["## Cells", "", df_markdown(p.cells[["cell_id", "model", "variant", "rho", "seed", "state",
                                                     "table_step", "steps"]].fillna("")), ""]
    lines += _method_md(p)
    for label, (md, heading) in p.tables.items():
        lines += [f"## {heading}", "", md, "", legend(p.opts), ""]
    lines += ["## Comparison with the published numbers", "",
              "`published` is the paper's value as printed (results/published/published.csv); `diff` = ours - "
              "published; `inside_ci`: whether the published value lies inside our CI.", "",
              *_comparison_md(p.comparison), ""]
    if p.opts.equivalence_variant:
        lines += [f"## Equivalence: {p.opts.equivalence_variant} vs {p.opts.reference} "
                  f"(margin ±{p.opts.equivalence_margin:g})", "",
                  f"`ci_low`, `ci_high`: {100 * (1 - 2 * p.opts.alpha):g}% interval of the difference "
                  f"(equivalence.csv).", "",
                  df_markdown(p.equivalence) if len(p.equivalence) else
                  f"No model has both {p.opts.equivalence_variant} and {p.opts.reference}.", ""]
    lines += ["## Differences to the reference (training runs as the unit)", "",
              f"`verdict`: higher / lower (p < {p.opts.alpha:g}) or inconclusive, with at least "
              f"{p.opts.min_seeds} seeds per arm; else too few seeds. `df`: Welch-Satterthwaite degrees of freedom "
              f"(significance.csv).", "",
              df_markdown(p.significance) if len(p.significance) else "No variant has a reference to compare with.",
              "", "## Across seeds", "",
              df_markdown(multi) if len(multi := p.seeds[p.seeds["n_seeds"] > 1]) else
              "No model x variant has more than one seed.", "All rows, one seed included: seeds.csv.", ""]
    lines += ["## Figures", ""]
    for title, (path, reason) in p.figures.items():
        lines += [f"### {title}", "", f"![{title}]({_rel(path, p.out_dir)})" if path else f"Not drawn: {reason}.",
                  ""]
    lines += ["## Entropy analyses", ""]
    if p.analysis:
        lines += _analysis_md(p)
    else:
        lines += ["No analysis outputs found (results/runs/<grid>/*/analysis/, results/<grid>/analysis/).", ""]
    if p.entropy_comparison is not None:
        lines += ["### Fig. 2 statistics: published vs ours", "",
                  "Columns after `source` are our entropy.csv files (by cell or folder). The paper's values are for "
                  "Qwen3-8B; another model is expected to differ.", "",
                  df_markdown(p.entropy_comparison, "{:.4g}"), ""]
    for title, df in p.published_extra.items():
        lines += [f"### Published: {title}", "", df_markdown(df), ""]
    if p.notes:
        lines += ["## Notes", "", *[f"- {n}" for n in p.notes], ""]
    return "\n".join(lines)
