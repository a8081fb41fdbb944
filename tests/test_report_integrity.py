"""harness report and harness status on corrupted copies of the committed mini grid (issue 12, "Result files are
checked before they become tables"): each corruption found by hand is named, left out, and moves no table value.

Every test copies seven cells of results/runs/mini (the base cell, full and top20 with three seeds each), breaks
one thing, and builds the report; the untouched copy reports no problem and exits 0.
"""
from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from harness.cli import main as cli_main
from harness.core.io import REPO_ROOT
from harness.report import build_report

MINI = REPO_ROOT / "results" / "runs" / "mini"
KEEP = ("mini-base-s0-*", "mini-full-s[012]-*", "mini-top20-s[012]-*")  # seeds 0-2 of the grid's five


def _cell(runs: Path, pattern: str) -> Path:
    (hit,) = sorted(runs.glob(pattern))
    return hit


def _step(cell: Path) -> Path:
    """The cell's final evaluation folder, eval/<eval_id>/step-80/."""
    (hit,) = sorted(cell.glob("eval/*/step-80"))
    return hit


def _analysis(cell: Path, name: str) -> Path:
    (hit,) = sorted(cell.glob(f"analysis/*/{name}"))
    return hit


@pytest.fixture
def runs(tmp_path) -> Path:
    """results/runs/mini with seven of its cells, under tmp_path/results."""
    dst = tmp_path / "results" / "runs" / "mini"
    dst.mkdir(parents=True)
    for pattern in KEEP:
        for cell in sorted(MINI.glob(pattern)):
            shutil.copytree(cell, dst / cell.name)
    assert len(list(dst.iterdir())) == 7
    return dst


def _report(runs: Path):
    res = build_report(runs.parents[1], "mini", make_figures=False)
    long = pd.read_csv(res.out_dir / "tables" / "table2_long.csv")
    acc = long[long["label"] == "Acc"].set_index(["variant", "benchmark"])
    summary = pd.read_csv(res.out_dir / "summary.csv")
    problems = {str(Path(i.path).relative_to(runs)): i.problem for i in res.issues}
    return res, acc, summary, problems


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """The report of the untouched copy: its Table 2 values are what every corrupted copy must keep (or lose)."""
    root = tmp_path_factory.mktemp("clean") / "results" / "runs" / "mini"
    root.mkdir(parents=True)
    for pattern in KEEP:
        for cell in sorted(MINI.glob(pattern)):
            shutil.copytree(cell, root / cell.name)
    res, acc, summary, problems = _report(root)
    return res, acc, summary


def _seed_values(summary: pd.DataFrame, variant: str, benchmark: str = "mini_id") -> dict[int, float]:
    s = summary[(summary["variant"] == variant) & (summary["benchmark"] == benchmark)
                & (summary["metric"] == "avg@k") & (summary["step"] > 0)]
    return dict(zip(s["seed"], s["value"]))


def test_clean_copy_reports_nothing_and_exits_0(runs, clean):
    res, acc, summary = clean
    assert res.issues == []
    assert acc.loc[("full", "mini_id"), "n_seeds"] == 3
    assert "None: every cell is complete" in (res.out_dir / "REPORT.md").read_text()
    out = runs.parents[1] / "report"
    assert cli_main(["report", f"results_dir={runs.parents[1]}", f"out_dir={out}", "figures=false"]) == 0


def _without_seed(clean_summary: pd.DataFrame, variant: str, seed: int) -> float:
    vals = _seed_values(clean_summary, variant)
    return sum(v for s, v in vals.items() if s != seed) / (len(vals) - 1)


@pytest.mark.parametrize("cut", ["inside a number", "inside the last field", "at a line end"])
def test_cut_summary_csv_is_left_out(runs, clean, cut):
    """A summary.csv cut inside a number turned 84.25 into 8; cut at a line end, rows vanished."""
    path = _step(_cell(runs, "mini-full-s0-*")) / "summary.csv"
    lines = path.read_text().splitlines(keepends=True)
    if cut == "inside a number":  # the old reader took '8' as the value and the missing fields as empty
        row = lines[1]
        value_at = row.index(",avg@k,16,") + len(",avg@k,16,")
        path.write_text("".join(lines[:1]) + row[:value_at + 1])
    elif cut == "inside the last field":  # n_samples 16 -> 1, with a newline: complete-looking
        path.write_text("".join(lines[:2]) + lines[2].rstrip("\n")[:-1] + "\n")
    else:  # 11 of 21 rows gone (all of mini_ood and mini_id's last row)
        path.write_text("".join(lines[:10]))
    res, acc, summary, problems = _report(runs)
    key = str(path.relative_to(runs))
    assert key in problems and "evaluation left out" in problems[key], problems
    assert not (summary["cell_id"] == path.parents[3].name).any()
    # full is now the mean of the two intact seeds, not a mean with a cut value in it
    assert acc.loc[("full", "mini_id"), "value"] == pytest.approx(_without_seed(clean[2], "full", 0))
    assert acc.loc[("full", "mini_id"), "n_seeds"] == 2
    assert key in (res.out_dir / "REPORT.md").read_text()


