"""harness report: exact tables from a fixed results directory, the published numbers carried exactly, corrupt
files reported and skipped, and the statistics checked against hand arithmetic.

The fixture (tests/fixtures/report/, written by make_fixture.py) holds hand-made correctness patterns for
Qwen3-8B-Base, so table entries can be checked by hand; expected/ holds the full tables it must give.
"""
from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.core.io import REPO_ROOT
from harness.metrics import Resampler
from harness.report import build_report
from harness.reporting import stats
from harness.reporting.load import SUMMARY_COLUMNS, read_samples

FIXTURE = Path(__file__).parent / "fixtures" / "report"
EXPECTED = FIXTURE / "expected"


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    res = build_report(FIXTURE, "fix", out_dir=out)
    return res


def _long(res) -> pd.DataFrame:
    return pd.read_csv(res.out_dir / "tables" / "table2_long.csv", keep_default_na=False, na_values=[""])


# ------------------------------------------------------------------ tables

def test_tables_match_expected_exactly(report):
    for name in ("table2_acc.md", "table2_len.md", "table2.tex"):
        got = (report.out_dir / "tables" / name).read_text()
        assert got == (EXPECTED / name).read_text(), f"{name} differs from tests/fixtures/report/expected/{name}"


def test_table_entries_by_hand(report):
    t = _long(report)
    acc = t[t["label"] == "Acc"].set_index(["model", "variant", "benchmark"])
    # (the fixture's results carry the name aime24, from before issue 13: they read as aime2024)
    # Qwen3-8B-Base full, aime24: problem scores 25, 50, 0, 100 -> 43.75; sd 42.70 -> 43.75 +- 1.96*42.70/2
    r = acc.loc[("Qwen3-8B-Base", "full", "aime2024")]
    assert r["value"] == pytest.approx(43.75) and r["ci_low"] == pytest.approx(1.9083, abs=1e-4)
    assert r["ci_method"] == "one run: problems only" and r["n_seeds"] == 1
    # top20 aime24: 50, 75, 0, 100 -> 56.25; per-problem differences 25, 25, 0, 0 -> +12.50, paired CI [0, 25]
    r = acc.loc[("Qwen3-8B-Base", "top20", "aime2024")]
    assert r["value"] == pytest.approx(56.25) and r["delta"] == pytest.approx(12.5)
    assert (r["delta_ci_low"], r["delta_ci_high"]) == (0.0, 25.0)
    # Avg of aime24 and math500 (the paper's benchmarks present): (43.75 + 62.50) / 2 = 53.125
    assert acc.loc[("Qwen3-8B-Base", "full", "Avg"), "value"] == pytest.approx(53.125)
    assert acc.loc[("Qwen3-8B-Base", "full", "Avg"), "avg_of"] == "aime2024 math500"
    # base row: one base evaluation per model (the first complete cell's): 0, 25, 0, 50 -> 18.75
    assert acc.loc[("Qwen3-8B-Base", "base", "aime2024"), "value"] == pytest.approx(18.75)
    # two seeds pooled: 32B full aime24 is the mean of the seeds' values
    s = pd.read_csv(report.out_dir / "summary.csv")
    seeds = s[(s["model"] == "Qwen3-32B-Base") & (s["variant"] == "full") & (s["benchmark"] == "aime2024")
              & (s["metric"] == "avg@k") & (s["step"] == 4)]["value"]
    assert len(seeds) == 2
    assert acc.loc[("Qwen3-32B-Base", "full", "aime2024"), "value"] == pytest.approx(seeds.mean())
    # its interval holds the two runs: stats.run_interval of the [2 seeds, 4 problems] scores read back here
    r = acc.loc[("Qwen3-32B-Base", "full", "aime2024")]
    y = np.stack([read_samples(FIXTURE / "runs" / "fix" / c / "eval" / "step-4" / "samples_aime24.jsonl").acc
                  for c in ("q32-full-s1", "q32-full-s2")])  # [2, 4]
    ri = stats.run_interval([[y]], [1.0], 0.05)
    assert r["ci_method"] == "runs + problems" and (r["ci_low"], r["ci_high"]) == pytest.approx((ri.ci_low,
                                                                                                  ri.ci_high))


def test_extra_benchmark_is_a_column_after_avg(report):
    header = (report.out_dir / "tables" / "table2_acc.md").read_text().splitlines()[2]
    assert header == "| Model | Variant | AIME24 | MATH500 | Avg | mini_ood |"


def test_only_complete_cells_enter_tables_others_listed(report):
    cells = pd.read_csv(report.out_dir / "cells.csv").set_index("cell_id")
    assert cells.loc["q32-bottom80-s1", "state"] == "failed"
    assert cells.loc["q32-top50-s1", "state"] == "running"
    summary = pd.read_csv(report.out_dir / "summary.csv")
    assert list(summary.columns) == SUMMARY_COLUMNS
    assert not summary["cell_id"].isin(["q32-bottom80-s1", "q32-top50-s1"]).any()
    assert set(_long(report)["variant"]) == {"base", "full", "top20"}
    text = (report.out_dir / "REPORT.md").read_text()
    assert "| q32-bottom80-s1 | Qwen3-32B-Base | bottom80 |" in text


# ------------------------------------------------------------------ published comparison

