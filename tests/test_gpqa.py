"""GPQA-Diamond task (from a user-supplied file): fixed shuffle, prompt, letter extraction, scorer, YAML loading.
The fixture tests/fixtures/gpqa_diamond.jsonl holds three hand-written questions in GPQA's columns (the real
data is gated and never copied here)."""
import json
from pathlib import Path

import pytest
from datasets import Dataset

from harness.tasks.gpqa import utils as U

FIXTURE = Path(__file__).parent / "fixtures" / "gpqa_diamond.jsonl"


@pytest.fixture(scope="module")
def docs():
    rows = [json.loads(line) for line in FIXTURE.read_text().splitlines()]
    return list(U.process_docs(Dataset.from_list(rows)))


def test_shuffle_is_fixed_per_question_and_keeps_the_answer(docs):
    rows = [json.loads(line) for line in FIXTURE.read_text().splitlines()]
    for row, doc in zip(rows, docs):
        choices, gold = U.shuffled_choices(row)
        assert (choices, gold) == (doc["choices"], doc["gold"])  # same order on every call
        assert sorted(choices) == sorted([row["Correct Answer"]] + [row[f"Incorrect Answer {i}"] for i in (1, 2, 3)])
        assert choices["ABCD".index(gold)] == row["Correct Answer"]
    # the seed depends on the question, so the correct letters are not all the same position by construction
    golds = {U.shuffled_choices({**rows[0], "Record ID": f"r{i}"})[1] for i in range(40)}
    assert len(golds) > 1


def test_missing_column_is_a_clear_error():
    with pytest.raises(ValueError, match="Incorrect Answer 3"):
        U.shuffled_choices({"Question": "q", "Correct Answer": "a", "Incorrect Answer 1": "b",
                            "Incorrect Answer 2": "c"})


def test_prompt_lists_the_choices(docs):
    p = U.doc_to_text(docs[0])
    assert p.startswith("User:\n") and p.endswith("Assistant:\n") and "\\boxed{}" in p
    for letter, c in zip("ABCD", docs[0]["choices"]):
        assert f"({letter}) {c}" in p


@pytest.mark.parametrize("text,letter", [
    ("so \\boxed{B}", "B"), ("\\boxed{(c)}", "C"), ("\\boxed{\\text{D}}", "D"), ("\\boxed{A) Nitrogen}", "A"),
    ("\\boxed{B.}", "B"), ("first \\boxed{A} then \\boxed{C}", "C"),  # the last box counts
    ("\\boxed{a cat}", None), ("\\boxed{42}", None), ("no box: B", None),
])
def test_extract_letter(text, letter):
    assert U.extract_letter(text)[0] == letter


def test_scores(docs):
    doc = docs[0]
    wrong = next(x for x in "ABCD" if x != doc["gold"])
    s = U.score(doc, [f"\\boxed{{{doc['gold']}}}", f"\\boxed{{{wrong}}}", "I think it is " + doc["gold"],
                      "\\boxed{nitrogen}"])
    assert [x.correct for x in s] == [True, False, False, False]
    assert [x.status for x in s] == ["ok", "ok", "no_answer", "ok"]
    assert s[0].extracted == doc["gold"] and s[3].extracted == "nitrogen"


def test_task_yaml_loads_from_a_data_file(tmp_path):
    from harness.evaluation.tasks import build_task, task_info

    assert task_info("gpqa_diamond").scorer == "harness.tasks.gpqa.utils:score"
    (tmp_path / "gpqa_diamond.jsonl").write_text(FIXTURE.read_text())  # what data_dir=DIR reads
    task = build_task("gpqa_diamond", k=2, temperature=1.0, top_p=1.0, max_gen_toks=64, data_dir=tmp_path)
    docs = list(task.test_docs())
    assert len(docs) == 3 and all(d["gold"] in "ABCD" for d in docs)
    assert "(A) " in task.doc_to_text(docs[0])


def test_replay_end_to_end_through_evaluate(tmp_path, docs):
    from harness.evaluation import evaluate

    (tmp_path / "gpqa_diamond.jsonl").write_text(FIXTURE.read_text())
    lines = []
    for i, d in enumerate(docs):  # shares right per problem: 2/2, 1/2, 0/2
        wrong = next(x for x in "ABCD" if x != d["gold"])
        resp = [[d["gold"], d["gold"]], [d["gold"], wrong], [wrong, wrong]][i]
        lines.append({"task": "gpqa_diamond", "problem": d["problem"],
                      "responses": [f"... so the answer is \\boxed{{{x}}}" for x in resp]})
    rf = tmp_path / "replay.jsonl"
    rf.write_text("".join(json.dumps(x) + "\n" for x in lines))
    df = evaluate(tasks="gpqa_diamond", backend="replay", replay_file=rf, k=2, data_dir=tmp_path,
                  pass_ks=(1, 2), bootstrap_iters=50, out_dir=tmp_path / "out")
    assert df[(df.metric == "avg@k") & (df.k == 2)].value.item() == pytest.approx(50.0)  # (1 + 0.5 + 0) / 3
    assert df[(df.metric == "pass@k") & (df.k == 2)].value.item() == pytest.approx(200 / 3)
