"""Reading a grid's result files: liberal about optional fields, strict about completeness and identity.

Everything read here is listed in docs/report.md. Each file is checked for completeness and against what else is
stored about the same result (harness/reporting/checks.py). A file that is missing, partial, corrupt or disagrees
becomes an `Issue` (path + what is wrong and what was left out) and is left out; a cell whose identity is in doubt
(cell.json against its folder, its grid and its training run; two cells claiming the same model, variant and seed)
is left out whole. Nothing here raises on bad data, so the report always builds.
"""
from __future__ import annotations

import csv
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from harness.core import rundir
from harness.core.status import cell_state
from harness.reporting import checks
from harness.tasks import current_name

SUMMARY_COLUMNS = ["grid", "cell_id", "model", "variant", "rho", "seed", "step", "benchmark", "metric", "k",
                   "value", "ci_low", "ci_high", "n_problems", "n_samples", "git_hash"]
CELL_COLUMNS = ["cell_id", "model", "model_size_b", "variant", "rho", "seed", "trainer", "suite", "state",
                "steps", "table_step", "git_hash", "path"]
TRAIN_KEYS = ("reward_mean", "response_len_mean", "entropy_mean", "selected_frac", "grad_norm")
_DEFAULT_RHO = {"full": 1.0, "bottom80": 0.8}
_METRIC_RE = re.compile(r"^(avg|pass|maj|len)@(\d+|k)$")


@dataclass(frozen=True)
class Issue:
    path: str
    problem: str


@dataclass
class ProblemScores:
    """Per-problem results of one benchmark evaluation (from samples_<benchmark>.jsonl)."""
    keys: list[str]           # problem identity, used to pair problems across runs
    n: np.ndarray             # [P] responses per problem
    c: np.ndarray             # [P] correct responses per problem
    length: np.ndarray        # [P] mean response length (tokens); NaN when absent

    @property
    def acc(self) -> np.ndarray:  # [P] problem score in percent
        return 100.0 * self.c / self.n


@dataclass
class GridData:
    grid: str
    cells: pd.DataFrame                      # CELL_COLUMNS, one row per cell directory that has a usable cell.json
    summary: pd.DataFrame                    # SUMMARY_COLUMNS + eval (base|step-N) + in_table; complete cells
    samples: dict[tuple[str, str], dict[str, ProblemScores]]  # (cell_id, "base"|"step-N") -> benchmark -> scores
    train: pd.DataFrame                      # cell_id, step, TRAIN_KEYS... (complete cells)
    evals: list[dict]                        # provenance per (cell, eval dir, benchmark): versions, task versions
    analysis: list[Path]                     # analysis outputs (png, csv) found for this grid
    issues: list[Issue] = field(default_factory=list)


def _read_json(path: Path, issues: list[Issue]) -> dict | None:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        issues.append(Issue(str(path), "missing"))
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        issues.append(Issue(str(path), f"corrupt JSON: {e}"))
        return None
    if not isinstance(obj, dict):
        issues.append(Issue(str(path), f"expected a JSON object, got {type(obj).__name__}"))
        return None
    return obj


def _name(x) -> str | None:
    """A display name from a string or a nested config (`{name: ...}`)."""
    if isinstance(x, dict):
        x = x.get("display_name") or x.get("name")
    return None if x is None else str(x)


def _float(x) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


def default_rho(variant: str) -> float:
    if variant in _DEFAULT_RHO:
        return _DEFAULT_RHO[variant]
    m = re.match(r"^(?:top|random|bottom)(\d+)$", variant)
    return int(m.group(1)) / 100.0 if m else math.nan


def size_from_name(name: str) -> float:
    """Billions of parameters from a name such as Qwen3-32B-Base or qwen3_8b; NaN if none."""
    m = re.search(r"(?<![\d.])(\d+(?:\.\d+)?)[bB](?![a-zA-Z])", name)
    return float(m.group(1)) if m else math.nan