def test_summary_disagreeing_with_results_json_is_left_out(runs, clean):
    path = _step(_cell(runs, "mini-top20-s1-*")) / "summary.csv"
    text = path.read_text()
    value = float(text.split(",mini_id,avg@k,16,")[1].split(",")[0])  # this cell's avg@16, as written
    path.write_text(text.replace(f",mini_id,avg@k,16,{value!r},", f",mini_id,avg@k,16,{value + 10!r},"))
    res, acc, summary, problems = _report(runs)
    problem = problems[str(path.relative_to(runs))]
    assert f"value={value + 10!r}" in problem and f"records {value!r}" in problem
    assert acc.loc[("top20", "mini_id"), "value"] == pytest.approx(_without_seed(clean[2], "top20", 1))


def test_cell_from_another_grid_is_refused(runs, clean):
    """A cell.json from another grid inside runs/mini was counted as a fourth seed."""
    src = _cell(runs, "mini-full-s0-*")
    foreign = runs / "mini-full-s3-0123abcd"
    shutil.copytree(src, foreign)
    cfg = json.loads((foreign / "cell.json").read_text())
    cfg.update(grid="rho", cell_id=foreign.name, seed=3)
    (foreign / "cell.json").write_text(json.dumps(cfg))
    res, acc, summary, problems = _report(runs)
    assert "belongs to grid 'rho', not 'mini'" in problems[f"{foreign.name}/cell.json"]
    assert acc.loc[("full", "mini_id"), "n_seeds"] == 3
    assert acc.loc[("full", "mini_id"), "value"] == pytest.approx(clean[1].loc[("full", "mini_id"), "value"])


def test_rewritten_cell_json_cannot_change_a_variant(runs, clean):
    """A rewritten cell.json turned a top20 cell into `full`: its id and its training run still say top20."""
    cell = _cell(runs, "mini-top20-s1-*")
    cfg = json.loads((cell / "cell.json").read_text())
    (cell / "cell.json").write_text(json.dumps({**cfg, "variant": "full"}))
    # the same, with the id and the folder renamed to match: the training run's own config still says top20
    moved = runs / cell.name.replace("top20", "full").replace("-s1-", "-s5-")
    shutil.copytree(cell, moved)
    (moved / "cell.json").write_text(json.dumps({**cfg, "variant": "full", "seed": 5, "cell_id": moved.name}))
    res, acc, summary, problems = _report(runs)
    assert "does not match its id" in problems[f"{cell.name}/cell.json"]
    assert "train/config.yaml) used variant='top20'" in problems[f"{moved.name}/cell.json"]
    assert acc.loc[("full", "mini_id"), "n_seeds"] == 3 and acc.loc[("top20", "mini_id"), "n_seeds"] == 2
    assert acc.loc[("full", "mini_id"), "value"] == pytest.approx(clean[1].loc[("full", "mini_id"), "value"])


def test_duplicated_cell_folder_is_refused(runs, clean):
    """A duplicated cell folder doubled its rows."""
    src = _cell(runs, "mini-top20-s2-*")
    shutil.copytree(src, runs / f"{src.name} copy")
    # a copy whose cell_id was edited to its folder name: two cells claim (mini, top20, 2)
    twin = runs / (src.name[:-8] + "ffffffff")
    shutil.copytree(src, twin)
    cfg = json.loads((twin / "cell.json").read_text())
    (twin / "cell.json").write_text(json.dumps({**cfg, "cell_id": twin.name}))
    res, acc, summary, problems = _report(runs)
    assert "its folder is" in problems[f"{src.name} copy/cell.json"]
    assert "duplicate" in problems[src.name] and twin.name in problems[src.name]
    assert "duplicate" in problems[twin.name]
    assert not summary["cell_id"].isin([src.name, twin.name]).any()
    assert acc.loc[("top20", "mini_id"), "value"] == pytest.approx(_without_seed(clean[2], "top20", 2))


def test_samples_cut_to_half_feed_no_interval(runs, clean):
    """A samples file cut to half its problems fed the intervals and paired tests."""
    path = _step(_cell(runs, "mini-top20-s0-*")) / "samples_mini_id.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:100]))
    res, acc, summary, problems = _report(runs)
    assert "100 problems, but summary.csv counts n_problems=200" in problems[str(path.relative_to(runs))]
    row = acc.loc[("top20", "mini_id")]
    # the value still comes from the three checked summaries; the interval is no longer a pooled bootstrap
    assert row["value"] == pytest.approx(clean[1].loc[("top20", "mini_id"), "value"])
    assert row["ci_method"] != "bootstrap pooled seeds" and row["delta_method"] != "paired bootstrap"


