"""The task folder: every task follows the plug-in contract; every gold of the six math benchmarks, replayed as
\\boxed{gold}, scores 100% and a wrong answer 0%, problem by problem (through backend=replay)."""
import json
import logging
import os
import re

import pytest

from harness.evaluation import evaluate
from harness.evaluation.tasks import expand_tasks, list_tasks, load_scorer, raw_config, task_info, task_manager
from harness.core.io import read_jsonl
from harness.core.scoring import Score
from harness.tasks.math.utils import gold_of, problem_of

MATH = ["aime2024", "aime2025", "amc23", "math500", "minerva", "olympiadbench"]
SIZES = {"aime2024": 30, "aime2025": 30, "amc23": 40, "math500": 500, "minerva": 272, "olympiadbench": 675}


def test_math_group_is_the_six():
    assert expand_tasks("math") == MATH
    assert expand_tasks(["aime2024", "math"]) == MATH  # no duplicates, order kept
    assert expand_tasks("aime2025,amc23") == ["aime2025", "amc23"]
    with pytest.raises(ValueError, match="unknown task or group 'aime2023'.*groups: .*math"):
        expand_tasks("aime2023")


def test_every_task_in_the_folder_follows_the_contract():
    from lm_eval.tasks._index import Kind

    leaves = [n for n, e in task_manager().task_index.items() if e.kind == Kind.TASK]
    assert set(MATH) <= set(leaves)
    for name in leaves:
        info = task_info(name)  # raises without metadata.scorer / metadata.version
        fn, _ = load_scorer(info.scorer)
        assert callable(fn), name
        assert raw_config(name)["output_type"] == "generate_until", name


def test_list_tasks_gives_size_source_version(real_math_dir):
    rows = {r["task"]: r for r in list_tasks(data_dir=real_math_dir)}
    for name in MATH:
        assert rows[name]["size"] == SIZES[name]
        assert rows[name]["version"] is not None and rows[name]["source"]
        assert "math" in rows[name]["groups"].split(",")


def test_gold_normalisation_per_benchmark():
    assert gold_of({"answer": 27.0}) == "27"  # AMC floats
    assert gold_of({"answer": "025"}) == "025"  # AIME keeps its text; the checker compares the values
    assert gold_of({"final_answer": ["$69$,$84$"]}) == "69,84"  # OlympiadBench, several answers
    assert gold_of({"solution": "so $x=\\boxed{1.6}$ cm"}) == "1.6"  # Minerva: last box of the solution
    with pytest.raises(ValueError, match="no gold"):
        gold_of({"solution": "no box"})


def _wrong(gold: str) -> str:
    # a numeric gold gets gold + 1; anything else a number no benchmark uses
    g = gold.strip()
    if re.fullmatch(r"-?\d+", g):
        return str(int(g) + 1)
    return "9999991"


def test_every_gold_scores_100_and_a_wrong_answer_0(real_math_dir, tmp_path):
    lines = []
    from harness.evaluation.tasks import data_file

    for name in MATH:
        with open(data_file(name, real_math_dir), encoding="utf-8") as f:
            rows = [json.loads(x) for x in f if x.strip()]
        assert len(rows) == SIZES[name]
        for row in rows:
            gold = gold_of(row)
            lines.append({"task": name, "problem": problem_of(row),
                          "responses": [f"Reasoning... so the answer is $\\boxed{{{gold}}}$.",
                                        f"The answer is \\boxed{{{_wrong(gold)}}}"]})
    replay_file = tmp_path / "golds.jsonl"
    replay_file.write_text("".join(json.dumps(x) + "\n" for x in lines))
    out = tmp_path / "out"
    df = evaluate(tasks="math", backend="replay", replay_file=replay_file, data_dir=real_math_dir, out_dir=out,
                  k=2, bootstrap_iters=100)
    for name in MATH:
        samples = read_jsonl(out / f"samples_{name}.jsonl")
        assert len(samples) == SIZES[name]
        bad = [(s["gold"], s["extracted"], s["correct"]) for s in samples if s["correct"] != [True, False]]
        assert not bad, f"{name}: {len(bad)} problems misjudged, e.g. {bad[:3]}"
        row = df[(df.benchmark == name) & (df.metric == "avg@k")].iloc[0]
        assert row.value == pytest.approx(50.0) and row.n_problems == SIZES[name] and row.n_samples == 2