def test_published_values_carried_exactly(report):
    c = pd.read_csv(report.out_dir / "published_comparison.csv", dtype=str, keep_default_na=False)
    row = c[(c["model"] == "Qwen3-32B-Base") & (c["variant"] == "top20") & (c["benchmark"] == "AIME25")
            & (c["metric"] == "Acc@16")].iloc[0]
    assert row["published"] == "56.67" and row["source"] == "Table 2" and row["status"] == "no result"
    # as printed, trailing zero kept
    assert c[(c["model"] == "Qwen3-32B-Base") & (c["variant"] == "full") & (c["benchmark"] == "Minerva")
             & (c["metric"] == "Acc@16")]["published"].item() == "45.70"
    # every published row appears once, with its printed value
    pub = pd.read_csv(REPO_ROOT / "results" / "published" / "published.csv", dtype=str, keep_default_na=False)
    assert len(c) == len(pub)
    assert list(c["published"]) == list(pub["value"])


def test_published_numbers_match_the_papers_files(shared_paper_dir):
    """results/published/ is a transcription of ../shared/paper/ (the paper's CSV files): identical."""
    for name in ("published.csv", "overlap_table1.csv", "entropy_stats.csv"):
        ours = REPO_ROOT / "results" / "published" / name
        assert pd.read_csv(ours, dtype=str, keep_default_na=False).equals(
            pd.read_csv(shared_paper_dir / name, dtype=str, keep_default_na=False)), name


def test_published_comparison_of_a_matched_row(report):
    c = pd.read_csv(report.out_dir / "published_comparison.csv", dtype={"published": str})
    r = c[(c["model"] == "Qwen3-8B-Base") & (c["variant"] == "full") & (c["benchmark"] == "AIME24")
          & (c["metric"] == "Acc@16")].iloc[0]
    # ours 43.75 (k=4) vs published 33.33: diff 10.42, inside our CI [1.91, 85.59]
    assert r["ours"] == pytest.approx(43.75) and r["diff"] == pytest.approx(10.42)
    assert r["inside_ci"] == "yes" and r["status"] == "compared (ours @4)"
    # Average6 needs all six paper benchmarks: our Avg over two of them is not compared
    avg = c[(c["model"] == "Qwen3-8B-Base") & (c["benchmark"] == "Average6")]
    assert (avg["status"] == "no result").all()


# ------------------------------------------------------------------ robustness and provenance

def test_corrupt_files_reported_not_fatal(report):
    problems = {Path(i.path).relative_to(FIXTURE).as_posix(): i.problem for i in report.issues}
    assert "corrupt JSON" in problems["runs/fix/broken-cell/cell.json"]
    assert "line 2" in problems["runs/fix/q32-top20-s2/eval/step-4/samples_mini_ood.jsonl"]
    assert "truncated" in problems["runs/fix/q8-top20-s1/train/metrics.jsonl"]
    assert "training curves of this cell left out" in problems["runs/fix/q8-top20-s1/train/metrics.jsonl"]
    # cells that are not complete are named too: the tables do not silently lose a seed
    assert problems["runs/fix/q32-bottom80-s1/status.json"] == "state failed; cell not in the tables"
    assert "state running" in problems["runs/fix/q32-top50-s1/status.json"]
    text = (report.out_dir / "REPORT.md").read_text()
    for path in problems:
        assert path in text
    # the cell with the corrupt samples file still counts: its value and difference use the summary values with a
    # t interval over the two runs (the seeds stay the unit), and the difference is not tested (2 < min_seeds)
    t = _long(report).set_index(["label", "model", "variant", "benchmark"])
    r = t.loc[("Acc", "Qwen3-32B-Base", "top20", "mini_ood")]
    assert r["ci_method"] == "t over runs (no samples)" and r["delta_method"] == "t over runs (no samples)"
    assert r["delta_ci_low"] < r["delta"] < r["delta_ci_high"] and r["verdict"] == "too few seeds"


def test_version_disagreement_flagged(report):
    v = pd.read_csv(report.out_dir / "versions.csv")
    lm = v[(v["kind"] == "library") & (v["name"] == "lm_eval")]
    assert lm["flag"].all() and set(lm["version"]) == {"0.4.12", "0.4.13"}
    assert lm.loc[lm["version"] == "0.4.12", "cells"].item() == "q32-top20-s2"
    assert not v[(v["kind"] == "library") & (v["name"] == "torch")]["flag"].any()
    assert "Cells disagree on these versions" in (report.out_dir / "REPORT.md").read_text()


def test_report_embeds_everything(report):
    text = (report.out_dir / "REPORT.md").read_text()
    for part in ("## Table 2 layout: Acc@4", "## Comparison with the published numbers",
                 "## Differences to the reference (training runs as the unit)", "## How the intervals and tests",
                 "Seeds per variant: Qwen3-8B-Base: 1 seed: full, top20 | Qwen3-32B-Base: 2 seeds: full, top20",
                 "## Equivalence: top20 vs full (margin ±2)",
                 "## Across seeds", "figures/scaling.png", "figures/training_curves.png", "figures/passk.png",
                 "figures/rho_sweep.png", "results produced at commit(s): `abc1234`"):
        assert part in text
    for png in ("scaling", "rho_sweep", "training_curves", "passk"):
        assert (report.out_dir / "figures" / f"{png}.png").stat().st_size > 1000
    assert (report.out_dir / "provenance.json").exists()


