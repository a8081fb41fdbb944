"""Consistency checks of a grid's result files before they become tables (docs/report.md, "What is checked").

Each function compares one file with what else is stored about the same result and returns the problems found
(empty list: it agrees). harness/reporting/load.py turns each problem into an `Issue` naming the file and leaves
the file out (or the whole cell, when its identity is in doubt). Nothing here reads files or raises on bad data.

What is compared (the writers are harness/runner.py, harness/evaluation/core.py and trainers/train.py):
- cell.json: `cell_id` = the folder name, `grid` = the grid being read, and for the runner's layout the id's
  readable prefix `<model>-<variant>-s<seed>-` and the training run's own config.yaml (model, variant, seed,
  trainer preset): a rewritten cell.json cannot turn one cell into another.
- summary.csv: every row complete and numeric, no (benchmark, metric, k) twice, and row for row equal to the
  `metrics` recorded in `results_<benchmark>.json` (a cut or edited summary.csv differs from it).
- samples_<benchmark>.jsonl: one line per problem (`n_problems`), `n_samples` responses each, and its mean
  correctness equal to the summary's avg@k.
- train/metrics.jsonl: steps 1..N in order, N = the steps recorded in status.json.
"""
from __future__ import annotations

import math
from typing import Any, Iterable

# summary.csv and results_<benchmark>.json are written from the same floats (full precision); hand-made fixtures
# round to 4 decimals, so values agree within 1e-4 (a cut number such as 84.25 -> 8 is far outside).
ABS_TOL = 1e-4
SUMMARY_FIELDS = ("value", "ci_low", "ci_high", "n_problems", "n_samples")


def same(a: Any, b: Any) -> bool:
    """Equal numbers (within ABS_TOL), or both missing (None / NaN)."""
    fa, fb = _num(a), _num(b)
    if fa is None or fb is None or math.isnan(fa) or math.isnan(fb):
        return (fa is None or math.isnan(fa)) and (fb is None or math.isnan(fb))
    return math.isclose(fa, fb, rel_tol=1e-9, abs_tol=ABS_TOL)


def _num(x: Any) -> float | None:
    if x is None or isinstance(x, bool):
        return None
    try:
        return float(x)
    except (TypeError, ValueError):
        return None


def is_runner_cell(cfg: dict) -> bool:
    """cell.json written by harness/runner.py (hand-made result folders have fewer keys)."""
    return "train_overrides" in cfg and "eval_tasks" in cfg


def cell_identity(cfg: dict, folder: str, grid: str) -> list[str]:
    """cell.json against the folder it sits in and the grid being reported."""
    out = []
    cid = cfg.get("cell_id")
    if not isinstance(cid, str) or not cid:
        out.append("cell.json has no cell_id")
    elif cid != folder:
        out.append(f"cell.json says cell_id {cid!r} but its folder is {folder!r} (a copied or moved cell)")
    g = cfg.get("grid")
    if g is None:
        out.append("cell.json has no grid")
    elif str(g) != grid:
        out.append(f"cell.json belongs to grid {g!r}, not {grid!r} (a cell from another grid)")
    for key in ("model", "variant", "seed"):
        if cfg.get(key) in (None, ""):
            out.append(f"cell.json has no {key}")
    if out or not is_runner_cell(cfg):
        return out
    model, variant, seed = cfg.get("model"), cfg.get("variant"), cfg.get("seed")
    prefix = f"{model}-{variant}-s{seed}-"
    if not str(cid).startswith(prefix):
        out.append(f"cell.json says model={model}, variant={variant}, seed={seed}, which does not match its id "
                   f"{cid!r} (expected it to start with {prefix!r})")
    return out


def cell_definition(cfg: dict, train_config: dict | None) -> list[str]:
    """A runner cell's model, variant, seed and trainer against its training run's config.yaml."""
    if not is_runner_cell(cfg) or cfg.get("variant") == "base":
        return []
    if train_config is None:
        return ["train/config.yaml is missing: the cell's training run cannot be checked against cell.json"]
    got = {"model": (train_config.get("model") or {}).get("name"),
           "variant": (train_config.get("mask") or {}).get("name"),
           "seed": train_config.get("seed"),
           "trainer": (train_config.get("trainer") or {}).get("name")}
    return [f"cell.json says {k}={cfg.get(k)!r} but the training run (train/config.yaml) used {k}={v!r}"
            for k, v in got.items() if cfg.get(k) is not None and str(v) != str(cfg.get(k))]