def test_replay_reads_back_its_own_samples_and_checks_its_input(math_data_dir, tmp_path, caplog):
    every = [json.loads(x) for x in open(math_data_dir / "aime24.jsonl", encoding="utf-8")]
    rows = every[:5]
    f = tmp_path / "r.jsonl"
    # the lines carry the task's old name (aime24, before issue 13): replay reads them as aime2024
    f.write_text("".join(json.dumps({"task": "aime24", "problem": problem_of(r),
                                     "responses": [f"\\boxed{{{gold_of(r)}}}", "none", "\\boxed{1}"]}) + "\n"
                         for r in rows))
    first = evaluate(tasks="aime2024", backend="replay", replay_file=f, data_dir=math_data_dir,
                     out_dir=tmp_path / "a", k=3, bootstrap_iters=50)
    again = evaluate(tasks="aime2024", backend="replay", replay_file=tmp_path / "a" / "samples_aime2024.jsonl",
                     data_dir=math_data_dir, out_dir=tmp_path / "b", k=3, bootstrap_iters=50)
    assert first.value.tolist() == again.value.tolist()
    result = json.loads((tmp_path / "a" / "results_aime2024.json").read_text())
    assert result["counts"]["n_missing"] == len(every) - 5 and result["counts"]["length_unit"].startswith("words")
    assert result["provenance"]["task_versions"] == {"aime2024": 2}
    assert result["protocol"]["k"] == 3
    # fewer responses in the file than k: the k actually scored is recorded (and said), as is the word fallback
    with caplog.at_level(logging.WARNING):
        evaluate(tasks="aime2024", backend="replay", replay_file=f, data_dir=math_data_dir, out_dir=tmp_path / "c",
                 k=16, bootstrap_iters=50)
    result = json.loads((tmp_path / "c" / "results_aime2024.json").read_text())
    assert (result["protocol"]["k"], result["protocol"]["k_requested"], result["counts"]["n_samples"]) == (3, 16, 3)
    assert "k=16 was asked for" in caplog.text and "counts whitespace-separated WORDS" in caplog.text
    # a problem that is not in the benchmark is an error, named
    f.write_text(json.dumps({"task": "aime2024", "problem": "What is 1+1?", "responses": ["2"]}) + "\n")
    with pytest.raises(ValueError, match="not in the benchmark"):
        evaluate(tasks="aime2024", backend="replay", replay_file=f, data_dir=math_data_dir, k=1)


def test_missing_data_file_fails_before_any_work(tmp_path):
    with pytest.raises(FileNotFoundError, match="aime24.jsonl"):
        evaluate("no-such-model", tasks="aime2024", data_dir=tmp_path, k=1)


def test_unreachable_dataset_is_one_line_naming_the_task_and_data_dir(monkeypatch):
    from harness.evaluation import tasks as T

    cfg = T.raw_config("aime2024")
    bad = {**cfg, "dataset_kwargs": {"path": "no-such-org/no-such-dataset", "split": "test"}}
    monkeypatch.setattr(T, "raw_config", lambda name: bad)
    with pytest.raises(ValueError) as e:  # offline (conftest): datasets raises a ConnectionError inside lm-eval
        T.build_task("aime2024", k=1, temperature=0.0, top_p=1.0, max_gen_toks=8)
    msg = str(e.value)
    assert "\n" not in msg and "task aime2024" in msg and "no-such-org/no-such-dataset" in msg
    assert "data_dir=" in msg and "aime24.jsonl" in msg  # the file the task reads from a data_dir