def test_deterministic_and_step_option(tmp_path, report):
    again = build_report(FIXTURE, "fix", out_dir=tmp_path / "a", make_figures=False)
    assert (again.out_dir / "tables" / "table2_long.csv").read_text() == \
        (report.out_dir / "tables" / "table2_long.csv").read_text()
    early = build_report(FIXTURE, "fix", out_dir=tmp_path / "b", step=2, make_figures=False)
    t = _long(early).set_index(["label", "model", "variant", "benchmark"])
    # at step 2 the hand-made 8B cells hold the base pattern: 0, 25, 0, 50 -> 18.75
    assert t.loc[("Acc", "Qwen3-8B-Base", "full", "aime2024"), "value"] == pytest.approx(18.75)


def test_analysis_outputs_included(tmp_path):
    root = tmp_path / "results"
    shutil.copytree(FIXTURE / "runs", root / "runs")
    (root / "fix" / "analysis").mkdir(parents=True)
    (root / "fix" / "analysis" / "overlap.csv").write_text("step,overlap\n0,100.0\n16,98.9\n")
    res = build_report(root, "fix", make_figures=False)
    assert res.out_dir == root / "fix"
    text = (root / "fix" / "REPORT.md").read_text()
    assert "#### overlap — grid analysis (overlap) ([csv](analysis/overlap.csv))" in text and "| 16 | 98.9 |" in text


def test_analysis_headings_name_variant_and_seed_grouped_by_kind(tmp_path):
    root = tmp_path / "results"
    shutil.copytree(FIXTURE / "runs", root / "runs")
    for cell, final in (("q32-top20-s2", 64.4), ("q32-full-s1", 67.3), ("q32-top20-s1", 70.0)):
        a = root / "runs" / "fix" / cell / "analysis"
        a.mkdir()
        (a / "overlap.csv").write_text(f"checkpoint,step,overlap_vs_base_pct\nbase,0,100.0\nfinal,8,{final}\n")
        (a / "shift.csv").write_text("checkpoint,step,mean\nbase,0,0.4\nfinal,8,0.1\n")
    (root / "runs" / "fix" / "q32-full-s1" / "analysis" / "bad.csv").write_bytes(b"\xff\xfe\x00\x01")
    res = build_report(root, "fix", make_figures=False)
    text = (res.out_dir / "REPORT.md").read_text()
    heads = [x for x in text.splitlines() if x.startswith("#### overlap") or x.startswith("#### shift")]
    # all overlap tables, then all shift tables; within a kind: variant order (full, top20), then seed
    assert [h.split(" (")[0] for h in heads] == [
        "#### overlap — full, seed 1", "#### overlap — top20, seed 1", "#### overlap — top20, seed 2",
        "#### shift — full, seed 1", "#### shift — top20, seed 1", "#### shift — top20, seed 2"]
    assert heads[0].startswith("#### overlap — full, seed 1 (q32-full-s1) ([csv](../runs/fix/q32-full-s1/analysis/")
    # one table across cells: each cell's last step
    t = pd.read_csv(res.out_dir / "tables" / "analysis_overlap_last_step.csv")
    assert list(t["variant"]) == ["full", "top20", "top20"] and list(t["seed"]) == [1, 1, 2]
    assert list(t["overlap_vs_base_pct"]) == [67.3, 70.0, 64.4] and (t["step"] == 8).all()
    assert "Across cells, each cell's last step" in text
    assert any(Path(i.path).name == "bad.csv" for i in res.issues)  # unreadable: named, not fatal


def test_reading_md_included_and_kept(tmp_path):
    root = tmp_path / "results"
    shutil.copytree(FIXTURE / "runs", root / "runs")
    reading = "# Reading\n\nTop-20% matches full here.\n\n## Caveat\n\nOne seed.\n"
    (root / "fix").mkdir()
    (root / "fix" / "READING.md").write_text(reading)
    for _ in range(2):  # regeneration keeps it and never rewrites READING.md
        res = build_report(root, "fix", make_figures=False)
        text = (res.out_dir / "REPORT.md").read_text()
        assert (root / "fix" / "READING.md").read_text() == reading
    lines = text.splitlines()
    i = lines.index("## Reading")
    # right after the provenance header, before the first other section; its own title dropped, headings demoted
    assert lines.index("## Problems with result files") > i
    assert not any(x.startswith("## ") for x in lines[1:i])
    assert "Top-20% matches full here." in text and "### Caveat" in lines and text.count("Reading") >= 1
    assert "## Reading" not in (build_report(FIXTURE, "fix", out_dir=tmp_path / "none", make_figures=False)
                                .out_dir / "REPORT.md").read_text()


