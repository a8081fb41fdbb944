"""`harness report`: tables in the paper's layout, figures, significance and the published comparison.

Reads only result files (docs/DESIGN.md: results/runs/<grid>/<cell_id>/...) and writes under results/<grid>/:
summary.csv, cells.csv, tables/ (Table 2 layout as Markdown, LaTeX and CSV), published_comparison.{csv,md},
significance.csv, seeds.csv, passk.csv, figures/*.png, provenance.json and REPORT.md (with the hand-written
results/<grid>/READING.md, if any, as its "Reading" section; never written here). Reruns nothing.
The logic lives in harness/reporting/ (build: the sequence; load: reading; tables + stats: pure math; figures;
analyses: entropy-analysis outputs per kind and cell; document: REPORT.md). This module is the command-line entry.

Deviations and choices (the paper prints point estimates from one run per setting):
- CIs, paired bootstrap and seed intervals are this harness's additions; see harness/reporting/stats.py.
- avg@k for any k estimates pass@1, so a result with k != 16 is still compared with Acc@16 (marked in `status`).
- Tables use each complete cell's last evaluated step (`step=last`) unless `step=N` is given.
"""
from __future__ import annotations

import sys
from pathlib import Path

from harness.reporting import tables as tb
from harness.reporting.build import PUBLISHED_DIR, ReportResult, build_report  # noqa: F401  (the Python API)

METRIC_FAMILIES = ("avg@k", "pass@k", "maj@k", "len@k")


def options_from_config(cfg) -> tb.Options:
    return tb.Options(reference=str(cfg.reference), variant_order=tuple(cfg.variant_order),
                      benchmark_names=dict(cfg.benchmark_names), average_over=tuple(cfg.average_over),
                      metrics=dict(cfg.metrics), k=None if cfg.k is None else int(cfg.k), n_boot=int(cfg.n_boot),
                      alpha=float(cfg.alpha), seed=int(cfg.seed))


def main(cfg) -> int:
    from harness.core.config import ConfigError, to_dict

    grid = str(cfg.grid.name) if hasattr(cfg.grid, "name") else str(cfg.grid)
    results_dir = Path(cfg.results_dir)
    if not (results_dir / "runs" / grid).is_dir():
        raise ConfigError(f"no results for grid {grid!r}: {results_dir / 'runs' / grid} does not exist")
    if str(cfg.step) != "last" and not str(cfg.step).isdigit():
        raise ConfigError(f"step={cfg.step!r}: use 'last' or a step number")
    bad = {label: m for label, m in cfg.metrics.items() if m not in METRIC_FAMILIES}
    if bad:
        raise ConfigError(f"metrics {bad}: each must be one of {', '.join(METRIC_FAMILIES)}")
    if not 0 < float(cfg.alpha) < 1 or int(cfg.n_boot) < 100:
        raise ConfigError(f"alpha={cfg.alpha} must be in (0, 1) and n_boot={cfg.n_boot} at least 100")
    res = build_report(results_dir, grid, out_dir=cfg.out_dir, published_dir=cfg.published_dir,
                       step=cfg.step, opts=options_from_config(cfg), make_figures=bool(cfg.figures),
                       scaling_variant=str(cfg.scaling_variant), passk_max=int(cfg.passk_max),
                       models=to_dict(cfg.models) if cfg.get("models") else None, config=to_dict(cfg))
    for i in res.issues:
        print(f"harness report: skipped {i.path}: {i.problem}", file=sys.stderr)
    print(f"harness report: wrote {len(res.files)} files under {res.out_dir} in {res.seconds:.1f} s "
          f"({len(res.issues)} problem(s) with result files); see {res.out_dir / 'REPORT.md'}")
    return 0
