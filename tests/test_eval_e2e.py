"""A tiny random model evaluated end to end on the CPU through lm-eval's hf backend (k = 4), from a path, from
memory and from the command line; its samples file replays to the same numbers."""
import json

import pandas as pd
import pytest

from harness.cli import main as cli_main
from harness.evaluation import evaluate
from harness.evaluation.core import SUMMARY_COLUMNS
from harness.core.io import read_jsonl

pytestmark = pytest.mark.slow

K = 4
GEN = 12  # tokens per response: seconds on a CPU


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    from trainers.tiny import build_tiny

    return build_tiny(tmp_path_factory.mktemp("tiny") / "model", seed=0)


def test_tiny_model_end_to_end_from_a_path(tiny_dir, math_data_dir, tmp_path):
    out = tmp_path / "eval"
    df = evaluate(str(tiny_dir), tasks=["aime2024", "math500"], out_dir=out, backend="hf", k=K, limit=2,
                  data_dir=math_data_dir, max_gen_toks=GEN, hf_options={"batch_size": 8, "device": "cpu"},
                  bootstrap_iters=100)
    summary = pd.read_csv(out / "summary.csv")
    assert list(summary.columns) == SUMMARY_COLUMNS
    assert set(summary.metric) == {"avg@k", "pass@k", "maj@k", "len@k", "truncated", "no_answer"}
    assert sorted(summary[summary.metric == "pass@k"].k.unique().tolist()) == [1, 2, 4]  # 8, 16 > k are left out
    assert (summary.n_problems == 2).all() and (summary.n_samples == K).all()
    for name in ("aime2024", "math500"):
        samples = read_jsonl(out / f"samples_{name}.jsonl")
        assert len(samples) == 2
        for s in samples:
            assert len(s["responses"]) == len(s["correct"]) == len(s["lengths"]) == K  # all k kept, not 1
            assert all(0 < n <= GEN for n in s["lengths"])
            assert all(n == GEN for n, t in zip(s["lengths"], s["truncated"]) if t)  # truncated = used all GEN
            assert s["prompt"].startswith("User:\n") and s["prompt"].endswith("\\boxed{}.\n\nAssistant:\n")
        # sampling at T = 1: the k responses differ (the "repeats without do_sample" trap gives k copies)
        assert len(set(samples[0]["responses"])) > 1
        result = json.loads((out / f"results_{name}.json").read_text())
        assert result["provenance"]["lm_eval_version"] == "0.4.13"
        assert result["protocol"]["max_gen_toks"] == GEN and result["counts"]["n_samples"] == K
        assert result["counts"]["length_unit"] == "tokens (generated, EOS included)"
        gen = result["generation_kwargs"]  # what lm-eval was given: sampling set with T, no top-k, no seed
        assert gen["do_sample"] is True and gen["temperature"] == 1.0 and gen["top_k"] == 0 and "seed" not in gen
    len_row = df[(df.benchmark == "aime2024") & (df.metric == "len@k")].iloc[0]
    assert 0 < len_row.value <= GEN

    # the samples file replays to the same correctness and lengths
    again = evaluate(tasks="aime2024", backend="replay", replay_file=out / "samples_aime2024.jsonl",
                     data_dir=math_data_dir, out_dir=tmp_path / "replay", k=K, bootstrap_iters=100)
    first = df[df.benchmark == "aime2024"].set_index(["metric", "k"]).value
    assert again.set_index(["metric", "k"]).value.to_dict() == first.to_dict()


def test_tiny_model_in_memory_keeps_training_mode(tiny_dir, math_data_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_dir)
    tok = AutoTokenizer.from_pretrained(tiny_dir)
    model.train()
    df = evaluate(model, tasks="amc23", tokenizer=tok, k=K, limit=1, data_dir=math_data_dir, max_gen_toks=GEN,
                  bootstrap_iters=10)
    assert model.training  # the trainer gets its mode back
    assert df[df.metric == "avg@k"].n_samples.iloc[0] == K
    with pytest.raises(ValueError, match="needs tokenizer"):
        evaluate(model, tasks="amc23", k=1, limit=1, data_dir=math_data_dir)