def parse_cell(cfg: dict, cell_dir: Path, models: dict | None = None) -> dict:
    """The fields the report needs from a cell.json (nested or flat), with defaults for optional ones.

    `models` maps a model preset (what the runner writes, e.g. qwen3_8b) to {name, size_b}: the display name
    used in tables and in the published comparison. Otherwise the size comes from `model_size_b` or the name.
    """
    model_cfg = cfg.get("model") if isinstance(cfg.get("model"), dict) else {}
    variant = _name(cfg.get("variant")) or "unknown"
    rho = cfg.get("rho", (cfg.get("variant") or {}).get("rho") if isinstance(cfg.get("variant"), dict) else None)
    size = cfg.get("model_size_b", model_cfg.get("size_b") if model_cfg else None)
    model = _name(cfg.get("model")) or "unknown"
    alias = (models or {}).get(model) or {}
    if alias:
        model = str(alias.get("name", model))
        size = size if size is not None else alias.get("size_b")
    size = _float(size) if size is not None else size_from_name(model)
    return {
        "cell_id": str(cfg.get("cell_id") or cell_dir.name),
        "model": model,
        "model_size_b": size,
        "variant": variant,
        "rho": _float(rho) if rho is not None else default_rho(variant),
        "seed": cfg.get("seed") if isinstance(cfg.get("seed"), (int, str)) else None,
        "trainer": _name(cfg.get("trainer")),
        "suite": _name(cfg.get("suite")),
    }


def read_complete_text(path: Path) -> str:
    """A text file that was written to the end: every writer ends its last line with a newline, so a file cut
    short (a copy or disk that stopped) ends without one. Raises ValueError."""
    text = Path(path).read_text(encoding="utf-8")
    if text and not text.endswith("\n"):
        raise ValueError(f"truncated: the last line ({len(text.splitlines())}) is cut off")
    return text


SUMMARY_CSV_COLUMNS = ("benchmark", "metric", "k", "value", "ci_low", "ci_high", "n_problems", "n_samples")


def read_summary_csv(path: Path) -> list[dict]:
    """Rows of an evaluation summary.csv with metric normalised to `avg@k` etc. and k an int, each with its `line`;
    every row must be complete (all fields, numbers parse). Raises ValueError naming the line."""
    lines = read_complete_text(path).splitlines()
    reader = csv.reader(lines)
    header = next(reader, None) or []
    missing = [c for c in SUMMARY_CSV_COLUMNS if c not in header]
    if missing:
        raise ValueError(f"missing columns {missing}")
    col = {c: header.index(c) for c in header}
    rows = []
    for i, fields in enumerate(reader, start=2):
        if not any(f.strip() for f in fields):
            continue
        if len(fields) != len(header):
            raise ValueError(f"line {i}: {len(fields)} fields, the header has {len(header)}")
        r = {c: fields[j] for c, j in col.items()}
        metric, k = r["metric"].strip(), _float(r["k"])
        m = _METRIC_RE.match(metric)
        if m:
            metric = f"{m.group(1)}@k"
            if m.group(2) != "k":
                k = float(m.group(2))
        nums = {}
        for f in ("value", "ci_low", "ci_high", "n_problems", "n_samples"):
            nums[f] = _float(r[f])
            if math.isnan(nums[f]) and (f == "value" or r[f].strip() not in ("", "nan", "NaN")):
                raise ValueError(f"line {i}: {f} {r[f]!r} is not a number")
        rows.append({"benchmark": r["benchmark"].strip(), "metric": metric,
                     "k": None if math.isnan(k) else int(k), **nums, "line": i})
    if not rows:
        raise ValueError("no rows")
    return rows