def test_samples_with_changed_answers_are_left_out(runs):
    path = _step(_cell(runs, "mini-full-s1-*")) / "samples_mini_ood.jsonl"
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    rows[0]["correct"] = [True] * len(rows[0]["correct"])
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    res, acc, summary, problems = _report(runs)
    assert "differs from summary.csv avg@k" in problems[str(path.relative_to(runs))]


def test_cut_metrics_jsonl_leaves_out_the_curves(runs):
    path = _cell(runs, "mini-full-s2-*") / "train" / "metrics.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:40]))
    res, acc, summary, problems = _report(runs)
    assert "40 steps, but status.json records steps=80" in problems[str(path.relative_to(runs))]
    assert acc.loc[("full", "mini_id"), "n_seeds"] == 3  # the evaluation is intact


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_dead_running_cell_is_interrupted_in_report_and_status(runs, capsys):
    """A `running` cell whose process is dead showed as running, and the report dropped that seed silently."""
    dead = _cell(runs, "mini-full-s2-*")
    (dead / "status.json").write_text(json.dumps({"state": "running", "pid": _dead_pid(), "host": platform.node()}))
    live = _cell(runs, "mini-top20-s2-*")
    from harness.core.status import this_process

    (live / "status.json").write_text(json.dumps({"state": "running", **this_process()}))
    res, acc, summary, problems = _report(runs)
    assert problems[f"{dead.name}/status.json"].startswith("state interrupted: pid")
    assert problems[f"{live.name}/status.json"].startswith(f"state running: pid {os.getpid()}")
    cells = pd.read_csv(res.out_dir / "cells.csv").set_index("cell_id")
    assert cells.loc[dead.name, "state"] == "interrupted" and cells.loc[live.name, "state"] == "running"
    assert acc.loc[("full", "mini_id"), "n_seeds"] == 2
    # harness status: the same states, and the report's exit status says something was left out
    assert cli_main(["status", f"results_dir={runs.parents[1]}"]) == 0
    table = capsys.readouterr().out
    (dead_row,) = [x for x in table.splitlines() if dead.name in x]
    (live_row,) = [x for x in table.splitlines() if live.name in x]
    assert " interrupted " in dead_row and " running " in live_row
    assert cli_main(["report", f"results_dir={runs.parents[1]}", "figures=false"]) == 1
    assert "left out" in capsys.readouterr().err


def test_cell_completed_under_other_evaluation_settings_is_left_out(runs, clean):
    """cell.json is rewritten when a grid's evaluation settings change; until `harness run` evaluates the cell again,
    its status.json is complete for the old evaluation, whose numbers must not sit beside the new ones."""
    cell = _cell(runs, "mini-full-s1-*")
    cfg = json.loads((cell / "cell.json").read_text())
    old = cfg["eval_id"]
    (cell / "cell.json").write_text(json.dumps({**cfg, "eval_id": "e-00000000"}))
    res, acc, summary, problems = _report(runs)
    problem = problems[f"{cell.name}/status.json"]
    assert problem.startswith("state pending:") and old in problem and "e-00000000" in problem
    assert acc.loc[("full", "mini_id"), "n_seeds"] == clean[1].loc[("full", "mini_id"), "n_seeds"] - 1
    assert acc.loc[("full", "mini_id"), "value"] == pytest.approx(_without_seed(clean[2], "full", 1))


def test_running_cell_on_another_host_is_not_called_dead(runs):
    cell = _cell(runs, "mini-full-s1-*")
    (cell / "status.json").write_text(json.dumps({"state": "running", "pid": 1, "host": "some-node-17"}))
    res, acc, summary, problems = _report(runs)
    assert "not checkable from" in problems[f"{cell.name}/status.json"]
    assert pd.read_csv(res.out_dir / "cells.csv").set_index("cell_id").loc[cell.name, "state"] == "running"


def test_cut_analysis_csv_is_named(runs):
    base = _analysis(_cell(runs, "mini-full-s0-*"), "overlap.csv")
    lines = base.read_text().splitlines(keepends=True)
    base.write_text("".join(lines[:4]))  # three of its checkpoints left, at a line end
    shift = _analysis(_cell(runs, "mini-top20-s0-*"), "shift.csv")
    shift.write_text(shift.read_text()[:-7])  # inside the last number
    res, acc, summary, problems = _report(runs)
    assert f"3 rows, overlap.provenance.json records {len(lines) - 1}" in problems[str(base.relative_to(runs))]
    assert "truncated" in problems[str(shift.relative_to(runs))]
    text = (res.out_dir / "REPORT.md").read_text()
    assert str(base) in text and str(shift) in text