def test_training_curves_data_and_panels(report):
    from harness.reporting import figures as figs
    from harness.reporting import tables as tb
    from harness.reporting.load import load_grid

    data = load_grid(FIXTURE, "fix")
    curves = tb.training_curve_data(data.train, data.summary, data.cells, tb.Options())
    q = set(curves["quantity"])
    assert {"reward_mean", "entropy_mean", "selected_frac", "grad_norm", "response_len_mean", "score"} <= q
    sel = curves[(curves["quantity"] == "selected_frac") & (curves["cell_id"] == "q32-full-s1")]
    assert (sel["value"] == 1.0).all() and len(sel) > 1
    # the fixture's cells are evaluated at steps 2 and 4: the score panel is drawn
    assert figs.curve_panels(curves)[-1] == "score"
    # one evaluated step per cell (the mini grid): no score panel, the five training quantities only
    one = curves[(curves["quantity"] != "score") | (curves["step"] == 4)]
    assert figs.curve_panels(one) == ["reward_mean", "entropy_mean", "selected_frac", "grad_norm",
                                      "response_len_mean"]
    path, _ = figs.training_curves(one, report.out_dir / "figures" / "curves_one_step.png")
    assert path.stat().st_size > 1000


def test_scaling_skipped_for_a_single_model(report, tmp_path):
    from harness.reporting import figures as figs
    from harness.reporting import tables as tb

    long = _long(report)
    one = long[long["model"] == "Qwen3-8B-Base"]
    path, reason = figs.scaling_plot(one, None, tb.Options(), "top20", tmp_path / "scaling.png")
    assert path is None and "single model (Qwen3-8B-Base)" in reason and not (tmp_path / "scaling.png").exists()
    assert figs.scaling_plot(long, None, tb.Options(), "top20", tmp_path / "s2.png")[0] is not None


def test_cli_report(tmp_path):
    from harness.cli import main

    # exit 1: written, but the fixture's broken files and unfinished cells were left out (listed in REPORT.md)
    assert main(["report", f"results_dir={FIXTURE}", "grid.name=fix", f"out_dir={tmp_path}", "figures=false",
                 "n_boot=200"]) == 1
    assert (tmp_path / "REPORT.md").exists()
    assert main(["report", f"results_dir={FIXTURE}", "grid.name=nope", f"out_dir={tmp_path}"]) == 2
    assert main(["report", f"results_dir={FIXTURE}", "grid.name=fix", "step=final"]) == 2
    for bad in ("min_seeds=1", "equivalence.margin=0", "alpha=0.5", "equivalence.metric=acc"):  # before any work, exit status 2
        assert main(["report", f"results_dir={FIXTURE}", "grid.name=fix", f"out_dir={tmp_path / 'x'}", bad]) == 2
    assert not (tmp_path / "x").exists()


# ------------------------------------------------------------------ statistics

def test_paired_bootstrap_by_hand():
    rs = Resampler(n_boot=500, seed=0)
    same = stats.paired_bootstrap([np.zeros(10)], 0.05, rs)
    assert same.diff == 0.0 and same.p_value == 1.0
    # a constant shift of 5 on every problem: every resample gives 5, none <= 0: p = 2 (1 + 0) / (500 + 1)
    shift = stats.paired_bootstrap([np.full(10, 5.0)], 0.05, rs)
    assert (shift.diff, shift.ci_low, shift.ci_high) == (5.0, 5.0, 5.0)
    assert shift.p_value == pytest.approx(2 / 501)
    # p < alpha exactly when the percentile CI excludes zero (same resamples)
    rng = np.random.default_rng(0)
    for mu in (0.0, 0.3, 0.6, 1.0):
        r = stats.paired_bootstrap([rng.normal(mu, 2.0, 40)], 0.05, rs)
        assert (r.p_value < 0.05) == (r.ci_low > 0 or r.ci_high < 0) or abs(r.p_value - 0.05) < 0.01
    # two benchmarks, mean differences 2 and 4: the Avg difference is 3 (benchmarks weigh equally)
    two = stats.paired_bootstrap([np.full(3, 2.0), np.full(7, 4.0)], 0.05, rs)
    assert two.diff == pytest.approx(3.0) and two.n_problems == 10


def test_resampler_counts():
    rs = Resampler(n_boot=100, seed=3)
    counts = rs.counts(7)  # [B, P]
    assert counts.shape == (100, 7) and (counts.sum(axis=1) == 7).all()
    assert np.allclose(rs.means(np.full(7, 2.5)), 2.5)
    assert counts is rs.counts(7)  # cached: the same resamples for every comparison over 7 problems
    assert not np.array_equal(rs.counts(7, "aime24"), rs.counts(7, "aime25"))  # benchmarks resampled apart


def test_seed_interval_and_combined_ci_by_hand():
    # values 1, 2, 3: mean 2, sd 1, t(0.975, 2 df) = 4.303 -> 2 +- 4.303 / sqrt(3) = 2 +- 2.484
    mean, sd, lo, hi = stats.seed_interval([1.0, 2.0, 3.0], 0.05)
    assert (mean, sd) == (2.0, 1.0) and lo == pytest.approx(-0.4841, abs=1e-3) and hi == pytest.approx(4.4841,
                                                                                                        abs=1e-3)
    assert math.isnan(stats.seed_interval([5.0], 0.05)[2])
    # two CIs of half-width 1.96 (se 1 each): the mean has se sqrt(2)/2, half-width 1.96 * 0.7071 = 1.386
    assert stats.combine_cis([(0, 3.92), (10, 13.92)], 0.05) == pytest.approx(1.386, abs=1e-3)


# ------------------------------------------------------------------ the training run as the unit