def test_math_scorer_contract():
    fn, batch = load_scorer("harness.tasks.math.utils:score")
    doc = {"problem": "p", "gold": "\\frac{1}{2}"}
    scores = fn(doc, ["\\boxed{0.5}", "no"])
    assert scores == [Score(True, "0.5", "ok"), Score(False, None, "no_answer")]
    assert batch([doc, {"problem": "q", "gold": "3"}], [["\\boxed{0.5}"], ["\\boxed{4}"]]) == [
        [Score(True, "0.5", "ok")], [Score(False, "4", "ok")]]


def test_code_tasks_are_refused_without_allow_code_execution(tmp_path):
    from lm_eval.tasks._index import Kind

    unsafe = [n for n, e in task_manager().task_index.items()
              if e.kind == Kind.TASK and raw_config(n).get("unsafe_code")]
    if not unsafe:
        pytest.skip("no task in harness/tasks executes code")
    with pytest.raises(ValueError, match="allow_code_execution=true"):  # before any data or model is loaded
        evaluate("no-such-model", tasks=unsafe[0], backend="hf", k=1)


def test_every_eval_config_key_is_documented():
    # each leaf key of configs/eval.yaml has a comment line right above it
    from harness.core.io import CONFIG_DIR

    lines = (CONFIG_DIR / "eval.yaml").read_text().splitlines()
    undocumented = []
    for i, line in enumerate(lines):
        m = re.match(r"^(\s*)([a-z_]+):\s*(\S.*)?$", line)
        if not m or m.group(3) is None:  # a section header, or not a key
            continue
        if i == 0 or not lines[i - 1].strip().startswith("#"):
            undocumented.append(m.group(2))
    assert not undocumented, f"configs/eval.yaml keys without a comment: {undocumented}"
    from harness.core.config import load_config

    load_config("eval", [])  # and it composes


def test_no_task_or_group_shadows_an_lm_eval_builtin():
    # with --include_path, a task of ours named like a built-in replaces it (lm-eval's minerva_math is a group of
    # MATH subjects, ours was the 272 OCW problems): names must stay disjoint from the installed lm-eval's
    from lm_eval.tasks import TaskManager

    builtin = TaskManager(include_defaults=True).task_index
    assert not sorted(set(task_manager().task_index) & set(builtin))


def test_old_task_names_are_refused_with_the_new_name():
    with pytest.raises(ValueError, match="is now called 'aime2024'"):
        expand_tasks("aime24")


def test_stock_lm_eval_reports_our_metrics_from_local_files(math_data_dir, tmp_path):
    # stock lm-eval, as a user would run it: our tasks by --include_path, local files by --metadata data_dir;
    # lm-eval's dummy model answers "lol" (no \boxed{}), so every response is wrong: acc 0 of 16 responses
    import subprocess
    import sys

    from harness.tasks import TASKS_DIR

    cmd = [sys.executable, "-m", "lm_eval", "--model", "dummy", "--include_path", str(TASKS_DIR), "--tasks",
           "aime2024,minerva", "--metadata", json.dumps({"data_dir": str(math_data_dir)}), "--limit", "2",
           "--output_path", str(tmp_path)]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert run.returncode == 0, run.stderr[-2000:]
    assert "overrides existing task" not in run.stderr
    out = json.loads(next(tmp_path.rglob("results_*.json")).read_text())["results"]
    for task in ("aime2024", "minerva"):
        assert out[task]["acc,all"] == 0.0 and out[task]["pass_at_k,all"] == 0.0  # metric,filter
        assert out[task]["n_responses,all"] == 16


def test_math_process_results_scores_every_response():
    from harness.tasks.math.utils import process_results

    doc = {"problem": "p", "gold": "\\frac{1}{2}"}
    # lm-eval passes the k responses of one problem as one list (the take_first_k filter)
    got = process_results(doc, [["so \\boxed{0.5}", "no box", "\\boxed{2}", "\\boxed{\\tfrac12}"]])
    assert got == {"acc": 0.5, "pass_at_k": 1.0, "n_responses": 4}