def test_context_is_checked_before_generating(tiny_dir, math_data_dir):
    with pytest.raises(ValueError, match="exceeds the model's context"):
        evaluate(str(tiny_dir), tasks="aime2024", k=1, limit=1, data_dir=math_data_dir, max_gen_toks=10_000,
                 temperature=0.0, hf_options={"device": "cpu", "max_length": 1024})


def test_cli_eval_and_tasks(tiny_dir, math_data_dir, tmp_path, capsys):
    out = tmp_path / "cli"
    rc = cli_main(["eval", f"checkpoint={tiny_dir}", "tasks=[aime2025]", f"k={K}", "limit=1", f"data_dir={math_data_dir}",
                   "generation.max_gen_toks=8", "hf.device=cpu", "bootstrap.iters=10", f"out={out}"])
    assert rc == 0 and (out / "summary.csv").exists() and (out / "results_aime2025.json").exists()
    assert cli_main(["eval", "tasks=aime2025"]) == 2  # no out=: a config error, before any work
    assert cli_main(["eval", "backend=nope", f"out={out}"]) == 2
    assert cli_main(["tasks"]) == 0
    assert "olympiadbench" in capsys.readouterr().out


def test_vllm_context_is_checked_before_the_engine_starts(tiny_dir, math_data_dir):
    # vllm is not installed here: the check must fail first, naming the context
    with pytest.raises(ValueError, match="exceeds the model's context"):
        evaluate(str(tiny_dir), tasks="aime2024", backend="vllm", k=1, limit=1, data_dir=math_data_dir,
                 max_gen_toks=10_000, temperature=0.0, vllm_options={"max_model_len": 2048})


def test_lengths_are_the_generated_token_counts(tiny_dir, math_data_dir, tmp_path):
    # greedy decoding, so transformers' own generate() gives the same tokens: len@k must be their count
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_dir)
    tok = AutoTokenizer.from_pretrained(tiny_dir)
    evaluate(model, tasks="aime2024", tokenizer=tok, k=1, limit=2, data_dir=math_data_dir, max_gen_toks=GEN,
             temperature=0.0, out_dir=tmp_path, bootstrap_iters=10)
    for s in read_jsonl(tmp_path / "samples_aime2024.jsonl"):
        ids = tok(s["prompt"], return_tensors="pt").input_ids
        with torch.no_grad():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=GEN, do_sample=False,
                                 pad_token_id=tok.pad_token_id)[0, ids.shape[1]:].tolist()
        n = next((i + 1 for i, t in enumerate(out) if t == tok.eos_token_id), len(out))
        assert s["lengths"] == [n]
        assert s["truncated"] == [tok.eos_token_id not in out and n == GEN]


def test_pair_records_matches_final_texts_to_generation_records():
    # the pairing used by the hf and vLLM recorders: raw text -> stop strings applied -> final text
    from types import SimpleNamespace

    from harness.evaluation.backends import pair_records

    kw = {"until": ["STOP"], "do_sample": True, "temperature": 1.0, "max_gen_toks": 8}
    a, b = SimpleNamespace(args=("p1", kw)), SimpleNamespace(args=("p2", kw))
    requests = [a, a, b]  # request a repeated twice (k = 2), then b
    results = ["x", "x", "yy"]  # what lm-eval returned, in request order
    decoded = [("yyEOSjunk", 3, True), ("xSTOP", 2, True), ("x", 8, False)]  # generation order differs
    info: dict = {}
    pair_records(requests, results, decoded, eos_text="EOS", max_gen_toks=8, gen_info=info)
    assert info[id(a)] == [(2, True), (8, False)]  # duplicates paired in generation order
    assert info[id(b)] == [(3, True)]
    info = {}
    pair_records([b], ["zz"], decoded, eos_text="EOS", max_gen_toks=8, gen_info=info)
    assert info[id(b)] == [None]  # no record: the caller re-encodes