def test_run_interval_without_seed_variance_is_the_paired_t_over_problems():
    from scipy import stats as st

    xa, xb = np.array([10.0, 20, 30, 40, 50]), np.array([10.0, 18, 33, 36, 53])
    a, b = np.tile(xa, (3, 1)), np.tile(xb, (2, 1))  # [3, 5], [2, 5]: every run of an arm scores the same
    r = stats.run_interval([[a], [b]], [1.0, -1.0], 0.05)
    # differences 0, 2, -3, 4, -3: mean 0, the one-sample t interval over 5 problems with 4 df
    ref = st.ttest_1samp(xa - xb, 0.0).confidence_interval(0.95)
    assert r.value == 0.0 and r.df == pytest.approx(4.0) and r.n_seeds == (3, 2)
    assert (r.ci_low, r.ci_high) == pytest.approx((ref.low, ref.high))
    assert r.parts["seeds"] == 0.0 and r.parts["residual"] == 0.0


def test_run_interval_without_problem_variance_is_welch_over_seeds():
    from scipy import stats as st

    # arm A's runs score 1, 2, 3 on every problem, arm B's 0 and 2: no problem variance at all
    a, b = np.repeat([[1.0], [2.0], [3.0]], 4, axis=1), np.repeat([[0.0], [2.0]], 4, axis=1)  # [3, 4], [2, 4]
    r = stats.run_interval([[a], [b]], [1.0, -1.0], 0.05)
    # difference 2 - 1 = 1; V = 1/3 + 2/2 = 4/3; Welch df = (4/3)^2 / ((1/3)^2/2 + 1^2/1) = 32/19
    assert r.value == pytest.approx(1.0) and r.se ** 2 == pytest.approx(4 / 3) and r.df == pytest.approx(32 / 19)
    ref = st.ttest_ind([1.0, 2.0, 3.0], [0.0, 2.0], equal_var=False)
    assert r.p_value == pytest.approx(ref.pvalue)
    assert (r.ci_low, r.ci_high) == pytest.approx(tuple(ref.confidence_interval(0.95)))
    # summary values only ([n, 1] per arm) give the same interval
    s = stats.run_interval([[a[:, :1]], [b[:, :1]]], [1.0, -1.0], 0.05)
    assert (s.ci_low, s.ci_high, s.df) == pytest.approx((r.ci_low, r.ci_high, r.df))


def test_run_interval_subtracts_the_residual_once_by_hand():
    from scipy.special import stdtrit

    # y = [[1, 4], [3, 4]] (2 runs x 2 problems): run means 2.5, 3.5 -> seeds part var 0.5 / 2 = 0.25;
    # problem means 2, 4 -> problems part var 2 / 2 = 1; residuals -0.5, 0.5, 0.5, -0.5 -> mean square 1 / 1,
    # counted in both parts: -1 / (2 x 2) = -0.25. V = 0.25 + 1 - 0.25 = 1; df = 1 / (0.0625 + 1 + 0.0625)
    r = stats.run_interval([[np.array([[1.0, 4.0], [3.0, 4.0]])]], [1.0], 0.05)
    assert r.parts == pytest.approx({"seeds": 0.25, "problems": 1.0, "residual": -0.25})
    assert (r.value, r.se, r.df) == pytest.approx((3.0, 1.0, 1 / 1.125))
    assert r.ci_high == pytest.approx(3.0 + stdtrit(1 / 1.125, 0.975))
    # y = [[0, 2], [6, 4]]: seeds part var(1, 5) / 2 = 4, problems part 0, residual -4 / 4 = -1 -> V = 3 is
    # below the seeds part alone, which V exceeds in expectation: the seeds part is used, with its 1 df
    f = stats.run_interval([[np.array([[0.0, 2.0], [6.0, 4.0]])]], [1.0], 0.05)
    assert (f.se ** 2, f.df) == pytest.approx((4.0, 1.0))
    assert (f.ci_low, f.ci_high) == pytest.approx((3 - 12.7062 * 2, 3 + 12.7062 * 2), abs=1e-3)
    assert stats.run_interval([[np.ones((1, 5))]], [1.0], 0.05) is None  # one run: no run-to-run variance


def _simulated_arms(rng, n, p, seed_sd, problem_sd=20.0, noise_sd=2.0):
    """Two arms with no true difference: shared problem effects, per-run offsets, per-score noise -> [n, P] x 2."""
    prob = rng.normal(0, problem_sd, p)
    return [50 + rng.normal(0, seed_sd, (n, 1)) + prob + rng.normal(0, noise_sd, (n, p)) for _ in range(2)]


def test_run_interval_coverage_simulated():
    """Nominal 95%: run_interval covers ~95% both when runs dominate (3 seeds) and when they do not vary; the
    pooled paired bootstrap over problems (the report's old interval) covers far less when runs dominate."""
    from scipy.special import stdtrit

    rng, rs, reps = np.random.default_rng(0), stats.Resampler(n_boot=200, seed=0), 300
    for seed_sd in (5.0, 0.0):
        hit_runs = hit_problems = 0
        ratios = []
        for _ in range(reps):
            a, b = _simulated_arms(rng, 3, 100, seed_sd)
            r = stats.run_interval([[a], [b]], [1.0, -1.0], 0.05)
            hit_runs += r.ci_low <= 0 <= r.ci_high
            pb = stats.paired_bootstrap([a.mean(0) - b.mean(0)], 0.05, rs)
            hit_problems += pb.ci_low <= 0 <= pb.ci_high
            d = a.mean(0) - b.mean(0)  # the paired t over problems: right when runs do not vary
            ratios.append((r.ci_high - r.ci_low) / (2 * stdtrit(99, 0.975) * d.std(ddof=1) / 10))
        assert 0.92 <= hit_runs / reps <= 0.99, (seed_sd, hit_runs / reps)
        if seed_sd:
            assert hit_problems / reps < 0.5, hit_problems / reps
        else:
            assert 0.90 <= hit_problems / reps and np.median(ratios) < 1.25, np.median(ratios)