def summary_rows(rows: list[dict]) -> list[str]:
    """summary.csv on its own: numbers where numbers belong, no row twice."""
    out, seen = [], set()
    for r in rows:
        key = (r["benchmark"], r["metric"], r["k"])
        if key in seen:
            out.append(f"line {r['line']}: {r['benchmark']} {r['metric']} k={r['k']} appears twice")
        seen.add(key)
        for f in ("n_problems", "n_samples"):
            v = r.get(f)
            if v is None or math.isnan(v) or v < 1 or v != int(v):
                out.append(f"line {r['line']}: {f}={v!r} is not a positive whole number")
    return out


def summary_vs_results(rows: list[dict], benchmark: str, result: dict) -> list[str]:
    """The summary.csv rows of one benchmark against results_<benchmark>.json's `metrics` (same values, same rows)."""
    if result.get("benchmark") not in (None, benchmark):
        return [f"results_{benchmark}.json is about benchmark {result.get('benchmark')!r}"]
    metrics = result.get("metrics")
    if not isinstance(metrics, list):
        return [f"results_{benchmark}.json has no `metrics` list to check summary.csv against"]
    stored: dict[tuple, dict] = {}
    for m in metrics:
        if not isinstance(m, dict):
            return [f"results_{benchmark}.json: a `metrics` entry is not an object"]
        stored[(str(m.get("metric")), _int(m.get("k")))] = m
    mine = {(r["metric"], r["k"]): r for r in rows}
    out = []
    missing = sorted(set(stored) - set(mine), key=str)
    extra = sorted(set(mine) - set(stored), key=str)
    if missing:
        out.append(f"summary.csv lacks {len(missing)} of the {len(stored)} {benchmark} rows recorded in "
                   f"results_{benchmark}.json (first: {_key(missing[0])})")
    if extra:
        out.append(f"summary.csv has {benchmark} rows that results_{benchmark}.json does not record "
                   f"(first: {_key(extra[0])})")
    for key in sorted(set(mine) & set(stored), key=str):
        r, m = mine[key], stored[key]
        bad = [f for f in SUMMARY_FIELDS if not same(r.get(f), m.get(f))]
        if bad:
            f = bad[0]
            out.append(f"line {r['line']}: {benchmark} {_key(key)} {f}={r.get(f)!r}, but results_{benchmark}.json "
                       f"records {m.get(f)!r}")
    counts = result.get("counts") if isinstance(result.get("counts"), dict) else {}
    for f in ("n_problems", "n_samples"):
        if counts.get(f) is not None and rows and not same(rows[0].get(f), counts[f]):
            out.append(f"{benchmark}: summary.csv {f}={rows[0].get(f)!r}, results_{benchmark}.json counts "
                       f"{counts[f]!r}")
    return out


def samples_vs_summary(n: Iterable[int], c: Iterable[int], rows: list[dict]) -> list[str]:
    """samples_<benchmark>.jsonl (n[i] responses, c[i] correct per problem) against the summary rows."""
    n, c = list(n), list(c)
    if not rows:
        return []
    out = []
    n_problems, n_samples = _int(rows[0].get("n_problems")), _int(rows[0].get("n_samples"))
    if n_problems is not None and len(n) != n_problems:
        out.append(f"{len(n)} problems, but summary.csv counts n_problems={n_problems}")
    if n_samples is not None and any(x != n_samples for x in n):
        odd = next(i for i, x in enumerate(n) if x != n_samples)
        out.append(f"problem {odd + 1} has {n[odd]} responses, but summary.csv counts n_samples={n_samples}")
    avg = next((r for r in rows if r["metric"] == "avg@k"), None)
    if not out and avg is not None and n:
        mine = 100.0 * sum(ci / ni for ci, ni in zip(c, n)) / len(n)
        if not same(mine, avg["value"]):
            out.append(f"mean correctness {mine:.4f}% differs from summary.csv avg@k {avg['value']!r}")
    return out


def metrics_steps(steps: list[int], expected: int | None) -> list[str]:
    """train/metrics.jsonl: steps 1..N in order, N = the steps status.json recorded."""
    out = []
    if steps != list(range(1, len(steps) + 1)):
        first = next((i for i, s in enumerate(steps) if s != i + 1), len(steps))
        out.append(f"steps are not 1..{len(steps)} in order (line {first + 1} has step {steps[first]})")
    if expected is not None and len(steps) != expected:
        out.append(f"{len(steps)} steps, but status.json records steps={expected}")
    return out


def _int(x: Any) -> int | None:
    f = _num(x)
    return None if f is None or math.isnan(f) else int(f)


def _key(key: tuple) -> str:
    return f"{key[0]} k={key[1]}"
