"""`harness report`: tables in the paper's layout, figures, significance and the published comparison.

Reads only result files (docs/DESIGN.md: results/runs/<grid>/<cell_id>/...) and writes under results/<grid>/:
summary.csv, cells.csv, tables/ (Table 2 layout as Markdown, LaTeX and CSV), published_comparison.{csv,md},
significance.csv, seeds.csv, passk.csv, figures/*.png, provenance.json and REPORT.md (with the hand-written
results/<grid>/READING.md, if any, as its "Reading" section; never written here). Reruns nothing.
The logic lives in harness/reporting/ (build: the sequence; load: reading; tables + stats: pure math; figures;
analyses: entropy-analysis outputs per kind and cell; document: REPORT.md). This module is the command-line entry.

Deviations and choices (the paper prints point estimates from one run per setting):
- CIs, tests and the equivalence verdict are this harness's additions, with the training run (seed) as the unit
  of inference; see harness/reporting/stats.py (run_interval) and configs/report.yaml (min_seeds, equivalence).
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
                      alpha=float(cfg.alpha), seed=int(cfg.seed), min_seeds=int(cfg.min_seeds),
                      equivalence_variant=None if cfg.equivalence.variant is None else str(cfg.equivalence.variant),
                      equivalence_margin=float(cfg.equivalence.margin),
                      equivalence_metric=str(cfg.equivalence.metric))


def main(cfg) -> int:
    """Exit status: 0 when every result file was complete and consistent, 1 when the report was written but something
    was left out (each listed in REPORT.md and on stderr), 2 on bad input (nothing written)."""
    from harness.core.config import (ConfigError, require_int, require_number, require_output_dir, require_seed,
                                     suggest, to_dict)

    grid = str(cfg.grid.name) if hasattr(cfg.grid, "name") else str(cfg.grid)
    results_dir = Path(cfg.results_dir)
    if not (results_dir / "runs").is_dir():
        raise ConfigError(f"results_dir={str(cfg.results_dir)!r}: {results_dir / 'runs'} does not exist (no results)")
    if not (results_dir / "runs" / grid).is_dir():
        have = sorted(p.name for p in (results_dir / "runs").iterdir() if p.is_dir())
        raise ConfigError(f"no results for grid {grid!r}: {results_dir / 'runs' / grid} does not exist"
                          f"{suggest(grid, have)}; grids with results: {', '.join(have) or 'none'}")
    if str(cfg.step) != "last" and not str(cfg.step).isdigit():
        raise ConfigError(f"step={cfg.step!r} is not valid: use 'last' or a step number")
    bad = {label: m for label, m in cfg.metrics.items() if m not in METRIC_FAMILIES}
    if bad:
        raise ConfigError(f"metrics {bad}: each must be one of {', '.join(METRIC_FAMILIES)}")
    # alpha < 0.5: the equivalence interval is 1 - 2 alpha
    require_number(cfg.alpha, "alpha", 0, 0.5, low_open=True, high_open=True)
    require_int(cfg.n_boot, "n_boot", 100)
    require_int(cfg.passk_max, "passk_max", 1)
    require_seed(cfg.seed)
    require_int(cfg.min_seeds, "min_seeds", 2)  # a test needs a run-to-run variance in each arm
    require_number(cfg.equivalence.margin, "equivalence.margin", 0, low_open=True)
    if cfg.equivalence.metric not in METRIC_FAMILIES:
        raise ConfigError(f"equivalence.metric={cfg.equivalence.metric!r} is not valid: use one of "
                          f"{', '.join(METRIC_FAMILIES)}")
    if cfg.k is not None:
        require_int(cfg.k, "k", 1)
    out_dir = cfg.out_dir if cfg.out_dir else results_dir / grid
    require_output_dir(out_dir, "out_dir")
    res = build_report(results_dir, grid, out_dir=cfg.out_dir, published_dir=cfg.published_dir,
                       step=cfg.step, opts=options_from_config(cfg), make_figures=bool(cfg.figures),
                       scaling_variant=str(cfg.scaling_variant), passk_max=int(cfg.passk_max),
                       models=to_dict(cfg.models) if cfg.get("models") else None, config=to_dict(cfg))
    for i in res.issues:
        print(f"harness report: left out {i.path}: {i.problem}", file=sys.stderr)
    print(f"harness report: wrote {len(res.files)} files under {res.out_dir} in {res.seconds:.1f} s "
          f"({len(res.issues)} problem(s): result files or cells left out); see {res.out_dir / 'REPORT.md'}")
    return 1 if res.issues else 0