def read_samples(path: Path) -> ProblemScores:
    """Per-problem correct counts and mean lengths; raises ValueError naming the bad line."""
    keys, n, c, length = [], [], [], []
    seen: dict[str, int] = {}
    doc_ids: dict = {}
    for i, line in enumerate(read_complete_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
            correct = r["correct"]
            n_ok = correct.count(True)  # bools (1 counts as True too)
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
            raise ValueError(f"line {i}: {type(e).__name__}: {e}") from None
        if not isinstance(correct, list) or not correct:
            raise ValueError(f"line {i}: `correct` must be a non-empty list")
        if "doc_id" in r:
            d = json.dumps(r["doc_id"])
            if d in doc_ids:
                raise ValueError(f"line {i}: doc_id {r['doc_id']} again (first on line {doc_ids[d]})")
            doc_ids[d] = i
        p = r.get("problem", r.get("doc_id", i - 1))
        key = p if isinstance(p, str) else json.dumps(p, sort_keys=True)
        seen[key] = seen.get(key, 0) + 1
        keys.append(key if seen[key] == 1 else f"{key}#{seen[key]}")  # repeated problems stay distinct
        n.append(len(correct))
        c.append(n_ok)
        lens = r.get("lengths") or []
        try:
            length.append(sum(lens) / len(lens) if lens else math.nan)
        except TypeError:
            raise ValueError(f"line {i}: `lengths` must be numbers") from None
    if not keys:
        raise ValueError("no problems")
    return ProblemScores(keys, np.asarray(n), np.asarray(c), np.asarray(length, dtype=float))


def read_analysis_csv(path: Path) -> pd.DataFrame:
    """An analysis CSV (harness analyze) checked against its `<stem>.provenance.json` sidecar: written to the end,
    every row complete, as many rows as the sidecar records (`rows`; older sidecars: one per `checkpoints` entry
    for tables with a `step` column). Raises ValueError."""
    import io

    text = read_complete_text(path)
    lines = list(csv.reader(text.splitlines()))
    if not lines:
        raise ValueError("empty")
    width = len(lines[0])
    for i, fields in enumerate(lines[1:], start=2):
        if len(fields) != width:
            raise ValueError(f"line {i}: {len(fields)} fields, the header has {width}")
    df = pd.read_csv(io.StringIO(text))
    side = Path(path).with_name(Path(path).stem + ".provenance.json")
    prov = _read_json(side, []) if side.exists() else None
    if prov is not None:
        want = prov.get("rows")
        if want is None and "step" in df.columns and isinstance(prov.get("checkpoints"), dict):
            want = len(prov["checkpoints"])
        if want is not None and len(df) != int(want):
            raise ValueError(f"{len(df)} rows, {side.name} records {want}")
    return df


def _eval_dirs(cell_dir: Path, eval_id: str = "") -> dict[str, Path]:
    """{"base": .., "step-N": ..} sorted by step, from `eval/<eval_id>/` (the evaluation that status.json names; a
    cell may hold several side by side), or from `eval/` itself for a cell written before evaluation ids."""
    return rundir.eval_dirs(cell_dir / "eval" / eval_id if eval_id else cell_dir / "eval")


def _eval_provenance(d: dict) -> dict:
    prov = d.get("provenance") if isinstance(d.get("provenance"), dict) else {}
    tv = d.get("task_versions") or prov.get("task_versions")
    if tv is None and isinstance(d.get("versions"), dict):  # lm-eval's results layout: task -> version
        tv = d["versions"]
    libs = prov.get("versions") if isinstance(prov.get("versions"), dict) else {}
    mach = prov.get("machine") if isinstance(prov.get("machine"), dict) else {}
    cpu = mach.get("cpu") if isinstance(mach.get("cpu"), dict) else {}
    tor = mach.get("torch") if isinstance(mach.get("torch"), dict) else {}
    env = {name: " ".join(f"{k}={v}" for k, v in sorted(mach[name].items())) or None
           for name in ("thread_env", "kernel_env") if isinstance(mach.get(name), dict)}
    machine = {k: str(v) for k, v in (("cpu", cpu.get("model")), ("isa_flags", cpu.get("isa_flags")),
                                      ("cpu_capability", tor.get("cpu_capability")),
                                      ("torch_threads", tor.get("num_threads")),
                                      ("thread_env", env.get("thread_env")),
                                      ("kernel_env", env.get("kernel_env"))) if v is not None}
    return {"git_hash": str(prov.get("git_hash") or d.get("git_hash") or ""),
            "versions": {str(k): str(v) for k, v in libs.items()}, "machine": machine,
            "task_versions": {str(k): str(v) for k, v in (tv or {}).items()} if isinstance(tv, dict) else {},
            "time_utc": str(prov.get("time_utc") or d.get("time_utc") or "")}


def _read_train(path: Path, cell_id: str, expected_steps: int | None, issues: list[Issue]) -> list[dict]:
    """train/metrics.jsonl, whole or not at all: every line parses, steps 1..N, N = status.json's steps."""
    rows = []
    try:
        lines = read_complete_text(path).splitlines()
    except (OSError, UnicodeDecodeError, ValueError) as e:
        issues.append(Issue(str(path), f"{e}; training curves of this cell left out"))
        return []
    for i, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
            step = int(r["step"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            issues.append(Issue(str(path), f"corrupt line {i}; training curves of this cell left out"))
            return []
        rows.append({"cell_id": cell_id, "step": step, **{k: _float(r.get(k)) for k in TRAIN_KEYS}})
    problems = checks.metrics_steps([r["step"] for r in rows], expected_steps)
    if problems:
        issues.append(Issue(str(path), "; ".join(problems) + "; training curves of this cell left out"))
        return []
    return rows


def pick_step(labels: list[str], step: str | int) -> str | None:
    """The eval dir used for tables: the last `step-N` (step='last') or `step-<step>`; None if absent."""
    trained = [x for x in labels if x != "base"]
    if str(step) == "last":
        return trained[-1] if trained else None
    want = rundir.step_name(int(step))
    return want if want in trained else None


def base_sources(cells: list[dict]) -> set[str]:
    """Cells whose base evaluation is the model's `base` row: eval-only cells (variant `base`) if a model has any,
    else the first complete cell (by id) with an eval/base; the others evaluated the same untrained model."""
    out: set[str] = set()
    for model in dict.fromkeys(c["model"] for c in cells):
        mine = [c for c in cells if c["model"] == model and c["state"] == "complete"]
        own = [c["cell_id"] for c in mine if c["variant"] == "base"]
        with_base = sorted(c["cell_id"] for c in mine if "base" in c["steps"].split())
        out.update(own or with_base[:1])
    return out


def _read_yaml(path: Path) -> dict | None:
    try:
        obj = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    return obj if isinstance(obj, dict) else None


def _scan_cell(cell_dir: Path, grid: str, step: str | int, models: dict | None, issues: list[Issue]) -> dict | None:
    """The cell's row (cells.csv), or None when its cell.json is unusable or its identity does not hold."""
    cfg = _read_json(cell_dir / "cell.json", issues)
    if cfg is None:
        return None  # named in issues; without a cell.json we cannot place the cell
    problems = checks.cell_identity(cfg, cell_dir.name, grid)
    status: dict | None = {"state": "no status"}
    if (cell_dir / "status.json").exists():
        status = _read_json(cell_dir / "status.json", issues)
    if not problems and status is not None and status.get("state") == "complete":
        problems = checks.cell_definition(cfg, _read_yaml(cell_dir / "train" / "config.yaml"))
    if problems:
        issues.append(Issue(str(cell_dir / "cell.json"), "; ".join(problems) + "; cell left out"))
        return None
    cell = parse_cell(cfg, cell_dir, models)
    state, note = cell_state(status) if status is not None else ("corrupt status", "")
    eval_id = str((status or {}).get("eval_id") or "")
    planned = str(cfg.get("eval_id") or "")
    if state == "complete" and planned and eval_id != planned:  # evaluation settings changed since it completed
        state, note = "pending", (f"status.json is complete for evaluation {eval_id or '(none)'!r} but cell.json "
                                  f"plans evaluation {planned!r}; harness run evaluates it")
    labels = list(_eval_dirs(cell_dir, eval_id))
    table_step = pick_step(labels, step) if state == "complete" else None
    if table_step is None and state == "complete" and cell["variant"] == "base" and "base" in labels:
        table_step = "base"  # an untrained-model cell: its base evaluation is its result
    if table_step is None and state == "complete":
        issues.append(Issue(str(cell_dir / "eval"), f"complete cell has no evaluation at step {step}; "
                                                    "cell left out of the tables"))
    if state not in ("complete", "corrupt status"):
        issues.append(Issue(str(cell_dir / "status.json"),
                            f"state {state}{': ' + note if note else ''}; cell not in the tables"))
    cell.update(state=state, steps=" ".join(labels), path=str(cell_dir), table_step=table_step, git_hash="",
                runner=checks.is_runner_cell(cfg), status_steps=(status or {}).get("steps"), eval_id=eval_id,
                analysis_dirs=[cell_dir / "analysis", *(cell_dir / "analysis" / str(a)
                                                        for a in (status or {}).get("analyses") or [])])
    return cell


def _refuse_duplicates(cells: list[dict], issues: list[Issue]) -> list[dict]:
    """Two or more complete cells for one (model, variant, seed) would count one seed twice: refuse them all."""
    groups: dict[tuple, list[dict]] = {}
    for c in cells:
        if c["state"] == "complete":
            groups.setdefault((c["model"], c["variant"], str(c["seed"])), []).append(c)
    refused = set()
    for (model, variant, seed), group in groups.items():
        if len(group) > 1:
            ids = sorted(c["cell_id"] for c in group)
            for c in group:
                others = ", ".join(i for i in ids if i != c["cell_id"])
                issues.append(Issue(c["path"], f"duplicate: {others} is also model {model}, variant {variant}, seed "
                                               f"{seed}; both left out (move the stale one out of this grid folder)"))
                refused.add(c["cell_id"])
    return [c for c in cells if c["cell_id"] not in refused]


def _read_evals(cell: dict, grid: str, is_base_source: bool, out: dict, issues: list[Issue]) -> None:
    """Append the cell's checked summary rows, eval provenance and (table step / base source) samples to `out`.

    An evaluation folder whose summary.csv is incomplete or disagrees with results_<benchmark>.json is left out
    whole; a benchmark whose results file is unreadable is left out of that folder; a samples file that disagrees
    with the summary is left out (the tables then use the summary's values without per-problem statistics)."""
    for label, d in _eval_dirs(Path(cell["path"]), cell["eval_id"]).items():
        is_base = label == "base" or cell["variant"] == "base"
        try:
            rows = read_summary_csv(d / "summary.csv")
        except FileNotFoundError:
            issues.append(Issue(str(d / "summary.csv"), "missing; evaluation left out"))
            continue
        except (OSError, ValueError, csv.Error, UnicodeDecodeError) as e:
            issues.append(Issue(str(d / "summary.csv"), f"corrupt: {e}; evaluation left out"))
            continue
        problems = checks.summary_rows(rows)
        by_bench: dict[str, list[dict]] = {}
        for r in rows:
            by_bench.setdefault(r["benchmark"], []).append(r)
        results: dict[str, dict] = {}
        for b in sorted(by_bench):
            rj = d / f"results_{b}.json"
            res = _read_json(rj, [])
            if res is None:
                issues.append(Issue(str(rj), ("missing" if not rj.exists() else "corrupt JSON")
                                    + f"; {b} rows of {label} left out (summary.csv cannot be checked)"))
                continue
            bad = checks.summary_vs_results(by_bench[b], b, res)
            if bad:
                problems += bad
            results[b] = res
        stray = sorted(p.name[len("results_"):-len(".json")] for p in d.glob("results_*.json")
                       if p.name[len("results_"):-len(".json")] not in by_bench)
        if stray:
            problems.append(f"no rows for {', '.join(stray)} although results_{stray[0]}.json is there "
                            "(summary.csv cut short?)")
        if cell.get("runner") and results:
            seeds = {b: (r.get("protocol") or {}).get("seed") for b, r in results.items()}
            wrong = {b: s for b, s in seeds.items() if s is not None and str(s) != str(cell["seed"])}
            if wrong:
                b = next(iter(wrong))
                problems.append(f"results_{b}.json was evaluated with seed {wrong[b]}, the cell's seed is "
                                f"{cell['seed']}")
        if problems:
            issues.append(Issue(str(d / "summary.csv"), "; ".join(problems[:3])
                                + (f" (+{len(problems) - 3} more)" if len(problems) > 3 else "")
                                + "; evaluation left out"))
            continue
        for b, res in results.items():
            p = _eval_provenance(res)
            out["evals"].append({"cell_id": cell["cell_id"], "eval": label, "benchmark": b, **p})
        hashes = {e["benchmark"]: e["git_hash"] for e in out["evals"]
                  if e["cell_id"] == cell["cell_id"] and e["eval"] == label}
        in_table = label == cell["table_step"] and (cell["variant"] != "base" or is_base_source)
        in_table = in_table or (label == "base" and is_base_source)
        for r in rows:
            if r["benchmark"] not in results:
                continue
            out["summary"].append({"grid": grid, "cell_id": cell["cell_id"], "model": cell["model"],
                                   "variant": "base" if is_base else cell["variant"],
                                   "rho": math.nan if is_base else cell["rho"], "seed": cell["seed"],
                                   "step": rundir.parse_step(label), **r, "git_hash": hashes.get(r["benchmark"], ""),
                                   "eval": label, "in_table": in_table})
        if not in_table:
            continue
        for b in results:
            sp = d / f"samples_{b}.jsonl"
            if not sp.exists():
                continue  # optional: without samples the tables use summary CIs and skip paired tests
            try:
                scores = read_samples(sp)
            except (OSError, ValueError, UnicodeDecodeError) as e:
                issues.append(Issue(str(sp), f"corrupt: {e}; samples left out (no per-problem statistics)"))
                continue
            bad = checks.samples_vs_summary(scores.n, scores.c, by_bench[b])
            if bad:
                issues.append(Issue(str(sp), "; ".join(bad) + "; samples left out (no per-problem statistics)"))
                continue
            out["samples"].setdefault((cell["cell_id"], label), {})[b] = scores


def _rename_benchmarks(out: dict) -> None:
    """Results written before a task was renamed (aime24 -> aime2024, harness.tasks.RENAMED) read under the
    current name, so old and new evaluations compare and map onto the paper's names."""
    for row in (*out["summary"], *out["evals"]):
        row["benchmark"] = current_name(row["benchmark"])
    out["samples"] = {key: {current_name(b): v for b, v in by_bench.items()} for key, by_bench in out["samples"].items()}


def load_grid(results_dir: Path, grid: str, step: str | int = "last", models: dict | None = None) -> GridData:
    """Read results/runs/<grid>/*/ (cells) and analysis outputs; only complete cells enter summary and samples.

    models: preset -> {name, size_b} display names (see parse_cell)."""
    results_dir = Path(results_dir)
    runs = results_dir / "runs" / grid
    issues: list[Issue] = []
    if not runs.is_dir():
        issues.append(Issue(str(runs), "no such grid directory"))
    dirs = sorted(p for p in runs.iterdir() if p.is_dir() and not p.name.startswith(".")) if runs.is_dir() else []
    cells = [c for c in (_scan_cell(d, grid, step, models, issues) for d in dirs) if c is not None]
    cells = _refuse_duplicates(cells, issues)
    sources = base_sources(cells)
    out: dict = {"summary": [], "evals": [], "samples": {}}
    train: list[dict] = []
    for cell in cells:
        if cell["state"] != "complete":
            continue
        _read_evals(cell, grid, cell["cell_id"] in sources, out, issues)
        cell["git_hash"] = next((e["git_hash"] for e in out["evals"] if e["cell_id"] == cell["cell_id"]
                                 and e["eval"] == cell["table_step"] and e["git_hash"]), "")
        tm = Path(cell["path"]) / "train" / "metrics.jsonl"
        if tm.exists():
            expected = cell["status_steps"] if cell["runner"] and isinstance(cell["status_steps"], int) else None
            train.extend(_read_train(tm, cell["cell_id"], expected, issues))
    _rename_benchmarks(out)
    # a kept cell's analyses: the folders its status.json names (analysis/<name>-<id>/) and analysis/ itself (ad hoc)
    analysis = sorted({*(p for c in cells for d in c["analysis_dirs"] for p in (*d.glob("*.png"), *d.glob("*.csv"))),
                       *(results_dir / grid / "analysis").glob("**/*.png"),
                       *(results_dir / grid / "analysis").glob("**/*.csv")})
    return GridData(grid=grid, cells=pd.DataFrame(cells, columns=CELL_COLUMNS),
                    summary=pd.DataFrame(out["summary"], columns=[*SUMMARY_COLUMNS, "eval", "in_table"]),
                    samples=out["samples"], train=pd.DataFrame(train, columns=["cell_id", "step", *TRAIN_KEYS]),
                    evals=out["evals"], analysis=analysis, issues=issues)


def load_published(published_dir: Path) -> pd.DataFrame:
    """results/published/published.csv: model, variant, benchmark, metric, value (kept as printed), source."""
    df = pd.read_csv(Path(published_dir) / "published.csv", dtype=str, keep_default_na=False)
    missing = {"model", "variant", "benchmark", "metric", "value", "source"} - set(df.columns)
    if missing:
        raise ValueError(f"{published_dir}/published.csv lacks columns {sorted(missing)}")
    return df
