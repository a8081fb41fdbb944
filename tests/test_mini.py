"""The mini task, tokenizer, warm start and lm-eval tasks (harness/mini, harness/tasks/mini)."""
import json
import random
from pathlib import Path

import pytest
import yaml

from harness.core.config import load_config, to_dict
from harness.core.io import REPO_ROOT
from harness.mini.task import (FormatMismatch, TaskFormat, check_format, format_answer, load_train, make_problems,
                               noisy_trace, read_format, reward)
from harness.mini.tokenizer import build_tokenizer
from harness.mini.warmstart import (WarmStartConfig, WarmStartError, check_gate, ensure_warm_start,
                                    train_warm_start)

TASK_DIR = REPO_ROOT / "harness" / "tasks" / "mini"
TINY = dict(hidden_size=16, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=32, steps=3,
            batch_size=4, warmup_steps=1, gate_problems=8)


def test_generator_is_deterministic_and_answers_are_the_maxima():
    fmt = TaskFormat()
    a, b, c = make_problems(fmt, 50, seed=3), make_problems(fmt, 50, seed=3), make_problems(fmt, 50, seed=4)
    assert a == b and a != c
    assert len({p["prompt"] for p in a}) == 50
    p = a[0]
    rounds = [[int(x) for x in part.split(":")[1].split()] for part in p["prompt"].rstrip(" ?").split("|")]
    assert len(rounds) == 3 and all(len(r) == 4 for r in rounds)
    assert p["answer"] == " ".join(f"{lab} {max(r)} ;" for lab, r in zip("ABC", rounds))


def test_hand_written_problem():
    # A : 2 14 9 6 | B : 1 4 12 7 -> the largest of each round is 14 and 12
    assert format_answer([[2, 14, 9, 6], [1, 4, 12, 7]], [1, 2]) == "A 14 ; B 12 ;"


def test_noisy_traces_pick_correctly_at_the_set_rate():
    rng, fmt = random.Random(0), TaskFormat(rounds=1)
    n, hits = 4000, 0
    for _ in range(n):
        t = noisy_trace(rng, fmt, p_correct=0.65)
        nums = [int(x) for x in t["prompt"].split(":")[1].rstrip(" ?").split()]
        hits += t["answer"] == f"A {max(nums)} ;"
    assert abs(hits / n - 0.65) < 0.03  # binomial sd is 0.0075


def test_reward_is_exact_match():
    gold = "A 14 ; B 12 ;"
    completions = ["A 14 ; B 12 ;", "  A 14 ;\nB 12 ; ", "A 14 ; B 12 ; ;", "A 14 ; B 12", "A 14 ; B 7 ;", ""]
    assert reward(completions, [gold] * 6) == [1.0, 1.0, 0.0, 0.0, 0.0, 0.0]
    assert reward([[{"role": "assistant", "content": gold}]], [gold]) == [1.0]


def test_tokenizer_round_trip(tmp_path):
    tok = build_tokenizer()
    for p in make_problems(TaskFormat(items=5), 20, seed=1):
        for text in (p["prompt"], p["answer"]):
            ids = tok(text)["input_ids"]
            assert tok.unk_token_id not in ids and len(ids) == len(text.split())
            assert tok.decode(ids) == text
    ids = tok("A 14 ;")["input_ids"] + [tok.eos_token_id]
    assert tok.decode(ids, skip_special_tokens=True) == "A 14 ;"
    assert tok("A banana")["input_ids"][1] == tok.unk_token_id
    tok.save_pretrained(str(tmp_path))
    from transformers import AutoTokenizer

    again = AutoTokenizer.from_pretrained(str(tmp_path))
    assert again("A : 1 2 | B : 3 ?")["input_ids"] == tok("A : 1 2 | B : 3 ?")["input_ids"]


def test_variable_rounds_sizes():
    fmt = TaskFormat(rounds=3, items=4, min_items=2)
    sizes = {len(part.split(":")[1].split()) for p in make_problems(fmt, 200, seed=0)
             for part in p["prompt"].rstrip(" ?").split("|")}
    assert sizes == {2, 3, 4}


def test_task_format_rejects_impossible_shapes():
    with pytest.raises(ValueError, match="distinct"):
        TaskFormat(rounds=5, items=5, values=20)
    with pytest.raises(ValueError, match="min_items"):
        TaskFormat(items=4, min_items=5)
    with pytest.raises(ValueError, match="unknown task format keys"):
        TaskFormat.from_config({"round": 3})


def test_configs_and_tasks_agree():
    """One format everywhere: data config, warm-start recipe, mini_id; training excludes mini_id's problems."""
    cfg = to_dict(load_config("train", ["model=mini", "data=mini", "trainer=dapo_mini", "variant=top20", "out=x"]))
    mini_id = yaml.safe_load((TASK_DIR / "mini_id.yaml").read_text())["dataset_kwargs"]
    fmt = TaskFormat.from_config(cfg["data"]["format"])
    assert fmt == TaskFormat.from_config(cfg["model"]["warmstart"]["format"])
    assert fmt == TaskFormat(**{k: v for k, v in mini_id.items() if k not in ("n", "seed")})
    assert (cfg["data"]["eval_seed"], cfg["data"]["n_eval"]) == (mini_id["seed"], mini_id["n"])
    WarmStartConfig.from_config(cfg["model"]["warmstart"])  # every key is a documented field
    assert cfg["trainer"]["prompts_per_rollout"] > cfg["trainer"]["prompts_per_update"]  # several updates/rollout
    train = load_train({**cfg["data"], "model_path": None, "n_train": 300})
    held_out = {p["prompt"] for p in make_problems(fmt, mini_id["n"], mini_id["seed"])}
    assert len(train) == 300 and not held_out & set(train["prompt"])
    assert set(train.column_names) == {"prompt", "answer"}