def test_equivalence_verdict_by_hand():
    eq = stats.equivalence_verdict
    assert eq(-1.5, 1.9, 2.0) == "equivalent"          # inside (-2, 2)
    assert eq(-2.5, 1.0, 2.0) == "inconclusive"        # crosses -2
    assert eq(2.1, 5.0, 2.0) == "different" and eq(-6.0, -2.01, 2.0) == "different"   # beyond the margin
    assert eq(-1.0, 3.0, 2.0) == "inconclusive" and eq(math.nan, math.nan, 2.0) == "inconclusive"
    assert eq(-2.0, 1.0, 2.0) == "inconclusive"        # touching the margin is not inside it


def _synthetic(n_seeds: dict[str, int], shift: dict[str, float], p: int = 60, seed_sd: float = 0.5):
    """Rows and a sample lookup for one model, one benchmark (`b`), variants with `n_seeds` runs each whose
    problem scores are a shared pattern + shift + a per-run offset (k = 16 responses)."""
    from harness.reporting.load import ProblemScores

    rng = np.random.default_rng(7)
    pattern = rng.integers(2, 15, p).astype(float)  # correct responses of 16 per problem
    rows, samples = [], {}
    for v, n in n_seeds.items():
        for s in range(n):
            c = np.clip(np.round(pattern + (shift[v] + rng.normal(0, seed_sd)) * 16 / 100), 0, 16)  # [P]
            ps = ProblemScores([f"p{i}" for i in range(p)], np.full(p, 16.0), c, np.full(p, 10.0))
            samples[(f"{v}-s{s}", "step-1")] = ps
            rows.append(dict(cell_id=f"{v}-s{s}", eval="step-1", model="m", model_size_b=math.nan, variant=v,
                             rho=math.nan, benchmark="b", metric="avg@k", k=16, value=float(ps.acc.mean()),
                             ci_low=math.nan, ci_high=math.nan, n_problems=p, seed=s))
    return pd.DataFrame(rows), (lambda cell_id, ev, b: samples.get((cell_id, ev)))


def test_a_difference_needs_min_seeds_per_arm_to_be_tested():
    from harness.reporting import tables as tb

    rows, lookup = _synthetic({"full": 5, "top10": 5, "top20": 5, "bottom80": 4}, {"full": 0.0, "top10": -10.0,
                                                                                  "top20": 0.0, "bottom80": -30.0})
    opts = tb.Options(min_seeds=5)
    long = tb.aggregate(rows, lookup, opts).set_index(["variant", "benchmark"])
    assert long.loc[("top10", "b"), "verdict"] == "lower" and long.loc[("top10", "b"), "p_value"] < 0.05
    assert long.loc[("top20", "b"), "eq_verdict"] == "equivalent"  # same scores up to small run offsets
    # bottom80 is 30 points lower, but with 4 runs (< min_seeds = 5) it is not tested
    b80 = long.loc[("bottom80", "b")]
    assert b80["verdict"] == "too few seeds" and b80["delta_ci_high"] < 0 and b80["n_seeds"] == 4
    _, text, _ = tb.wide_rows(long.reset_index(), "Acc", opts)
    labels = [r[1] for r in text]  # full, top10, Δ, top20, Δ, ≈, bottom80, Δ (variant_order)
    assert labels == ["full", "top10", "Δ vs full", "top20", "Δ vs full", "≈ full (±2)", "bottom80", "Δ vs full"]
    assert text[2][2].endswith("]*") and text[7][2].endswith("]†") and text[4][2][-1] == "]"
    assert text[5][2].startswith("equivalent [")
    # min_seeds = 4: bottom80 is tested too
    again = tb.aggregate(rows, lookup, tb.Options(min_seeds=4)).set_index(["variant", "benchmark"])
    assert again.loc[("bottom80", "b"), "verdict"] == "lower"
    # the margin is stated in one metric's points: no equivalence verdict for another metric
    other = tb.aggregate(rows, lookup, tb.Options(equivalence_metric="len@k")).set_index(["variant", "benchmark"])
    assert other.loc[("top20", "b"), "eq_verdict"] == "" and other.loc[("top20", "b"), "verdict"] == "inconclusive"