def test_lm_eval_tasks_load_and_score():
    from lm_eval.tasks import TaskManager

    from harness.tasks.mini.utils import score

    tasks = TaskManager(include_path=str(REPO_ROOT / "harness" / "tasks"), include_defaults=False)
    loaded = tasks.load(["mini"])["tasks"]
    docs = {name: list(t.test_docs()) for name, t in loaded.items()}
    assert [len(d) for d in docs.values()] == [200, 200]
    doc = docs["mini_ood"][0]
    assert len(doc["problem"].split("|")[0].split()) == 2 + 5  # "A :" and 5 items
    s = score(doc, [doc["gold"], doc["gold"] + " ;", ""])
    assert [x.correct for x in s] == [True, False, False]
    assert [x.status for x in s] == ["ok", "ok", "no_answer"]
    assert docs["mini_id"] == docs["mini_id"][:]  # generated the same way each time
    again = TaskManager(include_path=str(REPO_ROOT / "harness" / "tasks"), include_defaults=False)
    assert list(again.load("mini_id")["tasks"]["mini_id"].test_docs()) == docs["mini_id"]


@pytest.fixture(scope="module")
def tiny_warm_start(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ws") / "a"
    train_warm_start(WarmStartConfig(**TINY), out)
    return out


def test_short_warm_start_is_deterministic_and_stores_its_format(tiny_warm_start, tmp_path):
    train_warm_start(WarmStartConfig(**TINY), tmp_path / "b")
    assert (tmp_path / "b" / "model.safetensors").read_bytes() == (tiny_warm_start / "model.safetensors").read_bytes()
    assert read_format(tiny_warm_start) == TaskFormat()
    # the format survives a load + save_pretrained, as the trainer writes final/
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(str(tiny_warm_start)).save_pretrained(str(tmp_path / "final"))
    assert read_format(tmp_path / "final") == TaskFormat()


def test_format_mismatch_is_refused(tiny_warm_start, tmp_path):
    check_format(tiny_warm_start, TaskFormat())
    with pytest.raises(FormatMismatch, match="items"):
        check_format(tiny_warm_start, TaskFormat(items=5))
    with pytest.raises(FormatMismatch, match="trained on task format"):
        load_train({"format": {"items": 5}, "model_path": str(tiny_warm_start), "n_train": 4})
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FormatMismatch, match="not trained on the mini task"):
        check_format(tmp_path, TaskFormat())


def test_quality_gate_rejects_a_bad_warm_start(tmp_path):
    # 3 steps of a 16-wide model: it cannot follow the format, so the gate must fail and nothing is cached
    model_cfg = {"path": str(tmp_path / "base"), "warmstart": TINY}
    with pytest.raises(WarmStartError, match="quality gate.*success"):
        ensure_warm_start(model_cfg)
    assert not (tmp_path / "base").exists() and (tmp_path / "base.failed" / "warmstart.json").exists()


def test_gate_thresholds():
    cfg = WarmStartConfig()
    good = {"success": 0.27, "entropy_fixed": 0.001, "entropy_fork": 1.0}
    check_gate(good, cfg)
    for bad, what in (({"success": 0.9}, "success"), ({"entropy_fixed": 0.5}, "format"),
                      ({"entropy_fork": 0.01}, "no decision")):
        with pytest.raises(WarmStartError, match=what):
            check_gate({**good, **bad}, cfg)


def test_cached_warm_start_is_reused(tiny_warm_start, tmp_path):
    import shutil

    shutil.copytree(tiny_warm_start, tmp_path / "base")
    record = tmp_path / "base" / "warmstart.json"
    record.write_text(json.dumps({**json.loads(record.read_text()), "gate_passed": True}))  # as if it had passed
    model_cfg = {"path": str(tmp_path / "base"), "warmstart": TINY}
    before = (tmp_path / "base" / "model.safetensors").stat().st_mtime_ns
    assert ensure_warm_start(model_cfg) == tmp_path / "base"  # same recipe, gate passed: reused as it is
    assert (tmp_path / "base" / "model.safetensors").stat().st_mtime_ns == before


@pytest.mark.slow
def test_harness_train_runs_on_the_mini_task(tmp_path):
    """`harness train model=mini data=mini trainer=dapo_mini` end to end: the prepare hook builds a (tiny,
    gate-relaxed) warm start, the loader checks its format, the exact-match reward scores, final/ keeps the format."""
    from harness.cli import main

    ws = ["model.warmstart.hidden_size=16", "model.warmstart.num_layers=1", "model.warmstart.num_heads=2",
          "model.warmstart.num_kv_heads=1", "model.warmstart.intermediate_size=32", "model.warmstart.steps=3",
          "model.warmstart.batch_size=4", "model.warmstart.gate_problems=8", "model.warmstart.gate_success=[0,1]",
          "model.warmstart.gate_max_fixed_entropy=100", "model.warmstart.gate_min_fork_entropy=0"]
    rc = main(["train", "model=mini", "data=mini", "trainer=dapo_mini", "variant=top20", f"out={tmp_path / 'run'}",
               f"model.path={tmp_path / 'base'}", "data.n_train=64", "trainer.max_steps=2", *ws])
    assert rc == 0
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2] and all(0 <= r["reward_mean"] <= 1 for r in rows)
    data_format = to_dict(load_config("train", ["data=mini", "model=mini", "out=x"]))["data"]["format"]
    assert read_format(tmp_path / "run" / "final") == TaskFormat.from_config(data_format)