def test_provenance_records_what_decides_repeatability(monkeypatch):
    """CPU model and vector instruction set, thread settings (torch's and the OMP / MKL environment), settings
    that pick kernels, and torch's kernel level in every provenance block; cells that ran on different machines
    are flagged in versions.csv."""
    import torch

    from harness.core.io import provenance
    from harness.reporting import tables as tb
    from harness.reporting.load import _eval_provenance

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("MKL_NUM_THREADS", "1")
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        prov = provenance()
    finally:
        torch.set_num_threads(before)
    m = prov["machine"]
    assert m["thread_env"]["OMP_NUM_THREADS"] == "1" and m["thread_env"]["MKL_NUM_THREADS"] == "1"
    assert m["kernel_env"] == {"ONEDNN_MAX_CPU_ISA": "AVX2"}
    assert m["cpu"]["model"] and m["cpu"]["logical_cpus"] >= 1
    assert 1 <= m["cpu"]["usable_cpus"] <= m["cpu"]["logical_cpus"]
    read = _eval_provenance({"provenance": prov})["machine"]  # what the report compares between cells
    assert read["thread_env"] == "MKL_NUM_THREADS=1 OMP_NUM_THREADS=1"
    assert read["kernel_env"] == "ONEDNN_MAX_CPU_ISA=AVX2"
    assert read["torch_threads"] == "1" and read["cpu"] == m["cpu"]["model"]
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists() and "flags" in cpuinfo.read_text():
        flags = set(next(x for x in cpuinfo.read_text().splitlines() if x.startswith("flags")).split(":")[1].split())
        assert set(m["cpu"]["isa_flags"].split()) <= flags
        assert ("avx2" in flags) == ("avx2" in m["cpu"]["isa_flags"].split())
    assert m["torch"]["num_threads"] == 1
    assert m["torch"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    evals = [{"cell_id": c, "versions": {}, "task_versions": {}, "git_hash": "",
              "machine": {"cpu": "AMD EPYC", "cpu_capability": cap, "torch_threads": "1"}}
             for c, cap in (("a", "AVX512"), ("b", "AVX2"))]
    v = tb.version_checks(evals).set_index(["kind", "name", "version"])
    assert v.loc[("machine", "cpu_capability", "AVX2"), "flag"] and not v.loc[("machine", "cpu", "AMD EPYC"), "flag"]


def test_read_samples_rejects_bad_lines(tmp_path):
    p = tmp_path / "samples_x.jsonl"
    p.write_text('{"problem": "a", "correct": [true, false], "lengths": [10, 20]}\n{"problem": "b"}\n')
    with pytest.raises(ValueError, match="line 2"):
        read_samples(p)
    p.write_text('{"problem": "a", "correct": [true, false], "lengths": [10, 20]}\n'
                 '{"problem": "a", "correct": [true, true]}\n')
    ps = read_samples(p)
    assert ps.keys == ["a", "a#2"] and list(ps.c) == [1, 2] and ps.length[0] == 15.0 and math.isnan(ps.length[1])


def test_runner_cell_json_gets_display_name_size_and_rho(tmp_path):
    from harness.reporting.load import parse_cell

    runner_cell = {"grid": "paper", "cell_id": "qwen3_8b-top20-s0-1a2b3c4d", "model": "qwen3_8b", "variant": "top20",
                   "seed": 0, "trainer": "dapo_paper", "data": "dapo_math"}
    c = parse_cell(runner_cell, tmp_path, {"qwen3_8b": {"name": "Qwen3-8B-Base", "size_b": 8}})
    assert (c["model"], c["model_size_b"], c["rho"], c["seed"]) == ("Qwen3-8B-Base", 8.0, 0.2, 0)
    bare = parse_cell({"model": "qwen3_14b", "variant": "bottom80"}, tmp_path / "cell-x")
    assert (bare["model"], bare["model_size_b"], bare["rho"], bare["cell_id"]) == ("qwen3_14b", 14.0, 0.8, "cell-x")
    assert math.isnan(parse_cell({"model": "mini", "variant": "full"}, tmp_path)["model_size_b"])


def test_reads_real_evaluation_output(math_data_dir, tmp_path):
    """Cells whose eval directories were written by harness.evaluation (backend=replay): the file contract holds."""
    import json

    from harness.evaluation import evaluate
    from harness.tasks.math.utils import gold_of, problem_of

    rows = [json.loads(x) for x in open(math_data_dir / "aime24.jsonl", encoding="utf-8")][:4]
    runs = tmp_path / "runs" / "real"
    for variant, n_right in (("full", [1, 1, 0, 2]), ("top20", [2, 2, 1, 2])):  # of 2 responses per problem
        cd = runs / f"{variant}-s0"
        cd.mkdir(parents=True)
        (cd / "cell.json").write_text(json.dumps({"cell_id": cd.name, "grid": "real", "model": "qwen3_8b",
                                                  "variant": variant, "seed": 0}))
        (cd / "status.json").write_text('{"state": "complete"}')
        lines = [{"task": "aime24", "problem": problem_of(r),
                  "responses": [f"\\boxed{{{gold_of(r)}}}" if i < n else "\\boxed{-1}" for i in range(2)]}
                 for r, n in zip(rows, n_right)]
        (tmp_path / f"{variant}.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
        evaluate(tasks="aime2024", backend="replay", replay_file=tmp_path / f"{variant}.jsonl", data_dir=math_data_dir,
                 out_dir=cd / "eval" / "step-1", k=2, bootstrap_iters=100, pass_ks=(1, 2))
    res = build_report(tmp_path, "real", make_figures=False, models={"qwen3_8b": {"name": "Qwen3-8B-Base",
                                                                                   "size_b": 8}})
    assert not res.issues
    t = _long(res).set_index(["label", "variant", "benchmark"])
    # full: 1/2, 1/2, 0, 2/2 -> 50.00; top20: 1, 1, 1/2, 1 -> 87.50; paired differences 50, 50, 50, 0 -> +37.50
    assert t.loc[("Acc", "full", "aime2024"), "value"] == pytest.approx(50.0)
    assert t.loc[("Acc", "top20", "aime2024"), "value"] == pytest.approx(87.5)
    assert t.loc[("Acc", "top20", "aime2024"), "delta"] == pytest.approx(37.5)
    assert t.loc[("Acc", "top20", "aime2024"), "delta_method"] == "one run: paired bootstrap over problems only"
    c = pd.read_csv(res.out_dir / "published_comparison.csv", dtype={"published": str})
    r = c[(c["model"] == "Qwen3-8B-Base") & (c["variant"] == "top20") & (c["benchmark"] == "AIME24")
          & (c["metric"] == "Acc@16")].iloc[0]
    assert r["status"] == "compared (ours @2)" and r["published"] == "34.58"
    v = pd.read_csv(res.out_dir / "versions.csv")
    assert {"library", "task", "git"} <= set(v["kind"]) and not v["flag"].any()


def test_grid_without_paper_benchmarks_averages_its_own():
    """The CPU-scale grid (mini_id, mini_ood, no samples): Avg over its benchmarks, after them; Δ without a test."""
    from harness.reporting import tables as tb

    rows = pd.DataFrame([
        dict(cell_id=f"{v}-s0", eval="step-60", model="mini", model_size_b=math.nan, variant=v, rho=r,
             benchmark=b, metric="avg@k", k=4, value=x, ci_low=x - 2, ci_high=x + 2, n_problems=200, seed=0)
        for v, r, vals in (("full", 1.0, (88.0, 40.0)), ("top20", 0.2, (90.0, 44.0)))
        for b, x in zip(("mini_id", "mini_ood"), vals)])
    long = tb.aggregate(rows, lambda *a: None, tb.Options())
    header, text, _ = tb.wide_rows(long, "Acc", tb.Options())
    assert header == ["Model", "Variant", "mini_id", "mini_ood", "Avg"]
    # Avg full = (88 + 40) / 2 = 64; top20 = 67; Δ = +3; CI half-width 1.96*sqrt(1.0204^2*2)/2 = 1.414
    # (one run each: the intervals cover problems only, marked †; the differences are not tested, marked †)
    assert text[0] == ["mini", "full", "88.00 [86.00, 90.00]†", "40.00 [38.00, 42.00]†", "64.00 [62.59, 65.41]†"]
    assert text[2] == ["", "Δ vs full", "+2.00†", "+4.00†", "+3.00†"]
    assert (long["delta_method"].dropna().replace("", np.nan).dropna() == "no samples: difference only").all()


def test_grid_with_nothing_usable_still_builds(tmp_path):
    import json

    runs = tmp_path / "runs" / "e"

    def cell(name: str, variant: str, seed: int) -> Path:
        (runs / name).mkdir(parents=True)
        (runs / name / "cell.json").write_text(json.dumps({"cell_id": name, "grid": "e", "model": "tiny",
                                                           "variant": variant, "seed": seed}))
        return runs / name

    (cell("failed", "full", 0) / "status.json").write_text('{"state": "failed"}')
    (cell("nosummary", "top20", 0) / "eval" / "step-3").mkdir(parents=True)
    (runs / "nosummary" / "status.json").write_text('{"state": "complete"}')
    cell("nostatus", "top20", 1)
    res = build_report(tmp_path, "e")
    assert [(Path(i.path).parent.name, Path(i.path).name, i.problem) for i in res.issues] == [
        ("failed", "status.json", "state failed; cell not in the tables"),
        ("nostatus", "status.json", "state no status; cell not in the tables"),
        ("step-3", "summary.csv", "missing; evaluation left out")]
    cells = pd.read_csv(res.out_dir / "cells.csv").set_index("cell_id")
    assert cells.loc["nostatus", "state"] == "no status" and cells.loc["failed", "state"] == "failed"
    text = (res.out_dir / "REPORT.md").read_text()
    assert "Not drawn:" in text and "No evaluation recorded its provenance" in text


def test_entropy_statistics_compared_with_fig2(tmp_path):
    root = tmp_path / "results"
    shutil.copytree(FIXTURE / "runs", root / "runs")
    a = root / "runs" / "fix" / "q8-full-s1" / "analysis"
    a.mkdir()
    (a / "entropy.csv").write_text("statistic,value\nn_tokens,1000\nshare_below_0.01_pct,61.5\np80,0.41\n"
                                   "share_above_0.672_pct,12.0\n")
    res = build_report(root, "fix", make_figures=False)
    c = pd.read_csv(res.out_dir / "entropy_comparison.csv", dtype={"published": str}).set_index("statistic")
    assert c.loc["entropy_80th_percentile_nats", "published"] == "0.672"
    assert c.loc["entropy_80th_percentile_nats", "q8-full-s1"] == 0.41
    assert c.loc["share_of_tokens_with_entropy_below_0.01", "published"] == "50.64%"
    assert c.loc["share_of_tokens_with_entropy_below_0.01", "q8-full-s1"] == 61.5
    assert "### Fig. 2 statistics: published vs ours" in (res.out_dir / "REPORT.md").read_text()
